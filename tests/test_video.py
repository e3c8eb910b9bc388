"""Tests of the streaming video reader (gestures_hub.model.video_reader) on small synthetic H.264 videos."""

from __future__ import annotations

import threading
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from video_fixtures import make_bad

from gestures_hub.model import video_reader as video
from gestures_hub.model.video_reader import (
    TIME_EPS,
    SnippetBatch,
    VideoError,
    VideoWarning,
    count_snippets,
    iter_frames,
    iter_snippets,
    prefetch,
    probe_video,
)
from gestures_hub.sample_videos import read_frame_index, write_test_video

FPS = 15.0
VFR_TIMES = (0.0, 0.1, 0.15, 0.5, 0.52, 1.0, 1.01, 1.7, 2.3, 2.35, 2.9)
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """3-second 64x48 videos showing their frame index: 60, 25 and 10 fps, and variable frame rate."""
    folder = tmp_path_factory.mktemp("videos")
    made = {f"cfr{fps}": write_test_video(folder / f"cfr{fps}.mp4", duration=3.0, fps=fps) for fps in (60, 25, 10)}
    made["vfr"] = write_test_video(folder / "vfr.mp4", duration=3.0, fps=30, vfr_timestamps=VFR_TIMES)
    return made


def source_times(name: str) -> np.ndarray:
    """Presentation times of the frames of ``videos[name]``."""
    return np.array(VFR_TIMES) if name == "vfr" else np.arange(3 * int(name[3:])) / int(name[3:])


def held_index(times: np.ndarray, t: float) -> int:
    """The sample-and-hold rule: the last source frame shown at ``t``."""
    return int(np.searchsorted(times, t + TIME_EPS, side="right")) - 1


def all_snippets(path: Path, **kwargs) -> SnippetBatch:
    batches = list(iter_snippets(path, mean=MEAN, std=STD, **kwargs))
    return SnippetBatch(
        *(torch.cat([getattr(b, name) for b in batches]) for name in ("pixel_values", "start_frames", "start_times"))
    )


@pytest.mark.parametrize(
    ("frames", "length", "stride", "expected"),
    [(45, 8, None, 5), (45, 8, 1, 38), (45, 8, 3, 13), (45, 8, 20, 2), (8, 8, 1, 1), (7, 8, 1, 0), (0, 8, 8, 0)],
)
def test_count_snippets(frames: int, length: int, stride: int | None, expected: int) -> None:
    assert count_snippets(frames, length, stride) == expected


def test_resample_rule_on_timestamps() -> None:
    """Sample-and-hold at k / fps, relative to the first frame, tolerant to timestamp rounding."""
    sixty = [(10 + i / 60 + 4e-5, 10 + (i + 1) / 60, i) for i in range(12)]  # offset start, rounded timestamps
    assert list(video._resample(sixty, 15.0)) == [(0.0, 0), (1 / 15, 4), (2 / 15, 8)]
    vfr = [(0.0, 0.1, "a"), (0.1, 0.3, "b"), (0.3, 0.31, "c"), (0.31, 0.45, "d")]
    assert list(video._resample(vfr, 10.0)) == [(0.0, "a"), (0.1, "b"), (0.2, "b"), (0.3, "c"), (0.4, "d")]
    assert list(video._resample([], 15.0)) == []


@pytest.mark.parametrize("name", ["cfr60", "cfr25", "cfr10", "vfr"])
def test_frames_at_output_times_show_the_held_source_frame(videos: dict[str, Path], name: str) -> None:
    frames = list(iter_frames(videos[name], fps=FPS, size=24))
    times = np.array([t for t, _ in frames])
    np.testing.assert_allclose(times, np.arange(45) / FPS, rtol=0, atol=1e-9)  # 3 s at 15 fps, any source
    assert [read_frame_index(rgb) for _, rgb in frames] == [held_index(source_times(name), t) for t in times]
    assert all(rgb.shape == (24, 24, 3) and rgb.dtype == np.uint8 for _, rgb in frames)


