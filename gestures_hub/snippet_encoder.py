"""The encoder's runtime for feature extraction: how a model's encoder runs here (device, autocast precision, memory
format, batch size, ``torch.compile``), chosen by :func:`choose_runtime`, and :class:`SnippetEncoder`, which runs it on
batches of snippets or on whole videos. Used by :mod:`gestures_hub.extract` (``gestures extract``), the benchmarks
and the demo model's training script.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .heap import release_free_heap
from .model import GesturesForVideoClassification, GesturesVideoProcessor
from .model.video_reader import normalisation
from .torchcodec_decode import stream_snippets

TRIM_EVERY = 32
"""Batches between two :func:`~gestures_hub.heap.release_free_heap` calls (about 20 s of work on a CPU)."""
CNN_ENCODERS = ("r2plus1d_34", "r2plus1d_tiny", "r2plus1d_18", "r3d_18", "mc3_18")


@dataclass(frozen=True)
class Runtime:
    """How the encoder runs: device, autocast dtype (None: float32), memory format, batch size, ``torch.compile``."""

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool
    batch_size: int
    compile: bool = False

    def describe(self) -> str:
        precision = "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")
        layout = "channels_last_3d" if self.channels_last else "contiguous"
        return f"{self.device.type}, {precision}, {layout}, batch {self.batch_size}{', compiled' * self.compile}"



def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA GPUs with bf16, CPUs with AVX-512 BF16/AMX (elsewhere
    bfloat16 is emulated and far slower than float32)."""
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else torch.ops.mkldnn._is_mkldnn_bf16_supported()


def auto_precision(device: torch.device) -> str:
    """The fastest faithful autocast precision on ``device``: ``bf16`` where it is native (:func:`native_bf16`),
    ``fp16`` on other GPUs, else ``fp32``."""
    return "bf16" if native_bf16(device) else "fp16" if device.type == "cuda" else "fp32"


COMPILE_MODES = ("auto", "on", "off")
COMPILE_COSINE = 0.9999
"""A compiled encoder is kept only if its features on the first batch are within this cosine of eager float32's."""


def auto_compile(device: torch.device) -> bool:
    """Whether ``--compile auto`` compiles the encoder on ``device``: on CUDA, where inductor fuses the convolutions'
    epilogues and removes launch overhead (the first batch checks it stays faithful, :attr:`SnippetEncoder.encode`);
    never on a CPU, where it was measured slower (r2plus1d_18 bf16 batch 1: 234 vs 108 ms a snippet, the demo encoder
    bf16 batch 4: 3.1 vs 2.6 ms, both after an 80 s compilation; interleaved runs on 2 loaded cores, torch 2.14)."""
    return device.type == "cuda"


def choose_runtime(
    encoder: str, device: str | None = None, precision: str = "auto", batch_size: int | None = None,
    compile: str = "off",
) -> Runtime:
    """The fastest faithful way to run ``encoder`` here, unless overridden.

    Autocast with :func:`auto_precision` (bfloat16 where the hardware computes it natively). CNN encoders use
    ``channels_last_3d``, faster on CPU. Batches: 32 snippets on a GPU; 8 on a CPU (``benchmarks/extract.py``
    compares them: r2plus1d_18 bf16 on 2 quiet cores, 7.4-8.3 video-s/s at batch 8, 7.2-8.1 at 4, 6.4-6.7 at 1).
    ``compile``: ``on``, ``off``, or ``auto`` (:func:`auto_compile`: on CUDA only).
    """
    resolved = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if precision == "auto":
        precision = auto_precision(resolved)
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}.")
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile must be auto, on or off, got {compile!r}.")
    default_batch = 32 if resolved.type == "cuda" else 8
    compiled = compile == "on" or compile == "auto" and auto_compile(resolved)
    return Runtime(resolved, dtypes[precision], encoder in CNN_ENCODERS, batch_size or default_batch, compiled)


