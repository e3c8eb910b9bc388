"""Bad video files of every kind, shared by the reader and extraction tests."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from gestures_hub.sample_videos import write_test_video

BAD_KINDS = ("missing", "folder", "empty", "text", "notes", "png", "audio", "truncated_mp4", "fast", "short")


def write_audio(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def make_bad(kind: str, folder: Path) -> Path:
    """A bad input of the given kind."""
    path = folder / f"{kind}.mp4"
    if kind == "missing":
        return path
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    elif kind == "text":
        path.write_text("not a video\n" * 50)
    elif kind == "notes":  # FFmpeg reads .txt files as ANSI art
        path = folder / "notes.txt"
        path.write_text("not a video\n" * 50)
    elif kind == "png":
        av.VideoFrame.from_ndarray(np.zeros((24, 32, 3), np.uint8), format="rgb24").save(str(folder / "image.png"))
        (folder / "image.png").rename(path)
    elif kind == "audio":
        write_audio(path.with_suffix(".m4a")).rename(path)
    elif kind == "truncated_mp4":
        data = write_test_video(folder / "full.mp4", duration=2.0, fps=25).read_bytes()
        path.write_bytes(data[: len(data) // 2])  # the index ('moov') is written at the end
    elif kind == "fast":
        write_test_video(path, duration=0.05, fps=2000)
    elif kind == "short":
        write_test_video(path, duration=0.4, fps=25)
    return path
