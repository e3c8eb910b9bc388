"""Damaged feature shards and broken model folders give clear errors, and resuming repairs what it can."""

from __future__ import annotations

import csv
import json
import shutil
import struct
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gestures_hub import GesturesForVideoClassification
from gestures_hub.extract import extract, summarise
from gestures_hub.features import completed_videos, load_features, shard_paths
from gestures_hub.presets import BrokenModelError, get_config, load_model
from gestures_hub.sample_videos import write_test_video

VIDEOS = ("p1_s1.mp4", "p1_s2.mp4", "p2_s1.mp4")


def flip_middle(path: Path, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(b ^ 0xFF for b in data[middle : middle + count])
    path.write_bytes(bytes(data))


def test_resume_sets_a_damaged_shard_aside_and_extracts_its_videos_again(tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "model"
    GesturesForVideoClassification(get_config("tiny-videomae")).save_pretrained(model)
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["video", "patient", "seizure", "label"])
        for name in VIDEOS:
            write_test_video(tmp_path / name, duration=1.0, fps=15, pattern="bar")
            writer.writerow([name, name[:2], name[3:5], "FOS"])
    out = tmp_path / "features"
    kwargs = {"device": "cpu", "progress": False, "videos_per_shard": 2}
    assert sorted(extract(manifest, model, out, **kwargs).extracted) == sorted(VIDEOS)
    bad, good = shard_paths(out)
    bad_videos, good_bytes = completed_videos(out) - {"p2_s1.mp4"}, good.read_bytes()
    flip_middle(bad)

    with pytest.raises(ValueError, match="is damaged") as caught:
        load_features(out)
    assert str(bad) in str(caught.value) and f"gestures extract` with the same manifest and --out {out}" in str(
        caught.value)

    report = extract(manifest, model, out, **kwargs)
    assert sorted(report.extracted) == sorted(bad_videos) and report.skipped == ["p2_s1.mp4"]
    assert list(report.damaged_shards) == [bad.name]
    assert f"DAMAGED shard {bad.name}:" in summarise(report, out) and "moved aside" in summarise(report, out)
    assert (out / "data" / f".{bad.name}.damaged").is_file() and good.read_bytes() == good_bytes
    assert Counter(load_features(out)["video"]) == Counter(VIDEOS)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "model"
    GesturesForVideoClassification(get_config("tiny-features")).save_pretrained(folder)
    return folder


def _truncate(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])


def _huge_header(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(struct.pack("<Q", 2**62) + weights.read_bytes()[8:])


def _garbage_header(folder: Path) -> None:
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:8] + b"\x00\xff" * 20 + data[48:])


def _wrong_shape(folder: Path) -> None:
    tensors = load_file(folder / "model.safetensors")
    tensors["classifier.bias"] = torch.zeros(3)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _pickle_only(folder: Path) -> None:
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def _half_config(folder: Path) -> None:
    config = folder / "config.json"
    text = config.read_text()
    config.write_text(text[: len(text) // 2])


@pytest.mark.parametrize(("damage", "message"), [
    (_truncate, "model.safetensors is truncated or damaged"),
    (_huge_header, "model.safetensors is truncated or damaged"),
    (_garbage_header, "model.safetensors is truncated or damaged"),
    (_wrong_shape, "the weights do not fit the config: classifier.bias is [3] in model.safetensors but [2]"),
    (_pickle_only, "only pytorch_model.bin"),
    (_half_config, "config.json is not valid JSON"),
])
def test_a_broken_model_folder_is_one_clear_error(saved, tmp_path, damage, message):
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    damage(broken)
    with pytest.raises(BrokenModelError) as caught:
        load_model(broken)
    assert isinstance(caught.value, ValueError)
    text = str(caught.value)
    assert f"Cannot load the model in {broken}: " in text and message in text and "save_pretrained" in text
    model, pretrained = load_model(saved)  # the intact folder next to it still loads
    assert pretrained and json.loads((saved / "config.json").read_text())["feature_dim"] == model.config.feature_dim
