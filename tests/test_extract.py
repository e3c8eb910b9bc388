"""``gestures extract``: manifest in, Hub-ready features dataset out; resumable, parallel, robust to bad videos."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import accelerate_launch, checkout_env
from video_fixtures import BAD_KINDS, make_bad

from gestures_hub import GesturesForVideoClassification
from gestures_hub.cli import main
from gestures_hub.extract import extract, read_manifest
from gestures_hub.features import completed_videos, read_settings, shard_paths
from gestures_hub.model.video_reader import count_snippets
from gestures_hub.presets import get_config
from gestures_hub.sample_videos import write_test_video
from gestures_hub.snippet_encoder import SnippetEncoder, choose_runtime

DURATIONS = {"p1_s1.mp4": (2.0, 25), "p1_s2.mp4": (3.0, 30), "p2_s1.mp4": (2.6, 24)}


def write_manifest(folder: Path, rows: list[dict]) -> Path:
    path = folder / "manifest.csv"
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["video", "patient", "seizure", "label", "view", "onset_bilateral"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def good_rows(folder: Path, durations: dict = DURATIONS) -> list[dict]:
    rows = []
    for index, (name, (duration, fps)) in enumerate(durations.items()):
        write_test_video(folder / name, duration=duration, fps=fps, pattern="bar")
        tcs = index % 2 == 0
        rows.append({"video": name, "patient": name[:2], "seizure": name[3:5], "label": "TCS" if tcs else "FOS",
                     "view": "Large", "onset_bilateral": "1.5" if tcs else ""})
    return rows


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cohort")
    return write_manifest(folder, good_rows(folder))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    GesturesForVideoClassification(get_config("tiny-videomae")).save_pretrained(folder)
    return folder


def rows_by_video(out: Path) -> dict[str, dict]:
    dataset = datasets.load_dataset(str(out), split="train").with_format("numpy")
    return {row["video"]: row for row in dataset}


def test_extract_writes_a_dataset_that_load_dataset_opens(cohort, tiny_model, tmp_path, capsys):
    out = tmp_path / "features"
    assert main(["extract", "--manifest", str(cohort), "--model", str(tiny_model), "--out", str(out), "--quiet"]) == 0
    assert "Extracted 3 video(s)" in capsys.readouterr().out
    rows = rows_by_video(out)
    assert sorted(rows) == sorted(DURATIONS)
    for name, (duration, _) in DURATIONS.items():
        row = rows[name]
        expected = count_snippets(math.ceil(duration * 15 - 1e-9), 4, 4)
        assert row["features"].shape == (expected, 32) and row["features"].dtype == np.float32
        np.testing.assert_allclose(row["start_times"], np.arange(expected) * 4 / 15, rtol=1e-6)
        assert row["num_snippets"] == expected
    first = rows["p1_s1.mp4"]
    assert (first["patient"], first["seizure"], first["view"]) == ("p1", "s1", "Large")
    assert rows["p1_s1.mp4"]["label"] == 1 and rows["p1_s2.mp4"]["label"] == 0
    assert rows["p1_s1.mp4"]["onset_bilateral"] == pytest.approx(1.5) and np.isnan(rows["p1_s2.mp4"]["onset_bilateral"])
    settings = read_settings(out)
    assert settings | {"package_version": None} == {
        "encoder": "videomae", "fps": 15.0, "frames_per_snippet": 4, "stride": 4, "feature_dim": 32, "image_size": 32,
        "model": str(tiny_model), "pretrained": True, "synthetic": False, "geometry": "crop_and_pad",
        "package_version": None,
    }
    assert not (out / "failures.csv").exists()


@pytest.mark.parametrize(("preset", "overrides"), [("tiny-videomae", {}), ("r3d_18", {"image_size": 32})])
def test_features_do_not_depend_on_batch_size_or_neighbouring_videos(cohort, tmp_path, preset, overrides):
    torch.manual_seed(0)
    model = GesturesForVideoClassification(get_config(preset, **overrides)).eval()
    model.save_pretrained(tmp_path / "model")
    extract(cohort, tmp_path / "model", tmp_path / "out", batch_size=5, precision="fp32", progress=False)
    together = rows_by_video(tmp_path / "out")
    runtime = choose_runtime(model.config.encoder, "cpu", "fp32", batch_size=1)
    alone, starts = SnippetEncoder(model, runtime).video(cohort.parent / "p1_s2.mp4")
    np.testing.assert_allclose(together["p1_s2.mp4"]["features"], alone, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(together["p1_s2.mp4"]["start_times"], starts)


def test_bad_videos_are_reported_and_the_good_ones_extracted(tiny_model, tmp_path, capsys):
    rows = good_rows(tmp_path, {"good.mp4": (2.0, 25)})
    for kind in BAD_KINDS:
        path = make_bad(kind, tmp_path) if kind != "short" else write_test_video(
            tmp_path / "short.mp4", duration=0.2, fps=25)  # shorter than one 4-frame snippet at 15 fps
        rows.append({"video": path.name, "patient": "p9", "seizure": kind, "label": "FOS"})
    manifest = write_manifest(tmp_path, rows)
    out = tmp_path / "features"
    code = main(["extract", "--manifest", str(manifest), "--model", str(tiny_model), "--out", str(out), "--quiet"])
    assert code == 1
    printed = capsys.readouterr().out
    assert "Extracted 1 video(s)" in printed and f"{len(BAD_KINDS)} failed" in printed
    with (out / "failures.csv").open() as file:
        failures = {row["video"]: row["reason"] for row in csv.DictReader(file)}
    expected = {
        "missing": "does not exist", "folder": "not a regular file", "empty": "empty (0 bytes)",
        "text": "FFmpeg cannot read it", "notes": "not a video", "png": "not a video", "audio": "no video stream",
        "truncated_mp4": "damaged or truncated", "fast": "absurd", "short": "at least 0.27 s are needed",
    }
    assert set(expected) == set(BAD_KINDS)
    for kind, message in expected.items():
        name = "notes.txt" if kind == "notes" else f"{kind}.mp4"
        assert message in failures[name], (kind, failures[name])
        assert f"FAILED  {name}" in printed
    assert list(rows_by_video(out)) == ["good.mp4"]
    # Once the bad files are removed from the manifest, a rerun adds nothing and reports no failure.
    write_manifest(tmp_path, rows[:1])
    assert main(["extract", "--manifest", str(manifest), "--model", str(tiny_model), "--out", str(out), "--quiet"]) == 0
    assert "1 already there; 0 failed" in capsys.readouterr().out
    assert not (out / "failures.csv").exists()


def test_killed_extraction_resumes_with_every_video_exactly_once(tmp_path):
    durations = {f"p{i}_s1.mp4": (2.2, 25) for i in range(6)}
    manifest = write_manifest(tmp_path, good_rows(tmp_path, durations))
    out = tmp_path / "features"
    command = [sys.executable, "-m", "gestures_hub.extract", "--manifest", str(manifest), "--model", "r2plus1d_18",
               "--out", str(out), "--videos-per-shard", "1", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               env=checkout_env())
    deadline = time.monotonic() + 240
    while not shard_paths(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    _, stderr = process.communicate()
    assert "RANDOM weights" in stderr
    done_at_kill = completed_videos(out)
    assert 1 <= len(done_at_kill) < len(durations), "the run should have been killed half-way"
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=checkout_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{len(done_at_kill)} already there" in result.stdout
    videos = datasets.load_dataset(str(out), split="train")["video"]
    assert sorted(videos) == sorted(durations)
    assert not list((out / "data").glob(".*.tmp"))


def test_two_processes_split_the_videos_between_them(cohort, tiny_model, tmp_path):
    out = tmp_path / "features"
    command = [*accelerate_launch(2), "-m", "gestures_hub.extract", "--manifest", str(cohort), "--model",
               str(tiny_model), "--out", str(out), "--videos-per-shard", "2", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env=checkout_env(ACCELERATE_USE_CPU="true"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Extracted 3 video(s)") == 1  # one summary, for both processes
    shards = {int(path.stem.split("-")[1]): pq.read_table(path, columns=["video"]).column("video").to_pylist()
              for path in shard_paths(out)}
    # Rank r of 2 takes videos r, r + 2, ... of the manifest and numbers its shards r, r + 2, ...; one process alone
    # would have written [[p1_s1, p1_s2], [p2_s1]].
    assert shards == {0: ["p1_s1.mp4", "p2_s1.mp4"], 1: ["p1_s2.mp4"]}
    assert sorted(datasets.load_dataset(str(out), split="train")["video"]) == sorted(DURATIONS)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("video,patient,label\na.mp4,p1,FOS\n", "lacks the column(s) seizure"),
        ("video,patient,seizure,label\na.mp4,p1,s1,GTCS\n", "line 2: label must be FOS, TCS or empty, got 'GTCS'"),
        ("video,patient,seizure,label\na.mp4,,s1,FOS\n", "line 2: the 'patient' column is empty"),
        ("video,patient,seizure,label,onset_bilateral\na.mp4,p1,s1,TCS,soon\n", "onset_bilateral must be a number"),
        ("video,patient,seizure,label\na.mp4,p1,s1,FOS\na.mp4,p1,s1,FOS\n", "more than once: a.mp4"),
    ],
)
def test_bad_manifests_are_rejected_before_any_work(tmp_path, content, message, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(content)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(manifest)
    assert main(["extract", "--manifest", str(manifest), "--model", "tiny-videomae", "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_runtime_choice_and_overrides():
    cpu = choose_runtime("r2plus1d_18", "cpu")
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert cpu.dtype == (torch.bfloat16 if native_bf16 else None)
    assert cpu.channels_last and cpu.batch_size == 8
    assert not choose_runtime("videomae", "cpu").channels_last
    forced = choose_runtime("r3d_18", "cpu", "bf16", batch_size=2)
    assert (forced.dtype, forced.batch_size) == (torch.bfloat16, 2)
    assert forced.describe() == "cpu, bfloat16, channels_last_3d, batch 2"
    with pytest.raises(ValueError, match="precision must be auto, fp32, bf16 or fp16"):
        choose_runtime("r3d_18", "cpu", "int8")


def test_a_model_without_encoder_is_refused(cohort, tmp_path):
    with pytest.raises(ValueError, match="has no encoder"):
        extract(cohort, "tiny-features", tmp_path / "out", progress=False)
