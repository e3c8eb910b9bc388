"""Documented options of ``gestures train`` and ``gestures extract``, each run from the command line with its effect
asserted: --patience, --drop-short, --group-by seizure, --init-head, --encoder-weights, --mixed-precision bf16,
--train-encoder with --resume and its final-video/ export; extract --weights, --stride and --precision."""

from __future__ import annotations

import csv
import json
import math

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import noisy_dataset, write_features
from safetensors.torch import load_file, save_file

from gestures_hub import GesturesForVideoClassification
from gestures_hub.cli import main
from gestures_hub.features import FeatureSettings, FeatureShardWriter, read_settings
from gestures_hub.model.video_reader import count_snippets
from gestures_hub.presets import get_config
from gestures_hub.sample_videos import write_test_video

pytestmark = pytest.mark.usefixtures("one_thread")

HEAD_LR, ENCODER_LR, WEIGHT_DECAY = 1e-2, 1e-3, 0.01


def tiny_flags(features, output_dir, **overrides) -> list[str]:
    """``gestures train`` on features with a tiny BLSTM, as ``--flag value`` pairs (``True``: the bare switch)."""
    options = dict(features=str(features), output_dir=str(output_dir), aggregation="blstm", num_segments=4, gamma=2.0,
                   hidden_size=4, folds=3, epochs=4, batch_size=8, eval_batch_size=4, seed=0) | overrides
    flags = ["train"]
    for name, value in options.items():
        flags += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return flags


def log(run, fold=0) -> pd.DataFrame:
    return pd.read_csv(run / f"fold-{fold}" / "log.csv")


def results(run, fold=0) -> dict:
    return json.loads((run / f"fold-{fold}" / "results.json").read_text())


# gestures train on features -------------------------------------------------------------------------------------------


def test_patience_stops_the_fold_patience_epochs_after_the_best(tmp_path):
    """On easy data validation F1 reaches its maximum early and cannot improve on it (ties go to the earlier epoch),
    so with --patience 2 the fold stops exactly two epochs after its best one, long before --epochs."""
    features = noisy_dataset(tmp_path / "f")
    assert main(tiny_flags(features, tmp_path / "run", epochs=30, patience=2, fold=0, no_final=True)) == 0
    best = results(tmp_path / "run")["best_epoch"]
    epochs = log(tmp_path / "run")["epoch"].tolist()
    assert epochs == list(range(1, best + 3)) and len(epochs) < 30
    values = log(tmp_path / "run")["val_f1"].tolist()
    assert max(values[best:]) <= values[best - 1] == max(values)  # the two epochs after the best did not improve


def test_drop_short_leaves_the_short_video_out_and_lists_it(tmp_path, capsys):
    rng = np.random.default_rng(0)
    sequences = [rng.standard_normal((6 if i == 3 else 12, 4)) + 0.8 * (i % 2) for i in range(12)]
    features = write_features(tmp_path / "f", sequences, [i % 2 for i in range(12)])
    with pytest.raises(ValueError, match=r"1 video\(s\) have fewer than 8 snippets.*'v003'.*--drop-short"):
        main(tiny_flags(features, tmp_path / "failing", folds=2, epochs=1, no_final=True))
    capsys.readouterr()
    assert main(tiny_flags(features, tmp_path / "run", folds=2, epochs=1, no_final=True, drop_short=True)) == 0
    err = capsys.readouterr().err
    assert "Leaving out 1 video(s) have fewer than 8 snippets, too few for 4 segments: ['v003']" in err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset"]["num_videos"] == 11
    validated = pd.read_csv(tmp_path / "run" / "predictions.csv")["video"].tolist()
    assert sorted(validated) == [f"v{i:03d}" for i in range(12) if i != 3]


