"""Time ranges of a video decoded apart, in parallel, with the frames and the report of a whole decode.

A :class:`FrameRange` of the resampled frames (:mod:`.video_reader`'s rule) is decoded on its own
(``iter_frames(..., frame_range=...)``, through :func:`decode_range`) from the keyframe before it, giving exactly the
frames (and, added up over ranges by :func:`merge_reports`, the report) of a decode of the whole video; a range that
cannot promise that (damaged packets or frames, irregular timestamps) raises :class:`RangeUnsafe`: decode that video
whole. :func:`plan_ranges` cuts a video into ranges on snippet boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import av

from .video_reader import (
    DURATION_MARGIN,
    JUMP_FRAMES,
    JUMP_SECONDS,
    TIME_EPS,
    DecodeReport,
    VideoInfo,
    _frames,
    _resample,
    _retime,
    count_snippets,
)

T = TypeVar("T")


class RangeUnsafe(Exception):
    """A :class:`FrameRange` cannot be decoded apart from the rest of its video with the guarantee of identical frames
    (corrupt packets or frames, missing, repeated, backward or jumping timestamps): decode the video whole."""


@dataclass(frozen=True)
class FrameRange:
    """Resampled frames ``start <= k < stop`` of a video (``stop`` None: to its end).

    Source frames starting in ``[start, owns) / fps`` s after the video's first frame (``owns`` None: to the end) are
    counted in the range's :class:`DecodeReport`: ranges whose ``start``/``owns`` tile the video add up to the report
    of a whole decode (:func:`merge_reports`).
    """

    start: int
    stop: int | None = None
    owns: int | None = None


def plan_ranges(
    duration: float, *, fps: float, frames_per_snippet: int, stride: int, range_seconds: float | None,
    parts: int | None = None,
) -> list[tuple[int, FrameRange]]:
    """``(first snippet, range)`` of each part of a video of ``duration`` s (as announced) decoded on its own, on
    snippet boundaries (snippets of ``frames_per_snippet`` frames at ``fps``, one every ``stride`` frames), about
    ``range_seconds`` each, or ``parts`` ranges; one whole range when both are None, and never more than one range per
    two snippets. The last range runs to the end of the video whatever its real length."""
    snippets = count_snippets(math.ceil(duration * fps - 1e-9), frames_per_snippet, stride)
    if parts is None:
        parts = 1 if range_seconds is None else snippets // max(1, round(range_seconds * fps / stride))
    parts = max(1, min(parts, snippets // 2))
    starts = [round(index * snippets / parts) for index in range(parts)]
    ends = [*starts[1:], None]
    return [(start, FrameRange(start * stride, None if end is None else (end - 1) * stride + frames_per_snippet,
                               None if end is None else end * stride)) for start, end in zip(starts, ends, strict=True)]


def decode_range(
    container: av.container.InputContainer, info: VideoInfo, fps: float, span: FrameRange, report: DecodeReport
) -> Iterator[tuple[float, av.VideoFrame]]:
    """The resampled source frames of ``span`` (for :func:`~.video_reader.iter_frames`): seek to the keyframe before
    its first frame (further back until the first frame decoded after the keyframe is not later than it), decode with
    the timestamps checked (:func:`_clean`), count the frames it owns into ``report``."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    report.path, report.announced_seconds, report.announced_frames = info.path, info.duration, stream.frames
    scratch = DecodeReport()
    decoded = _clean(_frames(container, stream, scratch), info.fps, scratch)
    head = next(decoded, None)
    if head is None:
        raise RangeUnsafe(f"no frame of '{info.path}' could be decoded")
    origin, target = head[0], head[0] + span.start / fps
    found = span.start == 0
    for back in (0.0, 2.0, 8.0, 32.0) if span.start else ():
        if target - back <= origin:
            break
        container.seek(math.floor((target - back) / stream.time_base), stream=stream)
        scratch = DecodeReport()
        decoded = _clean(_from_keyframe(_frames(container, stream, scratch)), info.fps, scratch)
        head = next(decoded, None)
        if found := head is not None and head[0] <= target + TIME_EPS:
            break
    if not found:  # the range starts near the video's start: decode from there
        container.seek(stream.start_time or 0, stream=stream)
        scratch = DecodeReport()
        decoded = _clean(_frames(container, stream, scratch), info.fps, scratch)
        head = next(decoded, None)
        if head is None or head[0] != origin:
            raise RangeUnsafe(f"seeking back to the start of '{info.path}' does not give its first frame")
    frames = _chain(head, decoded)
    owned = _Owned(_retime(frames, info.fps, info.duration + DURATION_MARGIN, scratch, origin=origin), origin,
                   span.start / fps if span.start else -float("inf"),
                   float("inf") if span.owns is None else span.owns / fps, scratch, report)
    for k, item in enumerate(_resample(owned, fps, origin=origin, first=span.start), start=span.start):
        if span.stop is not None and k >= span.stop:
            break
        yield item
    owned.drain()