def test_60_and_25_fps_sources_give_frames_at_the_same_times(videos: dict[str, Path]) -> None:
    sixty, twenty_five = (list(iter_frames(videos[name], fps=FPS, size=16)) for name in ("cfr60", "cfr25"))
    assert [t for t, _ in sixty] == [t for t, _ in twenty_five]
    # frame k of both shows the source frame that started at or just before k / 15 s
    for (t, a), (_, b) in zip(sixty, twenty_five, strict=True):
        assert read_frame_index(a) / 60 <= t + TIME_EPS < (read_frame_index(a) + 1) / 60
        assert read_frame_index(b) / 25 <= t + TIME_EPS < (read_frame_index(b) + 1) / 25


@pytest.mark.parametrize("name", ["cfr60", "cfr25", "vfr"])
@pytest.mark.parametrize("stride", [None, 1, 3, 10])
def test_snippet_count_and_start_times(videos: dict[str, Path], name: str, stride: int | None) -> None:
    snippets = all_snippets(videos[name], stride=stride, batch_size=4)
    expected = np.arange(count_snippets(45, 8, stride)) * (stride or 8)
    assert snippets.start_frames.tolist() == expected.tolist()
    np.testing.assert_allclose(snippets.start_times.numpy(), expected / FPS, rtol=0, atol=1e-12)


def test_batches_are_normalised_resampled_frames(videos: dict[str, Path]) -> None:
    frames = np.stack([rgb for _, rgb in iter_frames(videos["vfr"], fps=FPS, size=32)])  # (F, H, W, 3)
    expected = (frames / 255.0 - MEAN) / STD
    batches = list(iter_snippets(videos["vfr"], size=32, mean=MEAN, std=STD, batch_size=2, stride=6))
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    for batch in batches:
        assert batch.pixel_values.dtype == torch.float32 and batch.pixel_values.shape == (len(batch), 3, 8, 32, 32)
        assert batch.start_frames.dtype == torch.int64 and batch.start_times.dtype == torch.float64
        for snippet, start in zip(batch.pixel_values, batch.start_frames.tolist(), strict=True):
            # (3, T, H, W): channels first, time second
            np.testing.assert_allclose(snippet.permute(1, 2, 3, 0).numpy(), expected[start : start + 8], atol=1e-5)


def test_batch_size_prefetch_and_stride_do_not_change_content(videos: dict[str, Path]) -> None:
    reference = all_snippets(videos["cfr25"], size=16, batch_size=8)
    for kwargs in ({"batch_size": 1}, {"batch_size": 3, "prefetch_depth": 0}, {"batch_size": 5, "prefetch_depth": 1}):
        other = all_snippets(videos["cfr25"], size=16, **kwargs)
        assert torch.equal(other.pixel_values, reference.pixel_values)
        assert torch.equal(other.start_frames, reference.start_frames)
    dense = all_snippets(videos["cfr25"], size=16, stride=1, batch_size=16)
    assert len(dense.start_frames) == 45 - 8 + 1
    assert torch.equal(dense.pixel_values[::8], reference.pixel_values)


@pytest.mark.parametrize("stride", [1, 3, 8, 12])
def test_reader_holds_at_most_one_snippet_of_frames(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, stride: int
) -> None:
    """Memory is flat: count the normalised frames alive at each new frame (no timing involved)."""
    alive, peak = [0], [0]
    normalise = video._normalise

    def tracked(*args: np.ndarray) -> np.ndarray:
        frame = normalise(*args)
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        weakref.finalize(frame, lambda: alive.__setitem__(0, alive[0] - 1))
        return frame

    monkeypatch.setattr(video, "_normalise", tracked)
    batches = list(iter_snippets(videos["cfr60"], size=16, stride=stride, batch_size=2, prefetch_depth=0))
    assert sum(map(len, batches)) == count_snippets(45, 8, stride)
    assert peak[0] <= 8 + 1 <= 8 + stride  # the window and the frame being added


