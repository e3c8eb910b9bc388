"""Regenerate the embedded demo model, ``gestures_hub/demo_model/``, from synthetic videos only.

::

    .venv/bin/python scripts/train_demo_model.py            # about 15-20 min on a busy 2-core CPU
    .venv/bin/python scripts/train_demo_model.py --summary-only   # only (re)compute config.feature_summary

Reproducible: fixed seeds and data (exact bits may differ across CPUs and thread counts). Steps:

1. render a synthetic cohort (seed 1000, never used by tests or benchmarks) at 160x120, 15 fps;
2. pretrain the ``r2plus1d_tiny`` encoder end to end on snippets decoded once at 64x64, with a snippet-level target
   from the ground truth: "bilateral phase" (a TCS snippet between ``onset_bilateral`` and the end of the ictal
   movement) vs everything else;
3. freeze it, extract features of every video with :class:`gestures_hub.snippet_encoder.SnippetEncoder`;
4. train the BLSTM and classifier on whole snippet sequences with the video label plus a timeline target on the
   per-snippet logits (TCS from ``onset_bilateral`` on), so that ``snippet_logits`` show when the seizure spread;
5. save the video-in model with ``save_pretrained``, a model card and the ``SYNTHETIC`` marker, with
   ``config.feature_summary``: the summary of the training videos' features that flags videos unlike them
   (:mod:`gestures_hub.model.familiarity`).

``--summary-only`` renders the training videos again (same seeds; only those missing from ``--work-dir``), extracts
their features with the saved model's own encoder and writes only ``feature_summary`` into its ``config.json``,
keeping the weights.

Patients are split into training and validation (patient-grouped); validation numbers go into the model card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gestures_hub.features import write_json
from gestures_hub.model import detect_spread
from gestures_hub.model.familiarity import summarize_features
from gestures_hub.model.modeling_gestures import GesturesForVideoClassification
from gestures_hub.model.video_reader import iter_frames
from gestures_hub.presets import get_config
from gestures_hub.snippet_encoder import SnippetEncoder, choose_runtime
from gestures_hub.synthetic import SeizureSpec, generate_cohort, sample_cohort, video_path
from gestures_hub.synthetic_render import render_video

DEMO_DIR = Path(__file__).resolve().parents[1] / "gestures_hub" / "demo_model"
COHORT = {"n_patients": 50, "seed": 1000, "fps": 15, "size": (160, 120), "min_duration": 10.0, "max_duration": 40.0}
VALIDATION_PATIENTS = 10
SEED = 0


def bilateral_phase(spec: SeizureSpec, times: np.ndarray) -> np.ndarray:
    """1 where a TCS seizure is in its bilateral phase (``onset_bilateral`` to ``offset``), else 0."""
    if spec.onset_bilateral is None:
        return np.zeros(len(times), dtype=np.int64)
    return ((times >= spec.onset_bilateral) & (times < spec.offset)).astype(np.int64)


def decode(path: Path, fps: float, size: int) -> np.ndarray:
    """All frames of a video resampled to ``fps`` at ``size`` x ``size``, uint8 ``(F, 3, size, size)``."""
    return np.stack([rgb.transpose(2, 0, 1) for _, rgb in iter_frames(path, fps=fps, size=size)])


def augment(pixels: torch.Tensor, rng: np.random.Generator, shift: int = 6) -> torch.Tensor:
    """Random flips (left and right onsets look alike), translations, contrast and brightness, per snippet."""
    n, size = len(pixels), pixels.shape[-1]
    padded = nn.functional.pad(pixels.flatten(1, 2), (shift,) * 4, mode="replicate").unflatten(1, pixels.shape[1:3])
    offsets = rng.integers(0, 2 * shift + 1, size=(n, 2))
    out = torch.stack([padded[i, ..., y:y + size, x:x + size] for i, (y, x) in enumerate(offsets)])
    for dim in (-1, -2):
        flip = torch.from_numpy(rng.random(n) < 0.5)
        out[flip] = out[flip].flip(dim)
    gain = torch.from_numpy(rng.uniform(0.7, 1.3, size=(n, 1, 1, 1, 1))).float()
    bias = torch.from_numpy(rng.uniform(-0.3, 0.3, size=(n, 3, 1, 1, 1))).float()
    return out * gain + bias


def pretrain_encoder(model: GesturesForVideoClassification, videos: list[np.ndarray], specs: list[SeizureSpec],
                     iterations: int, batch_size: int = 32) -> None:
    """Train the encoder (with a throw-away linear head) to tell bilateral-phase snippets from the others."""
    config = model.config
    length, fps = config.frames_per_snippet, config.fps
    starts = [(v, s) for v, frames in enumerate(videos) for s in range(len(frames) - length + 1)]
    targets = np.concatenate([bilateral_phase(spec, (np.arange(len(frames) - length + 1) + length / 2) / fps)
                              for frames, spec in zip(videos, specs, strict=True)])
    mean = torch.tensor(config.image_mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(config.image_std).view(1, 3, 1, 1, 1)
    encoder = model.gestures.encoder.train().requires_grad_(True)
    head = nn.Linear(config.feature_dim, 2)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=iterations)
    rng = np.random.default_rng(SEED)
    positives, negatives = np.flatnonzero(targets == 1), np.flatnonzero(targets == 0)
    for step in range(iterations):
        chosen = np.concatenate([rng.choice(positives, batch_size // 2), rng.choice(negatives, batch_size // 2)])
        clips = np.stack([videos[starts[i][0]][starts[i][1]:starts[i][1] + length] for i in chosen])
        pixels = augment((torch.from_numpy(clips).float().div(255).transpose(1, 2) - mean) / std, rng)
        loss = nn.functional.cross_entropy(head(encoder(pixels)), torch.from_numpy(targets[chosen]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 20 == 0 or step == iterations - 1:
            print(f"  encoder step {step + 1}/{iterations}: loss {loss.item():.3f}", flush=True)
    encoder.eval().requires_grad_(False)


def timeline_targets(spec: SeizureSpec, times: np.ndarray) -> np.ndarray:
    """Per-snippet target of the timeline: TCS once the seizure has spread (``onset_bilateral`` on)."""
    if spec.onset_bilateral is None:
        return np.zeros(len(times), dtype=np.int64)
    return (times >= spec.onset_bilateral).astype(np.int64)


def pad(sequences: list[np.ndarray], value: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length sequences into a padded tensor and its attention mask."""
    longest = max(len(s) for s in sequences)
    out = np.full((len(sequences), longest, *sequences[0].shape[1:]), value, dtype=sequences[0].dtype)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for i, sequence in enumerate(sequences):
        out[i, :len(sequence)], mask[i, :len(sequence)] = sequence, 1
    return torch.from_numpy(out), torch.from_numpy(mask)