def _chain(head: T, rest: Iterator[T]) -> Iterator[T]:
    yield head
    yield from rest


def _from_keyframe(frames: Iterable[tuple[float | None, float | None, av.VideoFrame]]
                   ) -> Iterator[tuple[float | None, float | None, av.VideoFrame]]:
    """Decoded frames from the first keyframe on: after a seek, frames shown before it may lack their references."""
    started = False
    for item in frames:
        started = started or item[2].key_frame
        if started:
            yield item


def _clean(
    frames: Iterable[tuple[float | None, float | None, av.VideoFrame]], fps: float, scratch: DecodeReport
) -> Iterator[tuple[float, float | None, av.VideoFrame]]:
    """Pass frames through while nothing could make a range's decode differ from a whole one's; else
    :class:`RangeUnsafe`: a skipped packet, a corrupt frame, a missing timestamp or one not after the previous, a
    jump (as :func:`_retime` sees them)."""
    jump = max(JUMP_SECONDS, JUMP_FRAMES / fps)
    previous: float | None = None
    for time, length, frame in frames:
        if scratch.skipped_packets or frame.is_corrupt:
            raise RangeUnsafe("a packet or frame is damaged")
        if time is None or previous is not None and not previous < time <= previous + jump:
            raise RangeUnsafe(f"irregular timestamps ({previous} then {time} s)")
        previous = time
        yield time, length, frame
    if scratch.skipped_packets:
        raise RangeUnsafe("a packet is damaged")


class _Owned:
    """Passes retimed frames through, counting into ``report`` those starting in ``[low, high)`` s after ``origin``
    (as :func:`_retime` counts them); :meth:`drain` decodes on until a frame starts at ``high`` or later."""

    def __init__(self, frames: Iterator[tuple[float, float, T]], origin: float, low: float, high: float,
                 scratch: DecodeReport, report: DecodeReport) -> None:
        self.frames, self.origin, self.low, self.high = frames, origin, low, high
        self.scratch, self.report, self.past = scratch, report, False

    def __iter__(self) -> Iterator[tuple[float, float, T]]:
        for start, end, item in self.frames:
            offset = start - self.origin
            self.past = offset >= self.high
            if self.low <= offset < self.high:
                self.report.decoded_frames += 1
                self.report.decoded_seconds = end - self.origin
                self.report.overran = self.scratch.overran
            yield start, end, item
        self.report.overran = self.report.overran or self.scratch.overran

    def drain(self) -> None:
        if not self.past:
            for _ in self:
                if self.past:
                    break


def merge_reports(reports: Sequence[DecodeReport]) -> DecodeReport:
    """The report of a whole decode from those of the :class:`FrameRange` s tiling the video (in order)."""
    merged = DecodeReport(reports[0].path, reports[0].announced_seconds, reports[0].announced_frames)
    for part in reports:
        merged.decoded_frames += part.decoded_frames
        merged.decoded_seconds = max(merged.decoded_seconds, part.decoded_seconds)
        merged.overran = merged.overran or part.overran
    return merged


__all__ = ["FrameRange", "RangeUnsafe", "decode_range", "merge_reports", "plan_ranges"]
