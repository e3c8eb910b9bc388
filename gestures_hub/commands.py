"""The parsers of every ``gestures`` command, light on purpose: no torch, no transformers, so ``--help`` is instant.

Each parser names the function that runs it (``module:function``); :mod:`gestures_hub.cli` imports that module only
when the command runs. ``python -m gestures_hub.train`` and ``python -m gestures_hub.extract`` (what
``accelerate launch -m ...`` runs) use the same parsers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from .arguments import ReproduceArguments, TrainingArguments, add_dataclass_arguments

Builder = Callable[[argparse.ArgumentParser], None]
MANIFEST_COLUMNS = ("The manifest is a CSV with the columns video (the file's path, relative to the manifest), "
                    "patient, seizure, label (FOS, TCS or empty) and optionally view, onset_bilateral (seconds) and "
                    "synthetic (true/false).")


def presets(parser: argparse.ArgumentParser) -> None:
    """List the named configurations."""


def extract(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, type=Path, help="CSV listing the videos (required)")
    parser.add_argument("--model", required=True,
                        help="the encoder: a preset (see 'gestures presets'), a folder written by save_pretrained, or "
                             "a Hub id (required)")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to create or complete (required)")
    parser.add_argument("--weights", help="checkpoint for the encoder (IG-65M, torchvision, ...): a local "
                                          ".pth/.safetensors file, or URL#sha256=<its published SHA-256>, downloaded "
                                          "once and verified (default: the model's own weights)")
    parser.add_argument("--stride", type=int, help="frames between snippet starts (default: frames per snippet, "
                                                    "non-overlapping; 1 gives the paper's dense features)")
    parser.add_argument("--batch-size", type=int, help="snippets per encoder call (default: 32 on a GPU, 4 on a CPU)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the accelerator if there is one)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="autocast precision of the encoder (default: auto, bf16 where the hardware computes it "
                             "natively, else fp32)")
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                        help="torch.compile the encoder, kept only if its first batch is within cosine 0.9999 of "
                             "float32 (default: auto, on CUDA only: on a CPU it was measured slower, r2plus1d_18 "
                             "bf16 234 vs 108 ms a snippet after an 80 s compilation)")
    parser.add_argument("--videos-per-shard", type=int, default=8, help="rows per Parquet shard (default: 8)")
    parser.add_argument("--allow-outside-paths", action="store_true",
                        help="accept manifest paths that lead outside the manifest's folder (refused by default)")
    parser.add_argument("--decode-workers", type=int,
                        help="decoder processes feeding the encoder (default: automatic, one per core but one on a "
                             "GPU, 0 on a CPU; 0: decode in a thread of the encoder's process)")
    parser.add_argument("--range-seconds", type=float,
                        help="with decode workers, split videos into parts of about this many seconds decoded in "
                             "parallel (default: automatic, 30 s to 5 min); features are identical either way")
    parser.add_argument("--decoder", default="auto", choices=("auto", "pyav", "torchcodec"),
                        help="what decodes the videos: pyav (FFmpeg on the CPU), or torchcodec (pip install "
                             "'gestures-hub[torchcodec]' and FFmpeg's libraries) on the encoder's device, in this "
                             "process (so not with --decode-workers > 0); default: auto, torchcodec on a CUDA GPU if "
                             "its frames of the first video match PyAV's within the stated tolerance, else pyav")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def import_gestures_features(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, metavar="ROOT", help="folder holding seizures.csv and features_fpc_*")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output dataset folder (required)")
    parser.add_argument("--frames-per-snippet", type=int, default=8, metavar="T",
                        help="snippet length of the features to import: picks features_fpc_<T>_fps_15 (default: 8)")
    parser.add_argument("--videos-per-shard", type=int, default=8, metavar="N",
                        help="views per Parquet shard (default: 8)")
    parser.add_argument("--include-discarded", action="store_true",
                        help="import the views marked in Discard too, flagged discarded=True (to evaluate on, never "
                             "to train on)")


def _hub_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME",
                        help="Hub repository to create or update (required)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--token", help="Hub token (default: the saved login or HF_TOKEN)")
    parser.add_argument("--commit-message", metavar="TEXT", help="commit message (default: names the package version)")


def push(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="folder written by training")
    _hub_arguments(parser)
    parser.add_argument("--allow-no-eval", action="store_true", help="publish without cross-validation results")
    parser.add_argument("--dataset-id", metavar="ORG/NAME", help="Hub dataset the model was trained on, for the card")
    parser.add_argument("--space-id", metavar="ORG/NAME", help="demo Space to link from the card")
    parser.add_argument("--license", default="mit", help="license id for the card (default: mit)")


def push_features(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("features_dir", type=Path, metavar="DIR",
                        help="features folder written by gestures extract or gestures import-gestures-features")
    _hub_arguments(parser)
    parser.add_argument("--license", help="license id of the data, for the card (default: none stated)")
    parser.add_argument("--source", metavar="TEXT", help="where the videos or features came from, e.g. a DOI")


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` as ``(width, height)``, even and positive (H.264 needs even sizes)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 320x240, got {text!r}") from None
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"width and height must be even numbers >= 2, got {text!r}")
    return width, height


def synth(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (required)")
    parser.add_argument("--patients", type=int, default=20, metavar="N", help="patients (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed, >= 0 (default: 0)")
    parser.add_argument("--seizures-per-patient", type=int, default=2, metavar="K",
                        help="seizures per patient (default: 2)")
    parser.add_argument("--min-duration", type=float, default=10.0, metavar="S",
                        help="shortest seizure, in seconds (default: 10)")
    parser.add_argument("--max-duration", type=float, default=40.0, metavar="S",
                        help="longest seizure, in seconds (default: 40)")
    parser.add_argument("--fps", type=int, default=30, help="frame rate of the videos (default: 30)")
    parser.add_argument("--size", type=parse_size, default=(320, 240), metavar="WxH",
                        help="frame size in pixels (default: 320x240)")
    parser.add_argument("--tcs-fraction", type=float, default=0.45, metavar="F",
                        help="fraction of TCS seizures (default: 0.45)")
    parser.add_argument("--views", default="L", help="comma-separated camera views: L (Large, wide) and S (Small, "
                                                     "close-up); the views of a seizure share its motion (default: L)")
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: up to 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def train(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, TrainingArguments)


def ensemble(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="output folder of 'gestures train'")
    parser.add_argument("--encoder", metavar="MODEL_OR_PRESET",
                        help="the encoder the members read: a preset, a folder written by save_pretrained, or a Hub "
                             "id (default: the run's --encoder; without one the ensemble takes snippet features)")
    parser.add_argument("--encoder-weights", help="checkpoint for the encoder preset (default: the run's, when the "
                                                  "encoder is the run's)")
    parser.add_argument("--temperature", type=float,
                        help="temperature dividing every member's logits (default: the run's final model's)")
    parser.add_argument("-o", "--out", type=Path, help="output folder (default: RUN_DIR/final-ensemble)")


def reproduce(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, ReproduceArguments)


def predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video files of any length")
    parser.add_argument("--model", help="a preset, a folder written by save_pretrained, or a Hub id (default: the "
                                        "embedded demo model, trained on synthetic videos: not for clinical use)")
    parser.add_argument("--out", type=Path, default=Path("predictions"),
                        help="folder for each video's timeline CSV, JSON summary and plot (default: predictions)")
    parser.add_argument("--json", action="store_true", help="also print the predictions as JSON on stdout")
    parser.add_argument("--stride", type=int, help="frames between snippet starts (default: the model's processor's, "
                                                    "frames per snippet)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the accelerator if there is one)")


def quickstart(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("gestures-quickstart"),
                        help="output folder; an earlier run there is resumed (default: gestures-quickstart)")
    parser.add_argument("--force", action="store_true", help="delete an earlier run in --out and start over")
    parser.add_argument("--patients", type=int, default=16,
                        help="synthetic patients, 2 seizures each; the last is held out (default: 16)")
    parser.add_argument("--seed", type=int, default=2024, help="cohort seed (default: 2024)")
    parser.add_argument("--folds", type=int, default=4, help="cross-validation folds (default: 4)")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs per fold (default: 60)")
    parser.add_argument("--max-duration", type=float, default=30.0,
                        help="longest video, in seconds (default: 30)")


# name: (build, "module:function", one-line help, description)
COMMANDS: dict[str, tuple[Builder, str, str, str]] = {
    "presets": (presets, "presets:run", "list the named model configurations",
                "List the named GESTURES configurations accepted wherever a command takes --model."),
    "extract": (extract, "extract:run", "turn the videos of a manifest into a features dataset",
                "Extract the per-snippet features of every video listed in a manifest CSV into a Hugging Face "
                "dataset folder (Parquet shards, one row per video) that datasets.load_dataset(OUT) opens. Resumable: "
                "a rerun skips the videos already extracted; unusable videos are listed in OUT/failures.csv. Runs "
                "data-parallel under 'accelerate launch -m gestures_hub.extract'. " + MANIFEST_COLUMNS),
    "import-gestures-features": (
        import_gestures_features, "gestures_import:run",
        "convert the published GESTURES features (doi 10.5522/04/14781771) to a features dataset",
        "Convert the published GESTURES features (seizures.csv and features_fpc_<T>_fps_15/<Subject>_<Seizure>_<L|S>/"
        "*.pth) into a gestures-hub features dataset, one row per camera view. Labels as the original's training: "
        "RatioGTCS filled = TCS (without RatioGTCS, a boolean GTCS column); onset_bilateral from OnsetClonic "
        "(seconds). Views marked in Discard (exactly Yes, Large or Small) are left out unless --include-discarded. "
        "A rerun resumes. The .pth files are loaded with torch.load(weights_only=True) only."),
    "push": (push, "hub:run_push", "publish a trained model folder on the Hub with a generated model card",
             "Upload a model folder written by training (safetensors weights, config.json, the video processor, the "
             "remote code, training_args.json, cv_metrics.json) with a model card built from those files. Refuses a "
             "model without cv_metrics.json unless --allow-no-eval, and a synthetic model whose repo name does not "
             "contain 'synthetic' or 'demo'."),
    "push-features": (push_features, "hub:run_push_features",
                      "publish a features dataset folder on the Hub with a generated dataset card",
                      "Upload a features folder (Parquet shards and the settings sidecar) as a dataset repository, "
                      "with a dataset card that documents the schema, extraction settings, provenance and privacy."),
    "synth": (synth, "synthetic:run", "render a SYNTHETIC cohort of seizure videos with ground truth",
              "Render a SYNTHETIC cohort of procedurally generated seizure videos (a figure lying in bed, filmed from "
              "above) with FOS or TCS semiology, plus DIR/manifest.csv in the format 'gestures extract' reads. For "
              "demos and tests only: not patient data. The same seed gives the same frames."),
    "train": (train, "train:run", "cross-validate and train GESTURES on snippet features, or end to end on videos",
              "Cross-validate GESTURES on a features dataset (or, with --train-encoder, end to end on the videos of "
              "a manifest), export the best model of each fold (fold-<i>/best) and a model trained on all videos "
              "(final-features, taking features; final-video, taking video, end to end or with --encoder), and write "
              "metrics.json and metrics.md. For several processes: "
              "'accelerate launch -m gestures_hub.train ...'."),
    "ensemble": (ensemble, "ensemble:run", "one model from the fold models of a training run (fold ensemble)",
                 "Build one save_pretrained model from the k fold models (RUN_DIR/fold-<i>/best) of a run trained on "
                 "snippet features: their heads share one encoder pass and their probabilities are averaged; the "
                 "output also carries each member's probabilities and their spread. It loads like any model (Auto "
                 "classes, pipeline, gestures predict, the Space) and carries the run's training-feature summary "
                 "(to flag videos unlike the training data) and temperature."),
    "reproduce": (reproduce, "reproduce:run", "train the paper's ablation grid (aggregation x segments x gamma)",
                  "Train the paper's ablation grid: aggregation x number of segments x gamma (60 settings) x every "
                  "fold, for each protocol, with the paper code's loss; writes reproduce.md (one table per protocol, "
                  "per view and per seizure, with the test between settings) and <protocol>/grid.json."),
    "predict": (predict, "predict:run", "classify seizure videos (FOS vs TCS) with a timeline",
                "Classify whole seizure videos as FOS or TCS with a per-snippet timeline of the TCS probability, "
                "through the model's pipeline: a timeline CSV, a JSON summary and a plot per video. Without --model, "
                "the embedded demo model (trained on synthetic videos only) is used, and every output says so."),
    "quickstart": (quickstart, "quickstart:run", "the whole workflow on a small SYNTHETIC cohort (offline, a minute)",
                   "Render a small synthetic cohort, extract snippet features with the demo model's encoder, train a "
                   "BLSTM with patient-grouped cross-validation, export a video-in model, reload it through "
                   "transformers and predict a held-out video, next to its ground truth. Everything is synthetic. A "
                   "second run resumes the first; --force starts over."),
}


def add_command(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    """Add the parser of command ``name``; its ``func`` default is the ``module:function`` that runs it."""
    build, target, summary, description = COMMANDS[name]
    parser = subparsers.add_parser(name, help=summary, description=description)
    build(parser)
    parser.set_defaults(func=target, parser=parser)
    return parser


def standalone_parser(name: str, prog: str) -> argparse.ArgumentParser:
    """The parser of command ``name`` on its own (``python -m gestures_hub.<module>``)."""
    build, target, _, description = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=prog, description=description)
    build(parser)
    parser.set_defaults(func=target, parser=parser)
    return parser
