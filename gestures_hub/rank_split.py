"""One long video split across ``accelerate launch`` processes: each extracts a block of its time ranges, the process
that owns the video joins the blocks into its row.

:func:`plan_ranks` deals the videos to the processes: a video longer than an even share of all the work (the videos'
total duration over the processes) is cut into ranges on snippet boundaries
(:meth:`~gestures_hub.decode_workers.DecodeSettings.ranges`), consecutive blocks of which go to every process; the
other videos go whole, round-robin, as before. Each process writes the features of its blocks into ``<out>/.parts/``
(atomically); after a barrier, the owner joins them (features, snippet times and damage report equal to one process's
decode of the whole video) and removes them. A block that failed (a range that cannot be decoded apart with identical
frames, e.g. damaged timestamps; a dead decoder) makes the owner extract the video whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .decode_workers import DecodePool, DecodeSettings, VideoResult, failure_message, snippet_times
from .features import atomic_write
from .model.video_ranges import FrameRange, merge_reports
from .model.video_reader import DecodeReport, damage_warning, iter_frames, prefetch, snippet_batches

PARTS_DIRNAME = ".parts"


@dataclass(frozen=True)
class Part:
    """Block ``number`` of the consecutive ranges of video ``video`` (an index into the planned list)."""

    video: int
    number: int
    ranges: tuple[tuple[int, FrameRange], ...]
    """``(first snippet, range)`` pairs, as :meth:`DecodeSettings.ranges` gives them."""


@dataclass
class RankPlan:
    """What one process extracts: ``whole`` videos, ``parts`` of split ones; it writes the rows of ``whole`` and of
    the split videos it ``owns`` (index: number of parts). ``split``: how many videos are split (the same in every
    process)."""

    whole: list[int] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    owns: dict[int, int] = field(default_factory=dict)
    split: int = 0


def plan_ranks(durations: Sequence[float | None], settings: DecodeSettings, rank: int, world_size: int,
               ranges_per_part: int = 1) -> RankPlan:
    """The share of process ``rank`` of ``world_size`` of videos lasting ``durations`` s (None: unknown, e.g.
    unreadable: whole). Split videos are cut into ``world_size * ranges_per_part`` ranges (``ranges_per_part``: one per
    decoder process) and owned in turn by each process, which also takes their first block; the other videos are
    dealt round-robin from the process after the last owner."""
    share = sum(duration for duration in durations if duration) / world_size
    cut = {index: settings.ranges(duration, None, parts=world_size * max(1, ranges_per_part))
           for index, duration in enumerate(durations) if world_size > 1 and duration and duration > share}
    split = [index for index, ranges in cut.items() if len(ranges) > 1]  # (a video of under 4 snippets stays whole)
    whole = [index for index in range(len(durations)) if index not in split]
    plan = RankPlan(whole=[index for turn, index in enumerate(whole) if (len(split) + turn) % world_size == rank],
                    split=len(split))
    for turn, index in enumerate(split):
        owner, ranges = turn % world_size, cut[index]
        count = min(world_size, len(ranges))
        if owner == rank:
            plan.owns[index] = count
        for number in range(count):
            if (owner + number) % world_size == rank:
                block = ranges[round(number * len(ranges) / count): round((number + 1) * len(ranges) / count)]
                plan.parts.append(Part(index, number, tuple(block)))
    return plan


def extract_parts(encoder, paths: Sequence[str | Path], ids: Sequence[str], parts: Sequence[Part], workers: int,
                  settings: DecodeSettings, out: Path, bar: tqdm) -> None:
    """Extract ``parts`` (of the videos at ``paths``, named ``ids``) with ``encoder``
    (:class:`~gestures_hub.snippet_encoder.SnippetEncoder`) into ``out``'s parts folder: with a decode pool of
    ``workers`` processes, or decoded in a thread of this one (0)."""
    if workers:
        with DecodePool(workers, settings) as pool:
            for result in pool.run([(paths[part.video], list(part.ranges)) for part in parts], encoder.submit):
                part = parts[result.index]
                save_part(out, ids[part.video], part.number, result)
                bar.update()
        return
    for part in parts:
        save_part(out, ids[part.video], part.number, _encode_part(encoder, paths[part.video], part, settings))
        bar.update()


def _encode_part(encoder, path: str | Path, part: Part, settings: DecodeSettings) -> VideoResult:
    """One part decoded here (a background thread ahead of the encoder), as the pool would give it."""
    config = encoder.config
    features, reports = [], []
    try:
        for _, span in part.ranges:
            reports.append(DecodeReport())
            frames = iter_frames(path, fps=settings.fps, size=settings.size, geometry=settings.geometry,
                                 report=reports[-1], frame_range=span)
            batches = snippet_batches(frames, name=str(path), fps=settings.fps,
                                      frames_per_snippet=settings.frames_per_snippet, stride=settings.stride,
                                      mean=config.image_mean, std=config.image_std,
                                      batch_size=encoder.runtime.batch_size)
            features += [encoder(batch.pixel_values) for batch in prefetch(batches)]
    except Exception as error:  # any failure is the part's: the owner extracts the video whole
        return VideoResult(part.video, error=failure_message(path, error))
    joined = torch.cat(features).numpy()
    first = part.ranges[0][0]
    return VideoResult(part.video, joined, snippet_times(first, len(joined), settings), merge_reports(reports),
                       first_snippet=first)


def part_path(out: Path, video: str, number: int) -> Path:
    return out / PARTS_DIRNAME / f"{hashlib.sha256(video.encode()).hexdigest()[:20]}-{number}.npz"


def save_part(out: Path, video: str, number: int, result: VideoResult) -> None:
    """Write one part's features and what its decoding found (atomically)."""
    meta = {"video": video, "first_snippet": result.first_snippet, "error": result.error, "warnings": result.warnings,
            "report": None if result.report is None else asdict(result.report)}
    features = np.zeros((0, 0), np.float32) if result.features is None else result.features
    buffer = io.BytesIO()
    np.savez(buffer, features=features, meta=np.array(json.dumps(meta)))
    path = part_path(out, video, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: file.write(buffer.getvalue()))


def join_parts(out: Path, video: str, count: int, settings: DecodeSettings) -> VideoResult | None:
    """The ``count`` parts of ``video`` as one whole-video result, the part files removed; None (files kept until
    :func:`clear_parts`) if one is missing, failed or does not follow the previous: extract the video whole."""
    loaded = []
    for number in range(count):
        path = part_path(out, video, number)
        if not path.is_file():
            return None
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            if meta["error"] is not None or meta["video"] != video:
                return None
            loaded.append((meta, data["features"]))
    expected = 0
    for meta, features in loaded:
        if meta["first_snippet"] != expected:
            return None
        expected += len(features)
    report = merge_reports([DecodeReport(**meta["report"]) for meta, _ in loaded])
    caught = [text for meta, _ in loaded for text in meta["warnings"]]
    if (warning := damage_warning(report)) is not None:
        caught.append(str(warning))
    for number in range(count):
        part_path(out, video, number).unlink()
    features = np.concatenate([features for _, features in loaded])
    return VideoResult(0, features, snippet_times(0, len(features), settings), report, caught)


def clear_parts(out: Path) -> None:
    """Remove the parts left by an interrupted run (they are extracted again)."""
    shutil.rmtree(out / PARTS_DIRNAME, ignore_errors=True)


__all__ = ["Part", "RankPlan", "clear_parts", "extract_parts", "join_parts", "plan_ranks", "save_part"]