def test_rotation_metadata_is_applied_and_crop_is_centred(tmp_path: Path) -> None:
    upright = write_test_video(tmp_path / "upright.mp4", duration=1.0, fps=15, pattern="bar")
    rotated = write_test_video(tmp_path / "rotated.mp4", duration=1.0, fps=15, pattern="bar", rotation=90)
    for (t, a), (_, b) in zip(
        iter_frames(upright, fps=FPS, size=112), iter_frames(rotated, fps=FPS, size=112), strict=True
    ):
        # 90 degrees counter-clockwise; swscale's SIMD paths (chosen by buffer alignment) may round some pixels
        # differently from one decode to the next (seen: up to 8 levels, 0.35 on average)
        difference = np.abs(b.astype(int) - np.rot90(a).astype(int))
        assert difference.max() <= 16 and difference.mean() < 1, (difference.max(), difference.mean())
        # the bar's centre x = round(t * 64) on 64x48 -> (x + 0.5) * 112 / 48 - 0.5 on 149x112, cropped 18 from the left
        column = (round(t * 64) + 0.5) * 112 / 48 - 0.5 - 18
        bar = np.flatnonzero(a.mean(axis=(0, 2)) > 200)  # columns of the bar (3 source columns wide)
        if 8 < column < 104:
            assert abs(bar.mean() - column) <= 1


def test_prefetch_preserves_order() -> None:
    assert list(prefetch(range(100), depth=2)) == list(range(100))
    assert list(prefetch(iter([]), depth=1)) == []


def test_prefetch_propagates_exceptions() -> None:
    def failing():
        yield from range(3)
        raise RuntimeError("boom")

    received = []
    with pytest.raises(RuntimeError, match="boom"):
        for item in prefetch(failing()):
            received.append(item)
    assert received == [0, 1, 2]
    assert not any(thread.name == "prefetch" for thread in threading.enumerate())


def test_prefetch_stops_and_closes_the_producer_when_the_consumer_stops() -> None:
    produced, closed, gate = [], threading.Event(), threading.Event()

    def endless():
        try:
            for i in range(10**9):
                produced.append(i)
                yield i
        finally:
            closed.set()

    items = prefetch(endless(), depth=2)
    for item in items:
        if item == 5:
            gate.wait(0.2)  # let the producer run ahead while the consumer is busy
            assert len(produced) <= 5 + 1 + 2 + 1  # consumed, being put, queued, being produced
            break
    items.close()
    assert closed.is_set()
    assert not any(thread.name == "prefetch" for thread in threading.enumerate())


def test_probe_video(videos: dict[str, Path]) -> None:
    info = probe_video(videos["cfr25"], min_duration=2.0)
    assert (info.path, info.width, info.height, info.codec, info.num_frames) == (
        str(videos["cfr25"]),
        64,
        48,
        "h264",
        75,
    )
    assert info.duration == pytest.approx(3.0) and info.fps == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist"),
        ("folder", "not a regular file"),
        ("empty", "empty (0 bytes)"),
        ("text", "FFmpeg cannot read it ([Errno 1094995529] Invalid data found when processing input"),
        ("notes", "not a video: FFmpeg reads it as format 'tty' (ansi)"),
        ("png", "not a video: FFmpeg reads it as format 'png_pipe'"),
        ("audio", "no video stream, only audio (aac)"),
        ("truncated_mp4", "it is not a video, or it is damaged or truncated (an MP4 cut short loses its index)"),
        ("fast", "frame rate 2000 fps is unknown or absurd"),
        ("short", "lasts 0.40 s but at least 0.53 s are needed"),
    ],
)
def test_bad_inputs_raise_a_clear_video_error(tmp_path: Path, kind: str, message: str) -> None:
    path = make_bad(kind, tmp_path)
    for read in (lambda: probe_video(path, min_duration=8 / 15), lambda: iter_snippets(path)):
        with pytest.raises(VideoError) as error:
            read()
        assert error.value.path == str(path)
        assert str(error.value).startswith(f"Cannot use video '{path}': ") and message in str(error.value)
        assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("fps", [0.0, float("nan"), 1e5])
