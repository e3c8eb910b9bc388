"""The grid's LSTM recurrence in C++ (``lstm_kernels.cpp``) for bfloat16 products on CPUs with AMX.

One call runs a direction's whole recurrence, one model at a time: a model's gates and recurrent matrix stay in the
core's caches from step to step, the recurrent products are oneDNN brgemm micro-kernels (float32 accumulation, not
rounded to bfloat16 before the gates as the step-by-step path rounds them), and the backward pass writes the
pre-activation gradients transposed, the layout the weight gradients' products read fastest. In the 400-epoch grid
benchmark on 2 cores with AMX, a BLSTM-16 stack's epoch took 1.04 CPU s instead of 1.40 (the whole grid 869 s instead
of 1014). Built once per machine with ``torch.utils.cpp_extension`` (g++ and ninja, about 30 s, cached under
``TORCH_EXTENSIONS_DIR``); where that fails, or elsewhere, or with ``GESTURES_COMPILE=0``,
:class:`~gestures_hub.stacked_model.StackedLSTM` runs its compiled Python steps instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .stacked_model import Workspace

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("lstm_kernels.cpp")
FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mfma",
         "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]


def amx_bf16() -> bool:
    """Whether this CPU has what the kernels use: AVX-512 BF16 and AMX tiles (oneDNN's bfloat16 brgemm)."""
    return bool(torch.cpu._is_avx512_bf16_supported() and torch.cpu._is_amx_tile_supported())


@functools.cache
def extension() -> ModuleType | None:
    """The compiled kernels, or None: not this CPU, ``GESTURES_COMPILE=0``, or the build failed (with a warning)."""
    if os.environ.get("GESTURES_COMPILE", "1") == "0" or not amx_bf16():
        return None
    quiet_toolchain_probe()  # before the import: it probes then
    from torch.utils.cpp_extension import load

    logger.info("Loading the grid's LSTM kernels (built on first use, about 30 s, then cached)")
    try:
        with _ninja_on_path():
            return load("gestures_hub_lstm_kernels", sources=[str(SOURCE)], extra_cflags=FLAGS)
    except Exception as error:  # noqa: BLE001 - any build failure: the step-by-step path is the same model
        lines = str(error).strip().splitlines() or [""]
        message = next((line.strip() for line in lines if "error:" in line), lines[-1])  # the compiler's, if any
        warnings.warn(f"Building the C++ LSTM kernels failed ({type(error).__name__}: {message}); the grid runs its "
                      "step-by-step LSTM instead (slower). Set GESTURES_COMPILE=0 to skip compiling.", RuntimeWarning,
                      stacklevel=2)
        return None


def quiet_toolchain_probe() -> None:
    """torch's C++ toolchain probe (inductor's and the extension builder's) warns on every CPU-only machine that there
    is no CUDA runtime: not news here."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """torch's extension builder runs ``ninja`` from PATH: add the ninja package's binary when PATH has none."""
    path = os.environ.get("PATH", "")
    if shutil.which("ninja") is None:
        with contextlib.suppress(ImportError):
            import ninja

            os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, path])
    try:
        yield
    finally:
        os.environ["PATH"] = path


def supports(inputs: torch.Tensor, hidden_size: int) -> bool:
    """Whether the kernels run an LSTM on ``inputs`` (bfloat16 on a CPU with them) with this hidden size."""
    return (inputs.dtype == torch.bfloat16 and inputs.device.type == "cpu" and hidden_size % 16 == 0
            and extension() is not None)


def forward(pre: torch.Tensor, weight_hh: torch.Tensor, bias: torch.Tensor, reverse: bool,
            workspace: Workspace) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Final hidden states ``(M, B, H)`` (float32) of one direction from the input parts of its pre-activations ``pre``
    ``(M, T, B, 4H)`` (bfloat16), its recurrent matrices ``(M, H, 4H)`` and summed biases ``(M, 1, 4H)``; and what
    :func:`backward` needs, in ``workspace`` buffers: every step's gates ``(M, T, B, 4H)``, cell states and their tanh
    ``(M, T, B, H)`` (float32) and recurrent inputs (bfloat16: the previous step's hidden state, zeros for the
    first)."""
    models, steps, batch, width = pre.shape
    states = (models, steps, batch, width // 4)
    suffix = int(reverse)
    saved = (workspace.empty(f"kernel_gates{suffix}", pre.shape, torch.float32, pre.device),
             workspace.empty(f"kernel_cells{suffix}", states, torch.float32, pre.device),
             workspace.empty(f"kernel_tanhs{suffix}", states, torch.float32, pre.device),
             workspace.empty(f"kernel_recurrent{suffix}", states, torch.bfloat16, pre.device))
    hidden = extension().forward(pre, weight_hh.to(torch.bfloat16).contiguous(), bias[:, 0].float().contiguous(),
                                 reverse, *saved)
    return hidden, saved


def backward(inputs: torch.Tensor, saved: tuple[torch.Tensor, ...], weight_hh: torch.Tensor,
             grad_hidden: torch.Tensor, reverse: bool,
             workspace: Workspace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of one direction's input weights ``(M, 4H, D)`` and recurrent weights ``(M, H, 4H)`` (bfloat16) and of
    its biases ``(M, 1, 4H)`` (float32), from its time-major ``inputs`` ``(M, T, B, D)``, :func:`forward`'s ``saved``
    tensors and the gradient of its final hidden states ``(M, B, H)``."""
    gates, cells, tanhs, recurrent_inputs = saved
    models, steps, batch, width = gates.shape
    grads = workspace.empty("kernel_grads", (models, width, steps * batch), torch.bfloat16, inputs.device)
    grad_bias = extension().backward(gates, cells, tanhs, grad_hidden.float().contiguous(),
                                     weight_hh.to(torch.bfloat16).contiguous(), reverse, grads)
    grad_ih = torch.bmm(grads, inputs.view(models, steps * batch, -1))
    grad_hh = torch.bmm(grads, recurrent_inputs.view(models, steps * batch, -1)).transpose(1, 2)
    return grad_ih, grad_hh.contiguous(), grad_bias[:, None]