def train_head(model: GesturesForVideoClassification, features: list[np.ndarray], times: list[np.ndarray],
               specs: list[SeizureSpec], epochs: int = 200) -> None:
    """Train the BLSTM and the classifier on whole sequences: video label + timeline target on ``snippet_logits``."""
    inputs, mask = pad(features)
    steps, _ = pad([timeline_targets(spec, t) for spec, t in zip(specs, times, strict=True)])
    labels = torch.tensor([int(spec.label == "TCS") for spec in specs])
    weights = len(labels) / (2 * torch.bincount(labels, minlength=2).float())
    parameters = [*model.gestures.aggregator.parameters(), *model.classifier.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=3e-3, weight_decay=5e-2)
    model.train()
    generator = torch.Generator().manual_seed(SEED)
    for epoch in range(epochs):
        noise = 0.5 * inputs.std() * torch.randn(inputs.shape, generator=generator)
        out = model(snippet_features=inputs + noise, attention_mask=mask)
        valid = mask.bool()
        loss = (nn.functional.cross_entropy(out.logits, labels, weight=weights)
                + 0.5 * nn.functional.cross_entropy(out.snippet_logits[valid], steps[valid], weight=weights))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if epoch % 50 == 0 or epoch == epochs - 1:
            print(f"  head epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}", flush=True)
    model.eval()


@torch.no_grad()
def evaluate(model: GesturesForVideoClassification, features: list[np.ndarray], times: list[np.ndarray],
             specs: list[SeizureSpec]) -> dict[str, float]:
    """Accuracy and median spread-time error (TCS videos) of whole-sequence predictions."""
    correct, errors = [], []
    for feature, time_, spec in zip(features, times, specs, strict=True):
        out = model(snippet_features=torch.from_numpy(feature)[None])
        correct.append(int(out.logits.argmax()) == int(spec.label == "TCS"))
        if spec.onset_bilateral is not None:
            spread = detect_spread(time_, out.snippet_logits[0].softmax(-1)[:, 1].numpy())
            errors.append(abs(spread - spec.onset_bilateral) if spread is not None else float("inf"))
    return {"accuracy": float(np.mean(correct)), "median_spread_error_s": float(np.median(errors)) if errors else 0.0,
            "videos": len(specs)}


def feature_summary(features: list[np.ndarray], specs: list[SeizureSpec]) -> dict:
    """``config.feature_summary`` of the training videos' snippet features (patients: the specs')."""
    return summarize_features(np.concatenate(features), np.array([len(f) for f in features]),
                              np.array([spec.patient for spec in specs])).to_dict()


def training_split(cohort: Path) -> tuple[list[Path], list[SeizureSpec], list[int], list[int]]:
    """The cohort's video paths and specs, and the indices of the training and held-out videos."""
    specs = sample_cohort(**COHORT)
    paths = [cohort / video_path(spec) for spec in specs]
    held_out = set(sorted({spec.patient for spec in specs})[-VALIDATION_PATIENTS:])
    train_ids = [i for i, spec in enumerate(specs) if spec.patient not in held_out]
    return paths, specs, train_ids, [i for i, spec in enumerate(specs) if spec.patient in held_out]