def test_zero_unknown_or_absurd_frame_rates_are_rejected(fps: float) -> None:
    with pytest.raises(VideoError, match="unknown or absurd"):
        video._check_fps("x.mp4", fps)


def test_truncated_stream_decodes_what_is_there_with_a_warning(tmp_path: Path) -> None:
    """An MKV cut short keeps its header: the frames that are there are decoded, with a warning."""
    data = write_test_video(tmp_path / "full.mkv", duration=3.0, fps=30).read_bytes()
    half, stub = tmp_path / "half.mkv", tmp_path / "stub.mkv"
    half.write_bytes(data[: len(data) // 2])
    stub.write_bytes(data[:600])
    with pytest.warns(VideoWarning, match="could be decoded; it is probably truncated") as record:
        frames = list(iter_frames(half, fps=FPS, size=16))
    assert str(half) in str(record[0].message)
    assert 8 <= len(frames) < 45
    assert [read_frame_index(rgb) for _, rgb in frames] == [2 * k for k in range(len(frames))]
    with pytest.raises(VideoError, match="no frame could be decoded"):
        list(iter_frames(stub, fps=FPS, size=16))


def test_corrupt_packets_are_skipped_with_a_warning(tmp_path: Path) -> None:
    path = write_test_video(tmp_path / "clip.mp4", duration=3.0, fps=30, size=(160, 120), pattern="bar")
    data = bytearray(path.read_bytes())
    middle = slice(len(data) // 3, len(data) // 3 + len(data) // 4)
    data[middle] = np.random.default_rng(0).integers(0, 256, len(data) // 4, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        frames = list(iter_frames(path, fps=FPS, size=16))
    assert len(frames) > 0
    assert any(
        issubclass(w.category, VideoWarning) and "corrupt packet(s) were skipped" in str(w.message) for w in record
    )


def test_errors_while_streaming_reach_the_consumer_through_prefetch(tmp_path: Path) -> None:
    data = write_test_video(tmp_path / "full.mkv", duration=3.0, fps=30).read_bytes()
    stub = tmp_path / "stub.mkv"
    stub.write_bytes(data[:1500])  # header says 3 s: passes the probe, but fewer than 8 frames decode
    with pytest.warns(VideoWarning), pytest.raises(VideoError, match="fewer than 8 frames could be decoded"):
        list(iter_snippets(stub))
    assert not any(thread.name == "prefetch" for thread in threading.enumerate())


def test_write_test_video_validates_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="increasing"):
        write_test_video(tmp_path / "a.mp4", duration=1.0, fps=10, vfr_timestamps=[0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="Unknown pattern"):
        write_test_video(tmp_path / "b.mp4", duration=1.0, fps=10, pattern="plaid")


@pytest.mark.parametrize("name", ["cfr60", "cfr10", "vfr"])
def test_intact_videos_have_an_empty_decode_report(videos: dict[str, Path], name: str) -> None:
    report = video.DecodeReport()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames = list(iter_frames(videos[name], fps=FPS, size=16, report=report))
    assert len(frames) == 45 and report.problems() == []
    count = len(source_times(name))
    assert (report.path, report.decoded_frames, report.announced_frames) == (str(videos[name]), count, count)
    assert report.decoded_seconds == pytest.approx(3.0) and report.announced_seconds == pytest.approx(3.0)


def test_a_stream_without_decoder_is_a_video_error(tmp_path: Path) -> None:
    path = write_test_video(tmp_path / "clip.mkv", duration=1.0, fps=15)
    path.write_bytes(path.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_GESTURES/NONE"))  # a codec id FFmpeg lacks
    with pytest.raises(VideoError, match="FFmpeg has no decoder for its video stream"):
        iter_snippets(path)