def seizure_dataset(path):
    """Six patients with two seizures each, every seizure filmed in two views (Large, Small): 24 videos. Seizure
    durations are 20 s except p2/s1 (10 s, under the seizure-wise default of 15 s). TCS seizures (odd patients) have
    an onset."""
    settings = FeatureSettings(encoder="none", fps=15.0, frames_per_snippet=1, stride=1, feature_dim=4,
                               image_size=112, synthetic=True)
    rng = np.random.default_rng(0)
    with FeatureShardWriter(path, settings) as writer:
        for p in range(6):
            for s in range(2):
                for view in ("Large", "Small"):
                    label = p % 2
                    x = rng.standard_normal((12, 4)).astype(np.float32) + 0.8 * label
                    writer.add({"video": f"p{p}_s{s}_{view}", "patient": f"p{p}", "seizure": f"s{s}", "view": view,
                                "label": label, "duration": 10.0 if (p, s) == (2, 1) else 20.0,
                                "onset_bilateral": 1.0 if label else None, "num_snippets": 12,
                                "start_times": np.arange(12, dtype=np.float32) / 15, "features": x})
    return str(path)


def test_group_by_seizure_keeps_views_together_and_lists_short_seizures(tmp_path):
    features = seizure_dataset(tmp_path / "f")
    assert main(tiny_flags(features, tmp_path / "run", group_by="seizure", folds=3, epochs=1, no_final=True)) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    protocol = metrics["protocol"]
    assert protocol["group_by"] == "seizure" and protocol["min_seizure_duration"] == 15
    assert protocol["short_seizures"] == ["p2/s1"] and "seizure-wise" in protocol["description"]
    seen = {}
    for fold in range(3):
        for video, patient, seizure in zip(*(results(tmp_path / "run", fold)[key]
                                             for key in ("videos", "patients", "seizures")), strict=True):
            seen.setdefault((patient, seizure), set()).add((fold, video))
    assert (("p2", "s1") not in seen) and len(seen) == 11  # the short seizure is in no fold
    for (patient, seizure), entries in seen.items():  # both views, in one fold
        assert {video for _, video in entries} == {f"{patient}_{seizure}_Large", f"{patient}_{seizure}_Small"}
        assert len({fold for fold, _ in entries}) == 1
    # seizure-wise, not patient-grouped: some patient's two seizures are validated in different folds
    folds_of = {}
    for (patient, _), entries in seen.items():
        folds_of.setdefault(patient, set()).update(fold for fold, _ in entries)
    assert any(len(folds) > 1 for folds in folds_of.values()), folds_of


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state whose mixed precision cannot change once set (a command-line run is
    one process per precision): forget it around a test that runs several precisions in this process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.usefixtures("fresh_accelerator_state")
def test_mixed_precision_bf16_is_recorded_and_close_to_fp32(tmp_path):
    from accelerate.state import AcceleratorState

    features = noisy_dataset(tmp_path / "f")
    runs = {}
    for precision in ("no", "bf16"):
        AcceleratorState._reset_state(reset_partial_state=True)
        runs[precision] = tmp_path / precision
        assert main(tiny_flags(features, runs[precision], fold=0, epochs=3, no_final=True,
                               mixed_precision=precision)) == 0
    assert json.loads((runs["bf16"] / "training_args.json").read_text())["mixed_precision"] == "bf16"
    fp32, bf16 = (np.array(results(runs[name])["probabilities"]["middle"]) for name in ("no", "bf16"))
    assert np.isfinite(bf16).all()
    # Autocast really ran: bf16 matrix products (8-bit mantissa) cannot give bit-identical probabilities.
    assert not np.array_equal(fp32, bf16)
    # bf16 rounds each product to ~0.4 %; over 3 epochs of 3 AdamW steps at lr 1e-2 this moved the validation TCS
    # probabilities by at most 4e-4 (measured). 0.02 leaves 50x margin for other CPUs' kernels and still catches a bf16
    # run that trains on garbage (wrong casts, lost gradients, a loss computed in bf16 and not accumulated in fp32)
    # or diverges, whose probabilities differ from fp32 by tenths.
    np.testing.assert_allclose(bf16, fp32, atol=0.02)
    fp32_loss, bf16_loss = (log(runs[name])["train_loss"].to_numpy() for name in ("no", "bf16"))
    np.testing.assert_allclose(bf16_loss, fp32_loss, rtol=0.05)