def batch_for_memory(free_bytes: int, bytes_per_snippet: int, *, fraction: float = 0.5, cap: int = 512) -> int:
    """The largest batch (a multiple of 8, at least 1, at most ``cap``) whose activations take ``fraction`` of
    ``free_bytes`` of device memory at ``bytes_per_snippet`` each."""
    fits = int(fraction * free_bytes // max(1, bytes_per_snippet))
    return max(1, min(cap, fits // 8 * 8 or fits))


class SnippetEncoder:
    """Runs a model's encoder on batches of snippets with a :class:`Runtime`; returns float32 CPU features.

    On CUDA: cuDNN autotuning, and uint8 frames (:meth:`submit`) go through pinned buffers, copied to the device
    without blocking while the previous chunk computes; they are normalised on the device. ``decoder``: how
    :meth:`video` reads a file, ``"pyav"`` (the model's video processor) or ``"torchcodec"`` (on the encoder's device).
    """

    def __init__(self, model: GesturesForVideoClassification, runtime: Runtime, decoder: str = "pyav") -> None:
        self.config = model.config
        self.decoder = decoder
        self.batches = 0  # encoded so far: every TRIM_EVERY, the heap's free memory goes back to the system
        self.processor = GesturesVideoProcessor(model.config)
        self.runtime = runtime
        self.model = model.gestures.to(runtime.device).eval()
        if runtime.channels_last:
            self.model.to(memory_format=torch.channels_last_3d)
        self.encode = self._compiled_first if runtime.compile else self.model.encode_snippets
        self.cuda = runtime.device.type == "cuda"
        if self.cuda:
            torch.backends.cudnn.benchmark = True
        scale, shift = normalisation(model.config.image_mean, model.config.image_std)
        self.scale, self.shift = torch.from_numpy(scale).to(runtime.device), torch.from_numpy(shift).to(runtime.device)
        self.staging: list[torch.Tensor] = []

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        if self.batches % TRIM_EVERY == 0:
            release_free_heap()
        return self._encode(pixel_values.to(self.runtime.device, non_blocking=True)).float().cpu()

    def _encode(self, snippets: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> torch.Tensor:
        """Device features of device snippets ``(N, 3, T, H, W)`` (with ``encode``: that function, e.g. eager)."""
        if self.runtime.channels_last:
            snippets = snippets.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.runtime.device.type, dtype=self.runtime.dtype, enabled=self.runtime.dtype is not None):
            return (encode or self.encode)(snippets)

    def _compiled_first(self, snippets: torch.Tensor) -> torch.Tensor:
        """The first batch with ``torch.compile``: the compiled encoder is kept if its features are within
        ``COMPILE_COSINE`` of eager float32's, else (or if compiling fails) the eager one, with a warning."""
        compiled = torch.compile(self.model.encode_snippets)
        try:
            features = compiled(snippets)
        except Exception as error:  # noqa: BLE001 - any compiler failure (no C++ compiler, unsupported op): eager
            return self._fall_back(f"it failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})", snippets)
        with torch.autocast(self.runtime.device.type, enabled=False):
            reference = self.model.encode_snippets(snippets.float())
        cosine = torch.nn.functional.cosine_similarity(features.float(), reference, dim=1).min().item()
        if not cosine >= COMPILE_COSINE:
            return self._fall_back(f"its features are only within cosine {cosine:.6f} of float32's (at least "
                                   f"{COMPILE_COSINE} is needed)", snippets)
        self.encode = compiled
        return features

    def _fall_back(self, why: str, snippets: torch.Tensor) -> torch.Tensor:
        warnings.warn(f"torch.compile of the encoder is not used: {why}; the encoder runs eagerly.", stacklevel=3)
        self.runtime = replace(self.runtime, compile=False)
        self.encode = self.model.encode_snippets
        return self.encode(snippets)

    @torch.inference_mode()
    def submit(self, frames: torch.Tensor, count: int, stride: int) -> Callable[[], torch.Tensor]:
        """Start encoding ``count`` snippets, one every ``stride`` of the uint8 frames ``(n, H, W, 3)``; returns a
        function giving their float32 CPU features. ``frames`` may be reused once that function has returned."""
        if self.cuda:  # through a pinned buffer: the copy does not block, and is ordered before the compute
            size = frames.numel()
            fits = [index for index, buffer in enumerate(self.staging) if buffer.numel() >= size]
            buffer = self.staging.pop(fits[0]) if fits else torch.empty(size, dtype=torch.uint8, pin_memory=True)
            frames = buffer[:size].view(frames.shape).copy_(frames).to(self.runtime.device, non_blocking=True)
        # (rgb * scale) - shift in float32, as the reader's NumPy normalisation: the same values
        pixels = frames.permute(0, 3, 1, 2).float().mul_(self.scale).sub_(self.shift)
        index = (torch.arange(count, device=pixels.device)[:, None] * stride
                 + torch.arange(self.config.frames_per_snippet, device=pixels.device))
        snippets = pixels[index].transpose(1, 2)  # (count, 3, T, H, W)
        features = torch.cat([self._encode(batch) for batch in snippets.split(self.runtime.batch_size)]).float()
        if not self.cuda:
            return lambda: features
        host = torch.empty(features.shape, dtype=features.dtype, pin_memory=True).copy_(features, non_blocking=True)
        done = torch.cuda.Event()
        done.record()

        def result() -> torch.Tensor:
            done.synchronize()
            self.staging.append(buffer)
            return host

        return result

    def fit_batch_to_memory(self) -> None:
        """On CUDA, set the batch size from the free device memory and the activation memory of a probe batch."""
        if not self.cuda:
            return
        probe = 4
        shape = (probe, 3, self.config.frames_per_snippet, self.config.image_size, self.config.image_size)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with torch.inference_mode():
            self._encode(torch.zeros(shape, device=self.runtime.device), self.model.encode_snippets)  # not compiled
        per_snippet = (torch.cuda.max_memory_allocated() - before) // probe
        free, _ = torch.cuda.mem_get_info()
        self.runtime = replace(self.runtime, batch_size=batch_for_memory(free, per_snippet))

    def video(self, path: str | Path, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features ``(n_snippets, feature_dim)`` and start times (s) of one whole video, read by the model's video
        processor (or, with the torchcodec decoder, the same snippets from :func:`stream_snippets`)."""
        features, starts = [], []
        batches = self.processor.stream(path, stride=stride, batch_size=self.runtime.batch_size) if (
            self.decoder == "pyav") else stream_snippets(path, self.config, device=self.runtime.device,
                                                         stride=stride or self.processor.snippet_stride,
                                                         batch_size=self.runtime.batch_size)
        for batch in batches:
            features.append(self(batch.pixel_values))
            starts.append(batch.start_times)
        return torch.cat(features).numpy(), torch.cat(starts).numpy().astype(np.float32)


__all__ = ["Runtime", "SnippetEncoder", "auto_compile", "auto_precision", "batch_for_memory", "choose_runtime",
           "native_bf16"]
