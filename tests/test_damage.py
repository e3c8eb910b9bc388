"""Damaged videos: each gives snippets or a clear ``VideoError``, its damage is reported, and it is never inflated."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from gestures_hub import GesturesForVideoClassification
from gestures_hub.extract import extract
from gestures_hub.features import load_features
from gestures_hub.model import video_reader as video
from gestures_hub.model.video_reader import (
    DURATION_MARGIN,
    DecodeReport,
    VideoError,
    VideoWarning,
    count_snippets,
    iter_frames,
    iter_snippets,
    probe_video,
)
from gestures_hub.presets import get_config
from gestures_hub.sample_videos import read_frame_index, write_test_video
from gestures_hub.snippet_encoder import SnippetEncoder

FPS = 15.0
ENCODERS = {
    "h264": ("libx264", ".mp4", "yuv420p", {"threads": "1", "preset": "veryfast"}),
    "mjpeg": ("mjpeg", ".avi", "yuvj420p", {}),
    "vp9": ("libvpx-vp9", ".webm", "yuv420p", {"threads": "1", "deadline": "realtime", "cpu-used": "8"}),
}


def write_clip(
    path: Path, codec: str, *, seconds: float = 1.2, fps: int = 15, size: tuple[int, int] = (32, 24)
) -> Path:
    """A clip encoded straight from YUV planes (no colour conversion, bit-exact muxing). Its bytes can differ slightly
    from one process to another (seen after other tests had run): damage it by its packets, not by fixed offsets."""
    encoder, _, pix_fmt, options = ENCODERS[codec]
    width, height = size
    ramp = np.add.outer(np.arange(height * 3 // 2), np.arange(width)).astype(np.uint8)
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(encoder, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for index in range(round(seconds * fps)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(ramp + np.uint8(9 * index % 256), format=pix_fmt)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip a few bytes, truncate, or insert a copy of a chunk elsewhere."""
    kind = rng.integers(3)
    if kind == 0:
        mutant = bytearray(data)
        for position in rng.integers(0, len(data), rng.integers(1, 9)):
            mutant[position] ^= int(rng.integers(1, 256))
        return bytes(mutant)
    if kind == 1:
        return data[: rng.integers(1, len(data))]
    start, length, at = (int(rng.integers(0, len(data))), int(rng.integers(1, len(data) // 8)),
                         int(rng.integers(0, len(data))))
    return data[:at] + data[start : start + length] + data[at:]


def jumping_mp4(folder: Path, *, from_packet_on: bool) -> Path:
    """A 3 s, 30 fps mp4 whose 41st packet's timestamp (or every timestamp from it on) is 960 s late."""
    source = write_test_video(folder / "source.mp4", duration=3.0, fps=30)
    path = folder / f"jump_{'on' if from_packet_on else 'one'}.mp4"
    with av.open(str(source)) as reader, av.open(str(path), "w") as writer:
        stream = reader.streams.video[0]
        out = writer.add_stream_from_template(stream)
        late = round(960 / stream.time_base)
        for index, packet in enumerate(reader.demux(stream)):
            if packet.dts is None:
                continue
            if index == 40 or (from_packet_on and index > 40):
                packet.pts += late
                packet.dts += late if from_packet_on else 0
            packet.stream = out
            writer.mux(packet)
    return path


def retimed(frames: list[tuple[float | None, float | None]], fps: float = 10.0, limit: float = 100.0):
    report = DecodeReport()
    times = [(round(start, 6), round(end, 6)) for start, end, _ in video._retime(
        [(time, length, index) for index, (time, length) in enumerate(frames)], fps, limit, report)]
    return times, report


def test_retime_closes_timestamp_jumps_and_keeps_good_timestamps() -> None:
    """At 10 fps a jump is a step longer than max(1 s, 50 frame intervals) = 5 s, forward or back."""
    one_late = [(0.0, 0.1), (0.1, 0.1), (900.0, 0.1), (0.3, 0.1), (0.4, 0.1)]
    times, report = retimed(one_late)
    assert times == [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5)]  # the good frames keep their times
    assert (report.timestamp_jumps, report.jump_seconds, report.decoded_seconds) == (2, pytest.approx(1799.6),
                                                                                      pytest.approx(0.5))
    shifted = [(0.0, 0.1), (0.1, 899.9), (900.0, 0.1), (900.1, 0.1)]  # a damaged duration, later frames shifted
    times, report = retimed(shifted)
    assert times == [(0.0, 0.1), (0.1, 100.0), (0.2, 0.3), (0.3, 0.4)] and report.timestamp_jumps == 1  # end: limit
    restarted = [(5.0, 0.1), (5.1, 0.1), (0.0, 0.1), (0.1, None), (None, None)]  # timestamps reset (concatenation)
    times, report = retimed(restarted)
    assert times == [(5.0, 5.1), (5.1, 5.2), (5.2, 5.3), (5.3, 5.4), (5.4, 5.5)] and report.timestamp_jumps == 1
    slack = [(0.0, 0.1), (0.1, 0.1), (0.09, 0.1), (4.9, 0.1)]  # a small step back is clamped; 4.7 s is no jump
    times, report = retimed(slack)
    assert times == [(0.0, 0.1), (0.1, 0.2), (0.1, 0.2), (4.9, 5.0)] and report.timestamp_jumps == 0


def test_retime_stops_at_the_announced_duration_plus_the_margin() -> None:
    creeping = [(0.5 * index, 0.5) for index in range(40)]  # 20 s of half-second steps: no jump, but 3 s announced
    times, report = retimed(creeping, limit=3.0 + DURATION_MARGIN)
    assert times[-1] == (3.5, 4.0) and len(times) == 8 and report.overran
    assert report.decoded_seconds == 4.0
    times, report = retimed([(0.0, 0.1), (0.1, 900.0)], limit=4.0)  # the last frame's absurd duration is cut too
    assert times == [(0.0, 0.1), (0.1, 4.0)] and report.overran


@pytest.mark.parametrize(
    ("fields", "problems"),
    [
        ({"decoded_seconds": 6.0, "decoded_frames": 150}, []),
        ({"decoded_seconds": 5.6, "decoded_frames": 145}, []),  # within max(0.5 s, 5 %)
        ({"decoded_seconds": 4.0, "decoded_frames": 100}, ["only 4.00 s of the 6.00 s it announces could be decoded"]),
        ({"decoded_seconds": 6.0, "decoded_frames": 120}, ["120 frames were decoded where it announces 150"]),
        ({"decoded_seconds": 7.0, "decoded_frames": 150, "overran": True},
         ["its timestamps run past the 6.00 s it announces, so decoding stopped 1 s after that"]),
        ({"decoded_seconds": 6.0, "decoded_frames": 150, "skipped_packets": 2, "corrupt_frames": 3,
          "timestamp_jumps": 1, "jump_seconds": 958.0},
         ["1 timestamp jump(s) (958.0 s in all) were closed: the frame after a jump starts when the one before it ends",
          "2 corrupt packet(s) were skipped", "3 frame(s) were decoded with errors (FFmpeg flags them corrupt)"]),
    ],
)
def test_one_judgement_of_decoded_against_announced(fields: dict, problems: list[str]) -> None:
    report = DecodeReport("a.mp4", announced_seconds=6.0, announced_frames=150, **fields)
    assert report.problems() == problems
    assert DecodeReport("a.mkv", 6.0, 0, 6.0, 120).problems() == []  # no frame count announced: not checked


@pytest.mark.parametrize("from_packet_on", [False, True], ids=["one packet late", "late from a packet on"])
def test_a_timestamp_jump_does_not_inflate_the_video(tmp_path: Path, from_packet_on: bool) -> None:
    """Before: a 3 s mp4 with one packet 960 s late gave 961 s of frames (the issue's 6 s video became 964 s)."""
    path = jumping_mp4(tmp_path, from_packet_on=from_packet_on)
    announced = probe_video(path).duration
    assert announced == pytest.approx(963.0 if from_packet_on else 3.0)
    report = DecodeReport()
    with pytest.warns(VideoWarning, match=r"timestamp jump\(s\) \(\d+\.\d s in all\) were closed") as record:
        frames = list(iter_frames(path, fps=FPS, size=16, report=report))
    assert record[0].message.report is report and str(path) in str(record[0].message)
    assert [read_frame_index(rgb) for _, rgb in frames] == [2 * k for k in range(45)]  # every good frame, on time
    assert report.timestamp_jumps >= 1 and report.jump_seconds > 959 and report.decoded_seconds == pytest.approx(3.0)
    if from_packet_on:
        assert "only 3.00 s of the 963.00 s it announces could be decoded" in str(record[0].message)
    else:
        assert (report.timestamp_jumps, report.decoded_frames, report.overran) == (2, 90, False)
    streamed = DecodeReport()
    with pytest.warns(VideoWarning):
        snippets = sum(map(len, iter_snippets(path, size=16, report=streamed)))  # decoded in the prefetch thread
    assert snippets == count_snippets(45, 8) <= count_snippets(math.ceil((3.0 + DURATION_MARGIN) * FPS), 8)
    assert streamed == report


def test_frames_flagged_corrupt_are_counted_and_warned(tmp_path: Path) -> None:
    """Every third byte of the last 70 % flipped in 35 inter-frame packets (found by demuxing: the clip's bytes differ
    slightly from process to process; lighter damage was once not flagged at all in a whole-suite run), decoded with
    one thread (with FFmpeg's frame threads, which frames it flags varies from run to run)."""
    clip = write_clip(tmp_path / "clip.mp4", "h264", seconds=3, fps=30, size=(160, 120))
    with av.open(str(clip)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(video=0)
                   if packet.size > 64 and not packet.is_keyframe]
    data = bytearray(clip.read_bytes())
    for position, size in packets[10:80:2]:
        for offset in range(int(0.3 * size), size, 3):
            data[position + offset] ^= 0x55
    path = tmp_path / "flipped.mp4"
    path.write_bytes(bytes(data))
    report = DecodeReport()
    with pytest.warns(VideoWarning, match=r"\d+ frame\(s\) were decoded with errors \(FFmpeg flags them corrupt\)"):
        frames = list(iter_frames(path, fps=FPS, size=16, report=report, threads=1))
    assert report.corrupt_frames > 0 and report.path == str(path)
    assert len(frames) == 45  # the frames around the damage are all there


def test_metadata_that_is_not_utf8_does_not_stop_a_video(tmp_path: Path) -> None:
    path = tmp_path / "tagged.mkv"
    with av.open(str(path), "w") as container:
        container.metadata["title"] = "GESTURES-TAG"
        stream = container.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for index in range(18):
            frame = av.VideoFrame.from_ndarray(np.full((36, 32), 9 * index, np.uint8), format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    path.write_bytes(path.read_bytes().replace(b"GESTURES-TAG", b"\xff\xfe" * 6))
    with pytest.raises(UnicodeDecodeError):  # what PyAV does by default
        av.open(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sum(map(len, iter_snippets(path, frames_per_snippet=4))) == 4


@pytest.mark.parametrize("codec", [
    "h264", "mjpeg",
    pytest.param("vp9", marks=pytest.mark.skipif("libvpx-vp9" not in av.codec.codecs_available, reason="no libvpx")),
])
def test_fuzzed_videos_give_snippets_or_a_video_error(tmp_path: Path, codec: str) -> None:
    """200 seeded mutants per codec (well under a second each): snippets within the announced duration plus the margin,
    with a ``DecodeReport`` exactly when a ``VideoWarning`` says so, or a ``VideoError``; nothing else."""
    data = write_clip(tmp_path / f"clip{ENCODERS[codec][1]}", codec).read_bytes()
    path = tmp_path / f"mutant{ENCODERS[codec][1]}"
    rng = np.random.default_rng(0)
    outcomes = {"snippets": 0, "error": 0}
    for _ in range(200):
        path.write_bytes(mutate(data, rng))
        report = DecodeReport()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                snippets = sum(map(len, iter_snippets(path, fps=FPS, frames_per_snippet=4, size=16, batch_size=4,
                                                      prefetch_depth=0, report=report)))
            except VideoError as error:
                assert str(error).startswith(f"Cannot use video '{path}': ")
                outcomes["error"] += 1
                continue
        outcomes["snippets"] += 1
        bound = count_snippets(math.ceil((probe_video(path).duration + DURATION_MARGIN) * FPS), 4)
        assert snippets <= bound
        assert all(issubclass(warning.category, VideoWarning) for warning in caught), [str(w.message) for w in caught]
        assert bool(caught) == bool(report.problems())
    assert min(outcomes.values()) >= 5, outcomes


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    GesturesForVideoClassification(get_config("tiny-videomae")).save_pretrained(folder)
    return folder


def write_manifest(folder: Path, videos: list[str]) -> Path:
    path = folder / "manifest.csv"
    with path.open("w", newline="") as file:
        csv.writer(file).writerows([["video", "patient", "seizure", "label"],
                                    *[[name, "p1", f"s{index}", "FOS"] for index, name in enumerate(videos)]])
    return path


def test_extraction_reports_the_damage_of_each_video(tiny_model: Path, tmp_path: Path) -> None:
    write_test_video(tmp_path / "good.mp4", duration=2.0, fps=25)
    jumping_mp4(tmp_path, from_packet_on=False)
    manifest = write_manifest(tmp_path, ["good.mp4", "jump_one.mp4"])
    report = extract(manifest, tiny_model, tmp_path / "out", device="cpu", progress=False)
    assert sorted(report.extracted) == ["good.mp4", "jump_one.mp4"] and not report.failures
    assert list(report.damage) == ["jump_one.mp4"]
    damage = report.damage["jump_one.mp4"]
    assert (damage["timestamp_jumps"], damage["decoded_frames"], damage["announced_frames"]) == (2, 90, 90)
    assert damage["decoded_seconds"] == pytest.approx(3.0) and damage["announced_seconds"] == pytest.approx(3.0)
    assert "timestamp jump(s)" in report.warnings["jump_one.mp4"]
    rows = {row["video"]: row["damage"] for row in load_features(tmp_path / "out")}  # damage is data: a column
    assert rows["good.mp4"] == [] and any("timestamp jump(s)" in problem for problem in rows["jump_one.mp4"])


def test_damage_reaches_predict_and_the_pipeline(tmp_path: Path) -> None:
    """The damage record is in the pipeline's timeline output (which predict reads), predict's JSON and CSV, and on
    the plot; the reader warns about it too."""
    from gestures_hub.predict import DEMO_MODEL_DIR, predict_video, write_outputs
    from gestures_hub.timeline import plot_timeline

    damaged, intact = jumping_mp4(tmp_path, from_packet_on=False), tmp_path / "source.mp4"
    model = GesturesForVideoClassification.from_pretrained(DEMO_MODEL_DIR).eval()
    assert predict_video(model, intact).damage == []
    with pytest.warns(VideoWarning, match=r"timestamp jump\(s\)"):
        prediction = predict_video(model, damaged)
    assert prediction.damage and "timestamp jump(s)" in prediction.damage[0]
    paths = write_outputs(prediction, tmp_path / "out", "jump")
    assert json.loads(paths["json"].read_text())["damage"] == prediction.damage
    assert f"# damaged video: {prediction.damage[0]}" in paths["csv"].read_text()
    assert any(f"DAMAGED VIDEO: {prediction.damage[0]}" in text.get_text() for text in plot_timeline(prediction).texts)


def test_memory_error_on_one_video_fails_only_that_one(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.mp4", "huge.mp4", "c.mp4"):
        write_test_video(tmp_path / name, duration=1.0, fps=15)
    encode = SnippetEncoder.video

    def video(self: SnippetEncoder, path: Path, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if Path(path).name == "huge.mp4":
            raise MemoryError
        return encode(self, path, stride)

    monkeypatch.setattr(SnippetEncoder, "video", video)
    report = extract(write_manifest(tmp_path, ["a.mp4", "huge.mp4", "c.mp4"]), tiny_model, tmp_path / "out",
                     device="cpu", progress=False)
    assert sorted(report.extracted) == ["a.mp4", "c.mp4"]
    assert report.failures == {"huge.mp4": (
        f"Cannot use video '{tmp_path / 'huge.mp4'}': memory ran out while extracting it (MemoryError). Free memory "
        "(fewer parallel processes, a smaller --batch-size) and rerun: the videos written are skipped."
    )}
    with (tmp_path / "out" / "failures.csv").open() as file:
        assert [row["video"] for row in csv.DictReader(file)] == ["huge.mp4"]