def test_encoder_weights_are_the_final_video_encoder(tmp_path):
    """Trained on features with --encoder and --encoder-weights, final-video/ is final-features/ behind the encoder
    of the checkpoint (a whole-model GESTURES state dict), not the preset's random one."""
    config = get_config("gestures-demo", image_size=32)  # r2plus1d_tiny: 128-d features, 8 frames @ 15 fps
    torch.manual_seed(1)
    checkpoint = GesturesForVideoClassification(config).state_dict()
    save_file({key: value.contiguous() for key, value in checkpoint.items()}, tmp_path / "weights.safetensors")
    torch.manual_seed(2)
    GesturesForVideoClassification(config).save_pretrained(tmp_path / "encoder")
    settings = FeatureSettings(encoder="r2plus1d_tiny", fps=15.0, frames_per_snippet=8, stride=8, feature_dim=128,
                               image_size=32, geometry="center_crop", synthetic=True)
    rng = np.random.default_rng(0)
    with FeatureShardWriter(tmp_path / "f", settings) as writer:
        for i in range(8):
            x = rng.standard_normal((6, 128)).astype(np.float32) + 0.5 * (i % 2)
            writer.add({"video": f"v{i}", "patient": f"p{i}", "seizure": "s0", "view": "Large", "label": i % 2,
                        "duration": 6 * 8 / 15, "onset_bilateral": None, "num_snippets": 6,
                        "start_times": np.arange(6, dtype=np.float32) * 8 / 15, "features": x})
    run = tmp_path / "run"
    assert main(tiny_flags(tmp_path / "f", run, folds=2, epochs=1, num_segments=2, encoder=tmp_path / "encoder",
                           encoder_weights=tmp_path / "weights.safetensors")) == 0
    video = load_file(run / "final-video" / "model.safetensors")
    head = load_file(run / "final-features" / "model.safetensors")
    encoder_keys = [key for key in checkpoint if key.startswith("gestures.encoder.")]
    assert encoder_keys and all(torch.equal(video[key], checkpoint[key]) for key in encoder_keys)
    random = load_file(tmp_path / "encoder" / "model.safetensors")
    assert not torch.equal(video[encoder_keys[0]], random[encoder_keys[0]])
    head_keys = [key for key in head if key.startswith(("gestures.aggregator.", "classifier."))]
    assert head_keys and all(torch.equal(video[key], head[key]) for key in head_keys)


# gestures train --train-encoder -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four 1.2 s videos of four patients, a tiny saved R(2+1)D encoder (random), a different whole-model checkpoint
    for --encoder-weights and a features-trained head for --init-head; the frames are decoded once, shared."""
    folder = tmp_path_factory.mktemp("cohort")
    rows = [["video", "patient", "seizure", "label"]]
    for i in range(4):
        write_test_video(folder / f"v{i}.mp4", duration=1.2, fps=15, pattern="index" if i % 2 else "bar")
        rows.append([f"v{i}.mp4", f"p{i}", f"s{i}", "TCS" if i % 2 else "FOS"])
    with open(folder / "videos.csv", "w", newline="") as file:
        csv.writer(file).writerows(rows)
    config = get_config("gestures-demo", image_size=32, aggregation="lstm", hidden_size=4)
    torch.manual_seed(0)
    GesturesForVideoClassification(config).save_pretrained(folder / "encoder")
    torch.manual_seed(1)
    weights = GesturesForVideoClassification(config).state_dict()
    save_file({key: value.contiguous() for key, value in weights.items()}, folder / "weights.safetensors")
    torch.manual_seed(2)
    GesturesForVideoClassification(get_config("tiny-features", feature_dim=128, frames_per_snippet=8, image_size=32,
                                              frame_geometry="center_crop", aggregation="lstm",
                                              hidden_size=4)).save_pretrained(folder / "head")
    return folder


def video_flags(cohort, output_dir, **overrides) -> list[str]:
    options = dict(output_dir=output_dir, train_encoder=True, videos=cohort / "videos.csv", encoder=cohort / "encoder",
                   encoder_weights=cohort / "weights.safetensors", init_head=cohort / "head", aggregation="lstm",
                   num_segments=2, gamma=2.0, hidden_size=4, folds=2, epochs=2, final_epochs=1, batch_size=4,
                   micro_batch_size=2, eval_batch_size=4, learning_rate=HEAD_LR, encoder_learning_rate=ENCODER_LR,
                   weight_decay=WEIGHT_DECAY, mixed_precision="no", frame_cache=cohort / "frames", seed=0)
    flags = ["train"]
    for name, value in (options | overrides).items():
        flags += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return flags


@pytest.fixture(scope="module")
def end_to_end(cohort, tmp_path_factory):
    """The same end-to-end run straight, and interrupted after fold 0's first epoch then resumed."""
    root = tmp_path_factory.mktemp("e2e")
    threads = torch.get_num_threads()  # as the one_thread fixture, which is set up after module fixtures
    torch.set_num_threads(1)
    assert main(video_flags(cohort, root / "straight")) == 0
    assert main(video_flags(cohort, root / "resumed", max_epochs_this_run=1)) == 0
    first_step = load_file(root / "resumed" / "fold-0" / "checkpoint" / "model.safetensors")
    assert not (root / "resumed" / "fold-0" / "results.json").exists()
    assert main(video_flags(cohort, root / "resumed", resume=True)) == 0
    torch.set_num_threads(threads)
    return root, first_step


