"""Decoder worker processes feeding one encoder: extraction that keeps a fast encoder (a GPU) busy.

Each worker (a forked process) decodes, resamples and squares frames with the model's reader
(:func:`gestures_hub.model.video_reader.iter_frames`) and writes them as uint8 ``(size, size, 3)`` frames into slots of
one shared-memory tensor, a chunk of whole snippets per slot; only small messages cross its pipe. The encoder
process normalises the frames on its device, cuts the snippets and encodes them, so features equal those of
:meth:`gestures_hub.snippet_encoder.SnippetEncoder.video`. Each worker owns a few slots: memory is fixed whatever the
length of the videos, and a worker waits for a slot when it is ahead of the encoder.

A long video is split into :class:`~gestures_hub.model.video_ranges.FrameRange` s on snippet boundaries, decoded in
parallel (each from the keyframe before it); a range that cannot promise frames identical to a whole decode makes its
video decoded whole. A worker that dies (killed, out of memory) has its job retried once by a fresh worker; dying a
second time on the same video fails that video, naming the exit signal, and the others go on.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import signal
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np
import torch

from .model.video_ranges import FrameRange, merge_reports, plan_ranges
from .model.video_reader import DecodeReport, VideoError, count_snippets, damage_warning, iter_frames, too_short

SLOTS_PER_WORKER = 3
"""Chunks a worker may have waiting for the encoder (its slots)."""
WORKER_MEMORY = 400 * 2**20
"""Bytes a worker takes besides its slots (PyAV decoder, Python, torch): bounds the automatic worker count."""
MIN_CHUNK_FRAMES = 64


@dataclass(frozen=True)
class DecodeSettings:
    """What the workers make: frames at ``fps``, ``size`` squares by ``geometry``, snippets every ``stride`` frames."""

    fps: float
    size: int
    geometry: str
    frames_per_snippet: int
    stride: int
    chunk_snippets: int
    """Snippets per chunk (per slot)."""
    threads: int = 1
    """FFmpeg threads per worker (0: FFmpeg's choice)."""

    @property
    def chunk_frames(self) -> int:
        return (self.chunk_snippets - 1) * self.stride + self.frames_per_snippet

    def ranges(self, duration: float, range_seconds: float | None, parts: int | None = None
               ) -> list[tuple[int, FrameRange]]:
        """The ranges of a video of ``duration`` s, about ``range_seconds`` each or ``parts`` (:func:`plan_ranges`)."""
        return plan_ranges(duration, fps=self.fps, frames_per_snippet=self.frames_per_snippet, stride=self.stride,
                           range_seconds=range_seconds, parts=parts)


def snippet_times(first: int, count: int, settings: DecodeSettings) -> np.ndarray:
    """float32 start times (s) of snippets ``first`` to ``first + count - 1``."""
    return ((first + np.arange(count, dtype=np.int64)) * settings.stride / settings.fps).astype(np.float32)


def chunk_snippets_for(batch_size: int, stride: int) -> int:
    """Snippets per chunk: a multiple of the encoder batch with at least ``MIN_CHUNK_FRAMES`` frames."""
    return batch_size * max(1, math.ceil(MIN_CHUNK_FRAMES / (batch_size * stride)))


def auto_decode_workers(device: torch.device, slot_bytes: int = 0) -> int:
    """Decoder processes for ``device``: none on a CPU (decoding is ~10x faster than a CPU encoder, so the encoder
    gets the cores; frames are decoded in a thread as before), else one per core but one, as memory allows."""
    if device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 2**34
    by_memory = int(0.5 * available // (WORKER_MEMORY + SLOTS_PER_WORKER * slot_bytes))
    return max(1, min(cores - 1, by_memory, 32))


def auto_range_seconds(duration: float, workers: int) -> float | None:
    """Range length for a video of ``duration`` s: the video spread over the workers, ranges of 30 s to 5 min (each
    costs up to a keyframe interval of extra decoding); None (whole) with fewer than two workers."""
    if workers < 2:
        return None
    return min(300.0, max(30.0, duration / workers))


@dataclass(frozen=True)
class Job:
    id: int
    video: int
    path: str
    first_snippet: int
    span: FrameRange | None
    """None: the whole video, as :func:`~gestures_hub.model.video_reader.iter_frames` reads it (damage warnings
    included)."""


@dataclass
class VideoResult:
    """What the pool made of one video (or of the part of it its ranges cover): features and start times, or
    ``error``. A part's ``report`` counts its own frames (:func:`merge_reports` adds parts up) and never warns."""

    index: int
    features: np.ndarray | None = None
    start_times: np.ndarray | None = None
    report: DecodeReport | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    first_snippet: int = 0


def failure_message(path: str | Path, error: BaseException) -> str:
    """What goes into ``failures.csv`` for a video whose decoding raised ``error``."""
    if isinstance(error, MemoryError):
        return str(VideoError(
            path, f"memory ran out while extracting it ({str(error) or type(error).__name__})",
            "Free memory (fewer parallel processes, a smaller --batch-size) and rerun: the videos written are skipped.",
        ))
    return str(error)


def died_message(path: str, pid: int, exitcode: int | None) -> str:
    """The failure of a video whose decoder process died on it twice."""
    how = (f"killed by signal {signal.Signals(-exitcode).name}" if exitcode is not None and exitcode < 0
           else f"exit code {exitcode}")
    return str(VideoError(path, f"its decoder process (pid {pid}) died while decoding it ({how}), also when retried",
                          "The file may crash FFmpeg or exhaust memory: check it plays, re-encode it, or extract it "
                          "alone with --decode-workers 0."))


# --------------------------------------------------------------------------------------------------- worker side


def _worker(conn: Connection, slots: torch.Tensor, mine: list[int], settings: DecodeSettings) -> None:
    """A decoder process: runs jobs sent by the pool, one at a time, reporting on ``conn``."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pool stops its workers
    state = _WorkerState(conn, slots.numpy(), deque(mine))
    while True:
        job = state.next_job()
        if job is None:
            return
        conn.send(("start", job.id))
        try:
            done = _run_job(job, settings, state)
        except Exception as error:  # any failure is the job's; the pool decides (whole decode, or the video fails)
            conn.send(("error", job.id, failure_message(job.path, error), job.span is None))
            continue
        if done is not None:
            conn.send(("done", job.id, *done))


class _Cancelled(Exception):
    pass


class _WorkerState:
    def __init__(self, conn: Connection, slots: np.ndarray, free: deque[int]) -> None:
        self.conn, self.slots, self.free = conn, slots, free
        self.jobs: deque[Job] = deque()
        self.cancelled: set[int] = set()
        self.stopping = False

    def _receive(self) -> None:
        message = self.conn.recv()
        if message[0] == "job":
            self.jobs.append(message[1])
        elif message[0] == "free":
            self.free.append(message[1])
        elif message[0] == "cancel":
            self.cancelled.add(message[1])
        else:
            self.stopping = True

    def next_job(self) -> Job | None:
        while not self.stopping:
            while self.jobs:
                job = self.jobs.popleft()
                if job.id not in self.cancelled:
                    return job
            self._receive()
        return None

    def slot(self, job: Job) -> int:
        """A free slot, waiting for the encoder to release one; raises :class:`_Cancelled` if ``job`` was."""
        while self.conn.poll() or not self.free:
            self._receive()
            if job.id in self.cancelled or self.stopping:
                raise _Cancelled
        return self.free.popleft()


def _run_job(job: Job, settings: DecodeSettings, state: _WorkerState) -> tuple | None:
    """Decode one job into chunks of whole snippets; returns what the ``done`` message carries (None if cancelled)."""
    report = DecodeReport()
    stride, length, chunk = settings.stride, settings.frames_per_snippet, settings.chunk_snippets
    slot, filled, skip, first = -1, 0, 0, job.first_snippet
    carry: np.ndarray | None = None
    total = 0
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _, frame in iter_frames(job.path, fps=settings.fps, size=settings.size, geometry=settings.geometry,
                                        report=report, frame_range=job.span, threads=settings.threads):
                if skip:
                    skip -= 1
                    continue
                if slot < 0:
                    slot, filled = state.slot(job), 0
                    if carry is not None:
                        state.slots[slot, : len(carry)] = carry
                        filled = len(carry)
                state.slots[slot, filled] = frame
                filled += 1
                if filled == settings.chunk_frames:
                    state.conn.send(("chunk", job.id, slot, first, chunk, filled))
                    carry = state.slots[slot, chunk * stride : filled].copy() if stride < length else None
                    skip, slot, first, total = max(0, stride - length), -1, first + chunk, total + chunk
        if slot >= 0:
            count = count_snippets(filled, length, stride)
            if count:
                state.conn.send(("chunk", job.id, slot, first, count, filled))
                total += count
            else:
                state.conn.send(("free", slot))
    except _Cancelled:
        return None
    except BaseException:
        if slot >= 0:  # filled but not sent: the worker keeps it
            state.free.append(slot)
        raise
    return total, asdict(report), [str(warning.message) for warning in caught]


# ----------------------------------------------------------------------------------------------------- pool side


@dataclass
class _Video:
    path: str
    jobs: dict[int, Job]
    """The live jobs (by id) and what each has finished with."""
    done: dict[int, tuple[int, DecodeReport, list[str]]] = field(default_factory=dict)
    chunks: dict[int, torch.Tensor] = field(default_factory=dict)
    deaths: int = 0
    part: bool = False
    """Its ranges cover only part of the video (another process has the rest): never decoded whole here."""


class _Worker:
    def __init__(self, context: mp.context.BaseContext, slots: torch.Tensor, mine: list[int],
                 settings: DecodeSettings) -> None:
        self.slots = mine
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, slots, mine, settings), daemon=True,
                                       name="gestures-decoder")
        self.process.start()
        child.close()
        self.jobs: list[int] = []
        self.started: set[int] = set()

    def send(self, *message: object) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, EOFError):  # died: the pool sees its sentinel
            self.conn.send(message)


class DecodePool:
    """``workers`` decoder processes with ``SLOTS_PER_WORKER`` shared-memory chunks each; use as a context manager
    and :meth:`run` batches of videos."""

    def __init__(self, workers: int, settings: DecodeSettings) -> None:
        if workers < 1:
            raise ValueError(f"A decode pool needs at least one worker, got {workers}.")
        self.settings = settings
        self.context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        shape = (workers * SLOTS_PER_WORKER, settings.chunk_frames, settings.size, settings.size, 3)
        self.slots = torch.empty(shape, dtype=torch.uint8).share_memory_()
        self.workers = [self._spawn(list(range(i * SLOTS_PER_WORKER, (i + 1) * SLOTS_PER_WORKER)))
                        for i in range(workers)]
        self.owner = {slot: worker for worker in self.workers for slot in worker.slots}

    def _spawn(self, mine: list[int]) -> _Worker:
        return _Worker(self.context, self.slots, mine, self.settings)

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self.workers:
            worker.send("stop")
        for worker in self.workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self.workers = []

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self.workers]

    def run(
        self,
        videos: Iterable[tuple[str | Path, list[tuple[int, FrameRange]] | None]],
        encode: Callable[[torch.Tensor, int, int], Callable[[], torch.Tensor]],
    ) -> Iterator[VideoResult]:
        """Features of each ``(path, ranges)`` (from :meth:`DecodeSettings.ranges`; None: whole), as each completes.
        Consecutive ranges that do not cover the whole video give that part's features (:class:`VideoResult`); a
        range of a part that cannot be decoded apart fails the part (the whole video is not decoded in its stead).

        ``encode(frames, n, stride)`` starts encoding the ``n`` snippets (one every ``stride`` frames) of uint8
        ``frames`` and returns a function giving their float32 CPU features; the frames may be reused once that
        function has returned (:meth:`gestures_hub.snippet_encoder.SnippetEncoder.submit`).
        """
        self._videos: dict[int, _Video] = {}
        self._job_video: dict[int, int] = {}
        self._pending: deque[Job] = deque()
        self._next_id = 0
        self.restarted: list[str] = []
        """Videos decoded whole because one of their ranges could not promise identical frames (damage)."""
        for index, (path, ranges) in enumerate(videos):
            part = bool(ranges) and (ranges[0][1].start > 0 or ranges[-1][1].stop is not None)
            parts = ranges if ranges and (len(ranges) > 1 or part) else [(0, None)]
            jobs = [self._job(index, str(path), first, span) for first, span in parts]
            self._videos[index] = _Video(str(path), {job.id: job for job in jobs}, part=part)
            self._pending.extend(jobs)
        self._in_flight: deque[tuple[int, int, int, int, Callable[[], torch.Tensor]]] = deque()
        in_flight = self._in_flight
        self._assign()
        while self._videos:
            ready = wait([w.conn for w in self.workers] + [w.process.sentinel for w in self.workers])
            for worker in list(self.workers):
                while worker in self.workers and worker.conn in ready and worker.conn.poll():
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        break  # died mid-message: its sentinel says so
                    yield from self._handle(worker, message, in_flight, encode)
                if worker.process.sentinel in ready and worker in self.workers and not worker.process.is_alive():
                    yield from self._died(worker)
            while in_flight:  # every chunk received is encoded before waiting for more
                yield from self._finish(in_flight.popleft())
            self._assign()

    def _job(self, video: int, path: str, first: int, span: FrameRange | None) -> Job:
        self._next_id += 1
        self._job_video[self._next_id] = video
        return Job(self._next_id, video, path, first, span)

    def _assign(self) -> None:
        for worker in sorted(self.workers, key=lambda w: len(w.jobs)):
            while self._pending and len(worker.jobs) < 2:
                job = self._pending.popleft()
                if job.video in self._videos and job.id in self._videos[job.video].jobs:
                    worker.jobs.append(job.id)
                    worker.send("job", job)

    def _live(self, job_id: int) -> _Video | None:
        video = self._videos.get(self._job_video.get(job_id, -1))
        return video if video is not None and job_id in video.jobs else None

    def _handle(self, worker: _Worker, message: tuple, in_flight: deque, encode: Callable) -> Iterator[VideoResult]:
        kind, job_id = message[0], message[1]
        if kind == "free":
            worker.send("free", job_id)  # a slot the worker did not need (``job_id`` is the slot)
        elif kind == "start":
            worker.started.add(job_id)
        elif kind == "chunk":
            _, _, slot, first, count, filled = message
            if self._live(job_id) is None:
                self._release(slot)
                return
            frames = self.slots[slot, : (count - 1) * self.settings.stride + self.settings.frames_per_snippet]
            in_flight.append((job_id, slot, first, count, encode(frames, count, self.settings.stride)))
            if len(in_flight) > 1:
                yield from self._finish(in_flight.popleft())
        else:
            if job_id in worker.jobs:  # (a cancelled job is no longer listed)
                worker.jobs.remove(job_id)
            worker.started.discard(job_id)
            while in_flight:  # the job's chunks come first
                yield from self._finish(in_flight.popleft())
            video = self._live(job_id)
            if video is None:
                return
            if kind == "done":
                total, report, caught = message[2:]
                video.done[job_id] = (total, DecodeReport(**report), caught)
                if len(video.done) == len(video.jobs):
                    yield self._complete(self._job_video[job_id])
            elif message[3] or len(video.jobs) == 1 or video.part:  # a whole decode (or a part) failed: so does it
                yield self._fail(self._job_video[job_id], message[2])
            else:  # a range could not be decoded on its own: decode the video whole
                self._restart_whole(self._job_video[job_id])

    def _finish(self, item: tuple[int, int, int, int, Callable[[], torch.Tensor]]) -> Iterator[VideoResult]:
        job_id, slot, first, count, result = item
        features = result()
        self._release(slot)
        video = self._live(job_id)
        if video is not None:
            video.chunks[first] = features
        return iter(())

    def _release(self, slot: int) -> None:
        self.owner[slot].send("free", slot)

    def _cancel(self, video: _Video) -> None:
        for worker in self.workers:
            for job_id in worker.jobs:
                if job_id in video.jobs:
                    worker.send("cancel", job_id)
            worker.jobs = [job_id for job_id in worker.jobs if job_id not in video.jobs]

    def _restart_whole(self, index: int) -> None:
        video = self._videos[index]
        self.restarted.append(video.path)
        self._cancel(video)
        job = self._job(index, video.path, 0, None)
        self._videos[index] = _Video(video.path, {job.id: job}, deaths=video.deaths)
        self._pending.appendleft(job)

    def _fail(self, index: int, message: str) -> VideoResult:
        self._cancel(self._videos[index])
        del self._videos[index]
        return VideoResult(index, error=message)

    def _complete(self, index: int) -> VideoResult:
        video = self._videos.pop(index)
        parts = [video.done[job_id] for job_id in sorted(video.jobs, key=lambda j: video.jobs[j].first_snippet)]
        total = sum(count for count, _, _ in parts)
        if not total:
            return VideoResult(index, error=str(too_short(video.path, self.settings.frames_per_snippet)))
        caught = [text for _, _, found in parts for text in found]
        report = parts[0][1] if len(parts) == 1 else merge_reports([part for _, part, _ in parts])
        if len(parts) > 1 and not video.part and (warning := damage_warning(report)) is not None:
            caught.append(str(warning))
        features = torch.cat([video.chunks[first] for first in sorted(video.chunks)]).numpy()
        if len(features) != total:
            raise RuntimeError(f"{video.path}: {len(features)} features for {total} snippets (a pool bug).")
        first = min(job.first_snippet for job in video.jobs.values())
        return VideoResult(index, features, snippet_times(first, total, self.settings), report, caught,
                           first_snippet=first)

    def _died(self, worker: _Worker) -> Iterator[VideoResult]:
        """Replace a dead worker; retry its started jobs once (fail their video the second time), requeue the rest."""
        while self._in_flight:  # the pool holds none of its slots when the replacement gets them
            yield from self._finish(self._in_flight.popleft())
        self.workers.remove(worker)
        worker.conn.close()
        replacement = self._spawn(worker.slots)
        for slot in worker.slots:
            self.owner[slot] = replacement
        self.workers.append(replacement)
        for job_id in reversed(worker.jobs):
            video = self._live(job_id)
            if video is None:
                continue
            if job_id in worker.started:
                video.deaths += 1
                if video.deaths > 1:
                    yield self._fail(self._job_video[job_id],
                                     died_message(video.path, worker.process.pid, worker.process.exitcode))
                    continue
            self._pending.appendleft(video.jobs[job_id])


__all__ = ["DecodePool", "DecodeSettings", "VideoResult", "auto_decode_workers", "auto_range_seconds",
           "chunk_snippets_for", "failure_message", "snippet_times"]
