"""Decoder worker processes and time ranges (gestures_hub.decode_workers): features identical to a sequential decode,
a killed decoder retried once or its video failed clearly, the batch going on."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from test_damage import jumping_mp4

from gestures_hub import decode_workers
from gestures_hub.decode_workers import DecodeSettings, auto_decode_workers, chunk_snippets_for
from gestures_hub.extract import extract
from gestures_hub.model.video_ranges import FrameRange, merge_reports
from gestures_hub.model.video_reader import DecodeReport, iter_frames
from gestures_hub.sample_videos import write_test_video
from gestures_hub.snippet_encoder import batch_for_memory

MODEL = "tiny-videomae"  # 4-frame 32x32 snippets at 15 fps, random weights (seeded)


def write_vfr(path: Path, duration: float = 14.0) -> Path:
    """Irregular frame times (10-40 ms apart, ~40 fps) starting at 12 ms: several keyframes, a non-zero origin."""
    times = 0.012 + np.cumsum(np.random.default_rng(0).uniform(0.01, 0.04, 1000))
    return write_test_video(path, duration=duration, fps=40, pattern="bar",
                            vfr_timestamps=list(np.round(times[times < duration - 0.05], 4)))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {"fps60.mp4": write_test_video(folder / "fps60.mp4", duration=12, fps=60, pattern="bar"),
            "vfr.mp4": write_vfr(folder / "vfr.mp4"),
            "short25.mp4": write_test_video(folder / "short25.mp4", duration=2.5, fps=25, pattern="bar"),
            "jump_one.mp4": jumping_mp4(folder, from_packet_on=False)}


def write_manifest(folder: Path, names: list[str]) -> Path:
    path = folder / "manifest.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["video", "patient", "seizure", "label"])
        writer.writerows([name, f"p{index}", "s1", "FOS"] for index, name in enumerate(names))
    return path


def rows(out: Path) -> dict[str, dict]:
    dataset = datasets.load_dataset(str(out), split="train").with_format("numpy")
    return {row["video"]: row for row in dataset}


def run(manifest: Path, out: Path, **options):
    torch.manual_seed(0)  # the same random encoder for every run
    return extract(manifest, MODEL, out, precision="fp32", progress=False, **options)


@pytest.mark.parametrize("name", ["fps60.mp4", "vfr.mp4"])
def test_ranges_give_the_frames_and_the_report_of_a_whole_decode(videos, name):
    path = videos[name]
    whole_report = DecodeReport()
    whole = list(iter_frames(path, fps=15, size=16, report=whole_report))
    settings = DecodeSettings(15, 16, "center_crop", frames_per_snippet=4, stride=2, chunk_snippets=8)
    ranges = settings.ranges(12, range_seconds=2.5)
    assert len(ranges) >= 4 and ranges[0][1].start == 0 and ranges[-1][1].stop is None
    joined, reports = [], []
    for _, span in ranges:
        report = DecodeReport()
        frames = list(iter_frames(path, fps=15, size=16, report=report, frame_range=span))
        expected = whole[span.start : span.stop]
        assert [time for time, _ in frames] == [time for time, _ in expected]  # overlapping snippets included
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(frames, expected, strict=True))
        joined += frames[: None if span.owns is None else span.owns - span.start]
        reports.append(report)
    assert len(joined) == len(whole)
    assert merge_reports(reports) == whole_report and whole_report.decoded_frames > 300


def test_features_are_identical_sequentially_and_with_2_and_3_workers_and_ranges(videos, tmp_path, monkeypatch):
    manifest = write_manifest(next(iter(videos.values())).parent, list(videos))
    sequential = run(manifest, tmp_path / "seq", decode_workers=0)
    assert sequential.failures == {} and set(sequential.damage) == {"jump_one.mp4"}
    expected = rows(tmp_path / "seq")
    restarted = []
    original = decode_workers.DecodePool.close
    monkeypatch.setattr(decode_workers.DecodePool, "close",
                        lambda pool: (restarted.extend(pool.restarted), original(pool))[1])
    for workers, seconds in ((2, None), (2, 2.0), (3, 1.0)):
        out = tmp_path / f"w{workers}_{seconds}"
        report = run(manifest, out, decode_workers=workers, range_seconds=seconds)
        got = rows(out)
        assert sorted(got) == sorted(expected) and report.failures == {}
        for name, row in expected.items():
            np.testing.assert_allclose(got[name]["features"], row["features"], atol=1e-6, rtol=0, err_msg=name)
            np.testing.assert_array_equal(got[name]["start_times"], row["start_times"], err_msg=name)
            assert list(got[name]["damage"]) == list(row["damage"])
        assert report.damage == sequential.damage and set(report.damage) == {"jump_one.mp4"}
        assert report.warnings == sequential.warnings
    # the clean videos were decoded by ranges (fps60.mp4 in 5 and 11); split in 3 ranges, the one with a timestamp
    # jump was decoded whole
    assert restarted == [str(videos["jump_one.mp4"])]
    settings = DecodeSettings(15, 32, "crop_and_pad", frames_per_snippet=4, stride=4, chunk_snippets=4)
    assert [len(settings.ranges(12, seconds)) for seconds in (2.0, 1.0)] == [5, 11]
    assert len(settings.ranges(3, 1.0)) == 2


def test_a_killed_decoder_is_retried_once_then_its_video_fails_and_the_batch_goes_on(videos, tmp_path, monkeypatch):
    names = ["short25.mp4", "fps60.mp4", "vfr.mp4"]
    manifest = write_manifest(videos["fps60.mp4"].parent, names)
    run(manifest, tmp_path / "seq", decode_workers=0)
    expected = rows(tmp_path / "seq")
    marker = tmp_path / "killed-once"
    reader = decode_workers.iter_frames

    def dying(path, **options):  # runs in the decoder process (forked after the patch)
        span = options["frame_range"]
        once = Path(path).name == "fps60.mp4" and span is not None and span.start > 0 and not marker.exists()
        if once:
            marker.touch()
        if once or Path(path).name == "vfr.mp4":
            os.kill(os.getpid(), signal.SIGKILL)
        return reader(path, **options)

    monkeypatch.setattr(decode_workers, "iter_frames", dying)
    report = run(manifest, tmp_path / "out", decode_workers=2, range_seconds=3.0, videos_per_shard=1)
    assert marker.exists()
    assert sorted(report.extracted) == ["fps60.mp4", "short25.mp4"] and list(report.failures) == ["vfr.mp4"]
    failure = report.failures["vfr.mp4"]
    assert "Cannot use video" in failure and "vfr.mp4" in failure
    assert "decoder process (pid" in failure and "died while decoding it (killed by signal SIGKILL), also when " \
        "retried" in failure
    with (tmp_path / "out" / "failures.csv").open() as file:
        assert [row["video"] for row in csv.DictReader(file)] == ["vfr.mp4"]
    got = rows(tmp_path / "out")
    videos_written = datasets.load_dataset(str(tmp_path / "out"), split="train")["video"]
    assert sorted(videos_written) == ["fps60.mp4", "short25.mp4"]  # each once
    for name in videos_written:
        np.testing.assert_allclose(got[name]["features"], expected[name]["features"], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(got[name]["start_times"], expected[name]["start_times"])


def test_ranges_tile_the_snippets_and_the_automatic_settings():
    settings = DecodeSettings(15, 32, "center_crop", frames_per_snippet=8, stride=8, chunk_snippets=8)
    ranges = settings.ranges(60, range_seconds=10)  # 112 snippets; as many ranges of >= 19 as fit: 5
    assert [first for first, _ in ranges] == [0, 22, 45, 67, 90]
    for (first, span), (following, _) in zip(ranges, ranges[1:], strict=False):
        assert (span.start, span.stop, span.owns) == (first * 8, (following - 1) * 8 + 8, following * 8)
    assert ranges[-1][1] == FrameRange(90 * 8, None, None)
    assert settings.ranges(60, None) == [(0, FrameRange(0, None, None))]
    assert chunk_snippets_for(1, 8) == 8 and chunk_snippets_for(1, 1) == 64 and chunk_snippets_for(128, 8) == 128
    assert auto_decode_workers(torch.device("cpu")) == 0
    assert batch_for_memory(80 * 2**30, 100 * 2**20) == 408 and batch_for_memory(2**30, 2**30) == 1