def assert_one_adamw_step_from(after: dict, start: dict, keys: list[str], lr: float) -> None:
    """Fold 0 trains on 2 videos in one batch of --batch-size 4: epoch 1 is a single AdamW step, which moves each
    weight by lr * m / (sqrt(v) + eps) <= lr (m = g, v = g^2 on the first step) plus the decay lr * wd * |w|. A head
    or encoder that did not start from the given weights differs by ~0.1, far beyond this bound."""
    for key in keys:
        bound = lr * (1 + WEIGHT_DECAY * start[key].abs()) + 1e-7  # 1e-7: float rounding of the update
        assert ((after[key] - start[key]).abs() <= bound).all(), key


def test_init_head_and_encoder_weights_are_where_training_starts(cohort, end_to_end):
    _, first_step = end_to_end
    head = load_file(cohort / "head" / "model.safetensors")
    head_keys = [key for key in head if key.startswith(("gestures.aggregator.", "classifier."))]
    assert head_keys and set(head_keys) < set(first_step)
    assert_one_adamw_step_from(first_step, head, head_keys, HEAD_LR)
    weights = load_file(cohort / "weights.safetensors")
    encoder_keys = [key for key in weights if key.startswith("gestures.encoder.")]
    assert_one_adamw_step_from(first_step, weights, encoder_keys, ENCODER_LR)
    random = load_file(cohort / "encoder" / "model.safetensors")  # the --encoder folder's own weights
    assert any((first_step[key] - random[key]).abs().max() > 10 * ENCODER_LR for key in encoder_keys)


def test_train_encoder_resume_gives_the_uninterrupted_weights(end_to_end):
    root, _ = end_to_end
    for name in ("fold-0/checkpoint", "fold-0/best", "fold-1/best", "final-video"):
        a, b = (load_file(root / run / name / "model.safetensors") for run in ("straight", "resumed"))
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name
    straight, resumed = (json.loads((root / run / "metrics.json").read_text()) for run in ("straight", "resumed"))
    assert straight["folds"] == resumed["folds"]
    assert len(log(root / "resumed")) == 2  # the resumed fold logged both epochs, once each