def write_summary_only(cohort: Path, model_dir: Path) -> None:
    """Compute ``feature_summary`` from the training videos (rendered again where missing) with the saved model's
    encoder and write it into ``model_dir/config.json``; every other entry and the weights stay as they are."""
    paths, specs, train_ids, _ = training_split(cohort)
    for i in train_ids:
        if not paths[i].is_file():
            render_video(specs[i], paths[i])
    model = GesturesForVideoClassification.from_pretrained(model_dir).eval()
    encoder = SnippetEncoder(model, choose_runtime(model.config.encoder, "cpu", "fp32", 32))
    features = [encoder.video(paths[i])[0] for i in train_ids]
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["feature_summary"] = feature_summary(features, [specs[i] for i in train_ids])
    write_json(config_path, dict(sorted(config.items())))
    print(f"feature_summary of {len(train_ids)} training videos written to {config_path}.")


def write_card(directory: Path, validation: dict[str, float], seconds: float) -> None:
    cohort = {**COHORT, "size": "x".join(map(str, COHORT["size"]))}
    (directory / "README.md").write_text(f"""---
library_name: transformers
pipeline_tag: video-classification
tags: [gestures, synthetic, demo, not-for-clinical-use]
---

# GESTURES demo model (synthetic training data, NOT for clinical use)

**DEMO MODEL — trained on synthetic videos only, for demonstration only, not for clinical use.**

A complete video-in, label-out GESTURES model (FOS vs TCS) bundled with `gestures-hub` so that
`gestures predict`, `gestures quickstart` and the demo Space run offline. It has never seen a real seizure video:
it was trained on procedurally rendered videos of a figure in bed (`gestures_hub.synthetic`) and must not be used on
patients.

- Encoder: `r2plus1d_tiny` (compact R(2+1)D, 128-d), 8 frames at 15 fps, 64x64 (preset `gestures-demo`).
- Aggregator: BLSTM(64) on the whole snippet sequence (stride 8 frames); `snippet_logits` give a timeline whose TCS
  probability rises at the bilateral spread (trained with a per-snippet target from the synthetic ground truth).
- Training data: synthetic cohort {json.dumps(cohort)}; {COHORT['n_patients'] - VALIDATION_PATIENTS} patients for
  training, {VALIDATION_PATIENTS} held out.
- Held-out synthetic patients ({validation['videos']} videos): accuracy {validation['accuracy']:.3f}, median error of
  the detected spread time {validation['median_spread_error_s']:.1f} s. These numbers say nothing about real videos.
- Regenerate: `python scripts/train_demo_model.py` ({seconds / 60:.0f} min on the 2-core CPU it was made on).

```python
from transformers import AutoModelForVideoClassification
model = AutoModelForVideoClassification.from_pretrained("path/to/demo_model", trust_remote_code=True)
```
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("runs/demo-model"), help="cohort and cache folder")
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help="where the model goes")
    parser.add_argument("--iterations", type=int, default=500, help="encoder pretraining steps")
    parser.add_argument("--summary-only", action="store_true",
                        help="only compute feature_summary into --out/config.json (weights unchanged)")
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    cohort = args.work_dir / f"cohort-seed{COHORT['seed']}-{COHORT['n_patients']}p"
    if args.summary_only:
        write_summary_only(cohort, args.out)
        return

    print("1/5 rendering the synthetic cohort", flush=True)
    manifest = cohort / "manifest.csv"  # rendering is deterministic: reuse a finished one
    if not manifest.is_file():
        generate_cohort(manifest.parent, **COHORT)
    paths, specs, train_ids, val_ids = training_split(cohort)

    model = GesturesForVideoClassification(get_config("gestures-demo", trained_on_synthetic_data=True))
    config = model.config
    print("2/5 pretraining the encoder on snippets", flush=True)
    frames = [decode(paths[i], config.fps, config.image_size) for i in train_ids]
    pretrain_encoder(model, frames, [specs[i] for i in train_ids], args.iterations)
    del frames

    print("3/5 extracting features", flush=True)
    encoder = SnippetEncoder(model, choose_runtime(config.encoder, "cpu", "fp32", 32))
    features, times = zip(*(encoder.video(path) for path in paths), strict=True)
    model.to(memory_format=torch.contiguous_format)

    print("4/5 training the BLSTM", flush=True)
    pick = lambda ids, values: [values[i] for i in ids]  # noqa: E731
    train_head(model, pick(train_ids, features), pick(train_ids, times), pick(train_ids, specs))
    validation = evaluate(model, pick(val_ids, features), pick(val_ids, times), pick(val_ids, specs))
    print(f"  held-out synthetic patients: {validation}", flush=True)
    config.feature_summary = feature_summary(pick(train_ids, features), pick(train_ids, specs))

    print(f"5/5 saving to {args.out}", flush=True)
    shutil.rmtree(args.out, ignore_errors=True)
    model.save_pretrained(args.out)
    for code in args.out.glob("*.py"):  # the package's Hub unit is the code: save_pretrained and push write it
        code.unlink()
    seconds = time.perf_counter() - start
    write_card(args.out, validation, seconds)
    print(f"Done in {seconds / 60:.1f} min.")


if __name__ == "__main__":
    main()
