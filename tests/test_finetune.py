"""End-to-end training of the encoder (``gestures train --train-encoder``): frame cache, exact micro-batches, export."""

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from helpers import accelerate_launch, as_flags, checkout_env
from safetensors.torch import load_file
from transformers import AutoModelForVideoClassification
from video_fixtures import make_bad

from gestures_hub import GesturesForVideoClassification, GesturesModel
from gestures_hub import finetune as finetune_module
from gestures_hub import train as train_module
from gestures_hub.finetune import VideoBank, frame_cache_path
from gestures_hub.model.video_reader import iter_frames, iter_snippets
from gestures_hub.presets import get_config
from gestures_hub.sample_videos import write_test_video
from gestures_hub.sampling import segment_indices
from gestures_hub.snippet_encoder import auto_precision
from gestures_hub.train import TrainingArguments, resolve_mixed_precision, train

HEAD_LR, ENCODER_LR = 2e-3, 1e-3

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Eight short videos of eight patients (FOS: a sweeping bar, TCS: flat colours, "spreading" at 0.8 s), an
    unreadable file, and a tiny R(2+1)D encoder whose BatchNorm layers have non-trivial running statistics."""
    folder = tmp_path_factory.mktemp("cohort")
    rows = [["video", "patient", "seizure", "label", "onset_bilateral"]]
    for i in range(8):
        write_test_video(folder / f"v{i}.mp4", duration=2.0 + 0.2 * i, fps=25, pattern="index" if i % 2 else "bar")
        rows.append([f"v{i}.mp4", f"p{i}", f"s{i}", "TCS" if i % 2 else "FOS", 0.8 if i % 2 else ""])
    make_bad("text", folder)
    rows.append(["text.mp4", "p8", "s8", "FOS", ""])
    with open(folder / "videos.csv", "w", newline="") as file:
        csv.writer(file).writerows(rows)
    torch.manual_seed(0)
    encoder = GesturesForVideoClassification(get_config("gestures-demo", image_size=32))
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    encoder.save_pretrained(folder / "encoder")
    return folder


def video_options(cohort, **overrides) -> dict:
    """Fine-tuning options shared by the equivalence tests. AdamW's epsilon is raised from 1e-8 so that parameters
    whose gradient is float rounding noise (summed in another order by micro-batches or processes) are not stepped by
    +-learning rate at random: a 1e-7 gradient difference then moves weights by ~1e-7, not ~1e-3. The timeline loss is
    on, so that its terms are split across micro-batches and processes too. The head and the encoder learn at
    different rates, so that swapped or merged parameter groups show."""
    options = dict(train_encoder=True, videos=str(cohort / "videos.csv"), encoder=str(cohort / "encoder"),
                   aggregation="lstm", num_segments=3, gamma=2.0, hidden_size=4, folds=2, fold=0, epochs=2,
                   batch_size=4, micro_batch_size=2, eval_batch_size=3, learning_rate=HEAD_LR,
                   encoder_learning_rate=ENCODER_LR, adam_epsilon=1e-3, timeline_weight=0.5, mixed_precision="no",
                   no_final=True, seed=0)
    return {**options, **overrides}


def video_args(cohort, output_dir, **overrides) -> TrainingArguments:
    return TrainingArguments(**video_options(cohort, output_dir=str(output_dir), **overrides))


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory):
    """Fold 0 trained end to end in micro-batches of 2 videos, checkpointing 2 snippets at a time."""
    out = tmp_path_factory.mktemp("run") / "micro"
    threads = torch.get_num_threads()  # as the one_thread fixture, which is set up after module fixtures
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GesturesModel, "checkpoint_snippets", 2)
        train(video_args(cohort, out))
    torch.set_num_threads(threads)
    return out


def test_micro_batches_and_checkpointing_give_the_full_batch_update(cohort, trained, tmp_path):
    full = tmp_path / "full"
    train(video_args(cohort, full, micro_batch_size=4, no_gradient_checkpointing=True,
                     frame_cache=str(trained / "frame-cache")))
    a = load_file(trained / "fold-0" / "checkpoint" / "model.safetensors")
    b = load_file(full / "fold-0" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


def test_two_processes_match_one(cohort, trained, tmp_path):
    """Each process caches its share of the videos, then takes its share of every batch in micro-batches of one
    video, synchronising gradients once per batch."""
    flags = as_flags(video_options(cohort, micro_batch_size=1, output_dir=tmp_path / "two"))
    done = subprocess.run([*accelerate_launch(2), "-m", "gestures_hub.train", *flags], cwd=tmp_path, text=True,
                          env=checkout_env(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1"), capture_output=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads((tmp_path / "two" / "processes" / f"process-{rank}.json").read_text()) for rank in (0, 1)]
    assert [(r["process_index"], r["num_processes"]) for r in records] == [(0, 2), (1, 2)]
    assert records[0]["weights_sha256"] == records[1]["weights_sha256"]
    assert len(list((tmp_path / "two" / "frame-cache").glob("*.npy"))) == 8
    one = load_file(trained / "fold-0" / "checkpoint" / "model.safetensors")
    two = load_file(tmp_path / "two" / "fold-0" / "checkpoint" / "model.safetensors")
    for key, value in one.items():
        torch.testing.assert_close(two.get(key, two.get(f"module.{key}")), value, atol=1e-5, rtol=1e-4, msg=key)
    results = [json.loads((run / "fold-0" / "results.json").read_text()) for run in (trained, tmp_path / "two")]
    for name in ("middle", "dense"):
        np.testing.assert_allclose(results[0]["probabilities"][name], results[1]["probabilities"][name], atol=1e-5)


def test_parameter_groups_give_the_encoder_its_own_learning_rate(cohort):
    model = GesturesForVideoClassification.from_pretrained(cohort / "encoder")
    groups = train_module.parameter_groups(model, video_args(cohort, "unused"))
    optimizer = torch.optim.AdamW(groups, lr=HEAD_LR)  # as training builds it: the head's rate is the default
    rates = {id(parameter): group["lr"] for group in optimizer.param_groups for parameter in group["params"]}
    encoder = {id(parameter) for parameter in model.gestures.encoder.parameters()}
    assert len(rates) == sum(1 for _ in model.parameters()) and encoder < rates.keys()  # each parameter once
    assert {rates[key] for key in encoder} == {ENCODER_LR}
    assert {rate for key, rate in rates.items() if key not in encoder} == {HEAD_LR}
    assert train_module.parameter_groups(model, video_args(cohort, "unused", train_encoder=False, videos=None,
                                                           features="f")) == [{"params": list(model.parameters())}]


def test_the_encoder_learns_with_frozen_batch_norm_statistics(cohort, trained):
    before = load_file(cohort / "encoder" / "model.safetensors")
    after = load_file(trained / "fold-0" / "checkpoint" / "model.safetensors")
    encoder = [key for key in before if key.startswith("gestures.encoder.")]
    statistics = [key for key in encoder if "running_" in key or "num_batches_tracked" in key]
    assert statistics and all(torch.equal(before[key], after[key]) for key in statistics)
    weights = [key for key in encoder if key.endswith(".weight") and key not in statistics]
    changed = [key for key in weights if not torch.equal(before[key], after[key])]
    assert len(changed) == len(weights), set(weights) - set(changed)  # every conv and BatchNorm affine trained
    optimizer = torch.load(trained / "fold-0" / "checkpoint" / "optimizer.bin", weights_only=False)
    groups = [(group["lr"], group["eps"], len(group["params"])) for group in optimizer["param_groups"]]
    model = GesturesForVideoClassification.from_pretrained(trained / "fold-0" / "best")
    sizes = len(list(model.parameters())), len(list(model.gestures.encoder.parameters()))
    assert groups == [(HEAD_LR, 1e-3, sizes[0] - sizes[1]), (ENCODER_LR, 1e-3, sizes[1])]  # head, encoder
    config = json.loads((trained / "fold-0" / "best" / "config.json").read_text())
    assert config["encoder"] == "r2plus1d_tiny" and config["freeze_encoder"] is False
    assert (config["aggregation"], config["hidden_size"], config["num_segments"]) == ("lstm", 4, 3)


def test_exported_model_is_video_in_and_reproduces_validation(cohort, trained):
    results = json.loads((trained / "fold-0" / "results.json").read_text())
    assert results["num_val"] == 4 and "text.mp4" not in results["videos"]
    model = AutoModelForVideoClassification.from_pretrained(trained / "fold-0" / "best", trust_remote_code=True).eval()
    assert type(model).__name__ == "GesturesForVideoClassification" and model.config.encoder == "r2plus1d_tiny"
    config = model.config
    mean, std = (torch.tensor(value).view(3, 1, 1, 1) for value in (config.image_mean, config.image_std))
    for i, video in enumerate(results["videos"]):
        frames = np.stack([rgb for _, rgb in iter_frames(cohort / video, fps=config.fps, size=config.image_size)])
        starts = segment_indices(len(frames) - config.frames_per_snippet + 1, num_segments=3,
                                 frames_per_snippet=config.frames_per_snippet)
        clips = torch.from_numpy(np.stack([frames[s:s + config.frames_per_snippet] for s in starts]))
        middle = (clips.permute(0, 4, 1, 2, 3).float() / 255 - mean) / std
        dense = next(iter_snippets(cohort / video, fps=config.fps, frames_per_snippet=config.frames_per_snippet,
                                   size=config.image_size, mean=config.image_mean, std=config.image_std,
                                   batch_size=1000, prefetch_depth=0)).pixel_values
        with torch.no_grad():
            for name, pixel_values in (("middle", middle), ("dense", dense)):
                probability = model(pixel_values=pixel_values[None]).logits.softmax(-1)[0, 1]
                assert float(probability) == pytest.approx(results["probabilities"][name][i], abs=1e-5), name


def test_unreadable_video_is_skipped_and_listed(trained):
    with open(trained / "failures.csv", newline="") as file:
        failures = list(csv.DictReader(file))
    assert [row["video"] for row in failures] == ["text.mp4"] and "not a video" in failures[0]["reason"]
    assert json.loads((trained / "metrics.json").read_text())["dataset"]["num_videos"] == 8


def test_frame_cache_is_reused(cohort, trained, monkeypatch):
    encoder = GesturesForVideoClassification.from_pretrained(cohort / "encoder")
    cache = trained / "frame-cache"
    frames = np.load(frame_cache_path(cohort / "v3.mp4", encoder.config, cache))
    config = encoder.config
    expected = np.stack([rgb for _, rgb in iter_frames(cohort / "v3.mp4", fps=config.fps, size=config.image_size)])
    assert frames.dtype == np.uint8 and np.array_equal(frames, expected)

    decoded = []

    def no_decoding(path, **kwargs):
        decoded.append(path.name)
        raise ValueError("cannot decode")

    monkeypatch.setattr(finetune_module, "iter_frames", no_decoding)
    bank = VideoBank.load(cohort / "videos.csv", encoder, cache=cache, output_dir=trained / "again",
                          accelerator=Accelerator(cpu=True), dense_stride=8, dense_batch=4)
    assert decoded == ["text.mp4"]  # the one video that is not in the cache
    assert len(bank) == 8 and bank.lengths.tolist() == [len(f) - 7 for f in bank.frames]
    assert np.array_equal(bank.frames[3], expected)


@pytest.mark.parametrize(("options", "message"), [
    ({"videos": None}, "--train-encoder needs --videos"),
    ({"encoder": None}, "--train-encoder needs --encoder"),
    ({"features": "features"}, "--features and --train-encoder exclude each other"),
    ({"mixed_precision": "fp8"}, "mixed_precision must be one of no, bf16, fp16, auto"),
    ({"train_encoder": False, "features": "f"}, "--videos and --init-head only apply with --train-encoder"),
    ({"train_encoder": False, "videos": None}, "Give --features"),
    ({"micro_batch_size": 0}, "micro_batch_size must be a positive integer"),
])
def test_wrong_arguments_are_refused_clearly(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        video_args(tmp_path, tmp_path / "run", **options)


def test_init_head_must_fit(cohort, tmp_path):
    head = GesturesForVideoClassification(get_config("tiny-features", feature_dim=128, aggregation="gru"))
    head.save_pretrained(tmp_path / "head")
    with pytest.raises(ValueError, match="does not fit this head.*aggregation"):
        train(video_args(cohort, tmp_path / "run", init_head=str(tmp_path / "head"),
                         frame_cache=str(tmp_path / "cache")))


def test_mixed_precision_auto(monkeypatch):
    assert video_args(Path("c"), "o", mixed_precision=None).mixed_precision == "auto"  # the default end to end
    assert TrainingArguments(features="f", output_dir="o").mixed_precision == "no"  # the default on features
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        assert resolve_mixed_precision("auto", cuda) == ("bf16" if native else "fp16")
        assert resolve_mixed_precision("auto", cpu) == "no"  # oneDNN's bf16 Conv3d gradients are unreliable
        assert resolve_mixed_precision("fp16", cpu) == "fp16"
        assert auto_precision(cpu) == ("bf16" if native else "fp32")  # what extraction (inference) uses


def test_help_shows_the_new_flags():
    from gestures_hub.commands import standalone_parser

    text = standalone_parser("train", "gestures train").format_help()
    for flag in ("--train-encoder", "--videos", "--encoder-learning-rate", "--micro-batch-size",
                 "--no-gradient-checkpointing", "--frame-cache", "--dense-stride", "--init-head", "auto"):
        assert flag in text, flag