def test_train_encoder_final_video_takes_pixel_values(cohort, end_to_end):
    root, _ = end_to_end
    model = GesturesForVideoClassification.from_pretrained(root / "straight" / "final-video").eval()
    config = model.config
    assert config.encoder == "r2plus1d_tiny" and not config.freeze_encoder
    torch.manual_seed(0)
    pixel_values = torch.randn(2, 3, 3, config.frames_per_snippet, config.image_size, config.image_size)
    with torch.no_grad():
        out = model(pixel_values=pixel_values)
    assert out.logits.shape == (2, 2) and torch.isfinite(out.logits).all()
    assert not torch.allclose(out.logits[0], out.logits[1])  # the logits depend on the pixels
    # the encoder of final-video/ was trained end to end (final run), starting from --encoder-weights
    start, final = load_file(cohort / "weights.safetensors"), load_file(root / "straight" / "final-video" /
                                                                        "model.safetensors")
    convolutions = [key for key in start if key.startswith("gestures.encoder.") and start[key].dim() == 5]
    assert convolutions and all(not torch.equal(final[key], start[key]) for key in convolutions)
    assert_one_adamw_step_from(final, start, convolutions, ENCODER_LR)  # one step: --final-epochs 1, one batch


# gestures extract -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extract_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extract")
    write_test_video(folder / "v.mp4", duration=2.0, fps=25, pattern="bar")
    with open(folder / "videos.csv", "w", newline="") as file:
        csv.writer(file).writerows([["video", "patient", "seizure", "label"], ["v.mp4", "p1", "s1", "TCS"]])
    torch.manual_seed(3)
    model = GesturesForVideoClassification(get_config("tiny-videomae"))
    model.save_pretrained(folder / "model")
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, folder / "w.safetensors")
    return folder


def extracted(folder, out, *flags):
    assert main(["extract", "--manifest", str(folder / "videos.csv"), "--out", str(out), "--quiet", *flags]) == 0
    row = datasets.load_dataset(str(out), split="train").with_format("numpy")[0]
    return row, read_settings(out)


def test_extract_weights_stride_and_precision(extract_inputs, tmp_path):
    folder = extract_inputs
    reference, _ = extracted(folder, tmp_path / "folder", "--model", str(folder / "model"), "--precision", "fp32")
    fp32, settings = extracted(folder, tmp_path / "fp32", "--model", "tiny-videomae", "--weights",
                               str(folder / "w.safetensors"), "--stride", "2", "--precision", "fp32")
    frames = math.ceil(2.0 * 15 - 1e-9)
    assert reference["num_snippets"] == count_snippets(frames, 4) == 7
    assert fp32["num_snippets"] == count_snippets(frames, 4, 2) == 14 and fp32["features"].shape == (14, 32)
    np.testing.assert_allclose(fp32["start_times"], np.arange(14) * 2 / 15, rtol=1e-6)
    assert (settings["stride"], settings["model"], settings["pretrained"]) == (2, "tiny-videomae + w.safetensors",
                                                                               True)
    # Snippet 2k at stride 2 starts on frame 4k, as snippet k at the default stride 4; the --weights checkpoint is the
    # saved model's, so both are the same float32 computation of the same snippet (1e-5: summation order only).
    np.testing.assert_allclose(fp32["features"][::2], reference["features"], atol=1e-5)
    random, _ = extracted(folder, tmp_path / "random", "--model", "tiny-videomae", "--precision", "fp32")
    assert np.abs(random["features"] - reference["features"]).max() > 0.1  # without --weights: a random encoder

    bf16, bf16_settings = extracted(folder, tmp_path / "bf16", "--model", "tiny-videomae", "--weights",
                                    str(folder / "w.safetensors"), "--stride", "2", "--precision", "bf16")
    assert bf16_settings | {"package_version": None} == settings | {"package_version": None}
    assert bf16["features"].dtype == np.float32 and not np.array_equal(bf16["features"], fp32["features"])
    a, b = fp32["features"], bf16["features"]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    # bf16 keeps 8 mantissa bits (~0.4 % per product); through a 2-layer 32-d transformer the features stay within a
    # cosine of 0.99999 of fp32 (measured). 0.99 catches bf16 inputs or weights that are mis-cast (e.g. unnormalised
    # pixels, uint8 reinterpreted) or features returned from another snippet, whose cosine falls well below it.
    assert cosine.min() > 0.99, cosine
