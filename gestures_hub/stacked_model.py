"""The grid's batched models: ``M`` one-layer GESTURES classifiers (mean, LSTM or BLSTM) as stacked tensors.

All models of one stack share an aggregation and a number of segments; their weights carry a leading model dimension,
so one batched matrix product computes all of their recurrent steps. :class:`StackedLSTM` has a hand-written backward
pass that leaves only a few elementwise operations and one small product per time step (on CPUs with AMX, both passes
run as one C++ call per direction instead, :mod:`gestures_hub.lstm_kernels`); :class:`StackedAdamW` updates the stack
in one compiled pass per tensor. Used by :mod:`gestures_hub.reproduce`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import lstm_kernels
from .arguments import GRID_AGGREGATIONS
from .model.modeling_gestures import GesturesForVideoClassification


def lstm_directions(aggregation: str) -> tuple[str, ...]:
    return {"mean": (), "lstm": ("",), "blstm": ("", "_reverse")}[aggregation]


def _gate_order(hidden_size: int) -> torch.Tensor:
    """PyTorch's LSTM gate rows (i, f, g, o) reordered to (i, f, o, g): one sigmoid, then one tanh."""
    i, f, g, o = torch.arange(4 * hidden_size).view(4, hidden_size)
    return torch.cat([i, f, o, g])


class Workspace:
    """Large buffers reused from batch to batch, by name. A fresh CPU allocation above glibc's mmap threshold (32 MiB at
    most) is new memory every time, and the page faults of its first writes cost more than the LSTM's elementwise
    work on it."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def empty(self, name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised ``shape`` tensor in buffer ``name`` (grown when too small)."""
        size = math.prod(shape)
        buffer = self._buffers.get((name, dtype))
        if buffer is None or buffer.numel() < size or buffer.device != device:
            buffer = self._buffers[name, dtype] = torch.empty(size, dtype=dtype, device=device)
        return buffer[:size].view(*shape)


class StackedClassifier(nn.Module):
    """``M`` feature-input GESTURES classifiers (mean, LSTM or BLSTM, one layer, no dropout) as stacked tensors.

    Parameters are named after :class:`~gestures_hub.GesturesForVideoClassification`'s, with a leading model
    dimension; the LSTM's input matrices keep PyTorch's layout ``(4H, D)`` (their gradients' products read their inputs
    fastest that way), the other matrices are stored transposed (inputs on the left); LSTM gates are stored as
    (i, f, o, g). They stay float32; with a lower ``dtype`` for the LSTM's matrix products (bfloat16), the LSTM
    matrices are used through copies in that dtype (:meth:`product_weight`), which receive the products' gradients in
    that dtype and which :class:`StackedAdamW` rewrites as it updates the weights: no per-step conversion passes over
    the largest tensors.
    """

    def __init__(self, models: Sequence[GesturesForVideoClassification], dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.dtype = dtype
        self._copies: dict[str, tuple[int, torch.Tensor]] = {}  # name: (the weight's version when copied, the copy)
        config = models[0].config
        if config.aggregation not in GRID_AGGREGATIONS or config.num_layers != 1 or config.dropout:
            raise ValueError("StackedClassifier supports one-layer mean/lstm/blstm classifiers without dropout.")
        self.aggregation, self.hidden_size = config.aggregation, config.hidden_size
        self.workspace = Workspace()
        self.params = nn.ParameterDict({
            _stacked_name(name): nn.Parameter(torch.stack([self._to_stacked(name, m.state_dict()[name])
                                                           for m in models]))
            for name in models[0].state_dict()
        })

    def _to_stacked(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        if ".rnn." in name:
            tensor = tensor[_gate_order(self.hidden_size)]
        if _is_bias(name):
            return tensor[None].clone()
        return tensor.clone() if _is_input_weight(name) else tensor.T.contiguous()

    def export(self, index: int) -> dict[str, torch.Tensor]:
        """The state dict of model ``index`` in :class:`GesturesForVideoClassification`'s layout."""
        state = {}
        for stacked, tensor in self.params.items():
            name = stacked.replace("__", ".")
            if _is_bias(name):
                tensor = tensor[index, 0]
            else:
                tensor = tensor[index] if _is_input_weight(name) else tensor[index].T
            if ".rnn." in name:
                tensor = tensor[torch.argsort(_gate_order(self.hidden_size))]
            state[name] = tensor.detach().contiguous().clone()
        return state

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def forward(self, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Logits ``(M, B, 2)`` of equally long snippet sequences ``table[rows]``: ``rows`` ``(M, B, T)`` are positions
        in the ``(N, D)`` feature table. LSTM matrix products run in the table's dtype (float32 or bfloat16, with
        float32 weights and everything else in float32); mean pooling needs a float32 table."""
        models, batch, steps = rows.shape
        if self.aggregation == "mean":
            pooled = F.embedding_bag(rows.reshape(-1, steps), table, mode="mean").view(models, batch, -1)
        else:
            inputs = self.workspace.empty("inputs", (models, steps, batch, table.shape[1]), table.dtype, table.device)
            torch.index_select(table, 0, rows.transpose(1, 2).flatten(), out=inputs.view(-1, table.shape[1]))
            pooled = torch.cat([self._lstm(inputs, suffix) for suffix in lstm_directions(self.aggregation)], dim=-1)
        return self.classify(pooled)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits ``(M, B, 2)`` of each model's classifier on its float32 ``(M, B, F)`` seizure representations."""
        return torch.baddbmm(self.params["classifier__bias"], pooled, self.params["classifier__weight"])

    def lstm_weights(self, suffix: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input weights, recurrent weights (both in the products' dtype, :meth:`product_weight`) and summed float32
        biases of one LSTM direction (``""`` or ``"_reverse"``)."""
        prefix = "gestures__aggregator__rnn__"
        return (self.product_weight(f"{prefix}weight_ih_l0{suffix}"),
                self.product_weight(f"{prefix}weight_hh_l0{suffix}"),
                self.params[f"{prefix}bias_ih_l0{suffix}"] + self.params[f"{prefix}bias_hh_l0{suffix}"])

    def product_weight(self, name: str) -> torch.Tensor:
        """Weight ``name`` in the products' dtype: the parameter itself, or its copy in ``dtype``, a leaf tensor that
        autograd gives its gradient to. The copy is made again whenever the parameter changed other than through
        :class:`StackedAdamW` (e.g. loading the best epoch's weights)."""
        weight = self.params[name]
        if weight.dtype == self.dtype:
            return weight
        version, copy = self._copies.get(name, (-1, None))
        if version != weight._version or copy.device != weight.device:
            copy = weight.detach().to(self.dtype).requires_grad_()
            self._copies[name] = (weight._version, copy)
        return copy

    def product_copies(self) -> dict[str, torch.Tensor]:
        """The current copies in the products' dtype, by parameter name (for :class:`StackedAdamW`)."""
        return {name: self.product_weight(name) for name in self._copies}

    def copies_written(self, name: str) -> None:
        """The copy of ``name`` was rewritten with the parameter's new values (by :class:`StackedAdamW`)."""
        self._copies[name] = (self.params[name]._version, self._copies[name][1])

    def _lstm(self, inputs: torch.Tensor, suffix: str) -> torch.Tensor:
        weights = self.lstm_weights(suffix)
        if torch.is_grad_enabled():
            return StackedLSTM.apply(inputs, *weights, bool(suffix), self.workspace)
        return run_lstm(inputs, *weights, bool(suffix), self.workspace, keep=False)[0]


def forward_step(inputs: torch.Tensor, recurrent: torch.Tensor, cell: torch.Tensor,
                 bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One LSTM step's elementwise work for stacked models: from the input and recurrent parts of the pre-activations
    ``(M, B, 4H)`` (gates i, f, o, g; in the matrix products' dtype), the cell state ``(M, B, H)`` before the step
    (zeros for the first) and the biases ``(M, 1, 4H)`` (added here, not in the input product: a product with a
    bias first copies the bias into its whole output), the gate activations ``(M, B, 4H)``, the new cell state and its
    tanh, all in the cell's dtype (float32), and the hidden state in the recurrent part's dtype, for the next recurrent
    product (:func:`hidden_state` gives it in float32 where needed: not written at every step). tanh is computed as
    ``2 sigmoid(2x) - 1`` (one transcendental function for all gates: compiled, faster)."""
    pre = (inputs.to(cell.dtype) + recurrent.to(cell.dtype) + bias).unflatten(-1, (4, -1))
    scale = torch.tensor([1.0, 1.0, 1.0, 2.0], dtype=cell.dtype, device=cell.device)[:, None]
    gates = torch.sigmoid(pre * scale) * scale - (scale - 1)
    in_gate, forget_gate, out_gate, candidate = gates.unbind(-2)
    new_cell = in_gate * candidate + forget_gate * cell
    tanh_cell = 2 * torch.sigmoid(2 * new_cell) - 1
    return gates.flatten(-2), new_cell, tanh_cell, (out_gate * tanh_cell).to(recurrent.dtype)


def hidden_state(gates: torch.Tensor, tanh_cell: torch.Tensor) -> torch.Tensor:
    """The hidden state (float32) from a step's :func:`forward_step` gate activations and cell tanh."""
    return gates.unflatten(-1, (4, -1))[..., 2, :] * tanh_cell


def input_gates(inputs: torch.Tensor, weight_ih: torch.Tensor, reverse: bool, workspace: Workspace) -> torch.Tensor:
    """The input part of the pre-activations of time-major ``inputs`` ``(M, T, B, D)`` (without the biases), ``(M, T,
    B, 4H)`` in the inputs' dtype (bfloat16 products accumulate in float32 and are rounded once, as autocast's), in
    ``workspace``'s buffer of this direction."""
    models, steps, batch, dim = inputs.shape
    out = workspace.empty(f"gates{int(reverse)}", (models, steps, batch, weight_ih.shape[1]), inputs.dtype,
                          inputs.device)
    return torch.bmm(inputs.reshape(models, steps * batch, dim), weight_ih.to(inputs.dtype).transpose(1, 2),
                     out=out.view(models, steps * batch, -1)).view(out.shape)


def lstm_forward(inputs: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias: torch.Tensor,
                 reverse: bool = False, keep: bool = False,
                 workspace: Workspace | None = None) -> tuple[torch.Tensor, list[tuple[torch.Tensor, ...]]]:
    """Final hidden states ``(M, B, H)`` of one LSTM direction over time-major ``inputs`` ``(M, T, B, D)`` (matrix
    products in the inputs' dtype, everything else in the biases' (float32)); with ``keep``, also every step's
    :func:`forward_step` outputs, in time order. The input gates go to ``workspace`` (one buffer per direction)."""
    models, steps, batch, _ = inputs.shape
    gates = input_gates(inputs, weight_ih, reverse, workspace or Workspace())
    weight_hh = weight_hh.to(inputs.dtype)
    cell = torch.zeros(models, batch, weight_hh.shape[1], dtype=bias.dtype, device=inputs.device)
    recurrent = torch.zeros_like(gates[:, 0])
    saved = [()] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for number, step in enumerate(order):
        outputs = fused("forward_step", forward_step)(gates[:, step], recurrent, cell, bias)
        cell, low = outputs[1], outputs[3]
        if keep:
            saved[step] = outputs
        if number < steps - 1:
            recurrent = torch.bmm(low, weight_hh)
    return hidden_state(outputs[0], outputs[2]), saved


def backward_step(gates: torch.Tensor, previous_cell: torch.Tensor, tanh_cell: torch.Tensor, grad_hidden: torch.Tensor,
                  grad_cell: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the LSTM's backward pass: from the step's gate activations ``(M, B, 4H)`` (i, f, o, g), the cell
    state before it, the tanh of the cell state after it and the gradients of its hidden and cell states, the
    pre-activation gradients ``(M, B, 4H)`` in the dtype of ``out`` (the recurrent and weight products'), both written
    into ``out`` (compiled, the kernel stores them there directly, e.g. into a view of every step's buffer) and
    returned contiguous (for the recurrent product: a product copies a strided view first), and the gradient of the
    previous cell state. Elementwise only: :func:`fused` compiles it into one loop."""
    in_gate, forget_gate, out_gate, candidate = gates.unflatten(-1, (4, -1)).unbind(-2)
    grad_hidden = grad_hidden.to(tanh_cell.dtype)
    cell = grad_cell + grad_hidden * out_gate * (1 - tanh_cell * tanh_cell)
    grads = torch.stack([cell * candidate * in_gate * (1 - in_gate),
                         cell * previous_cell * forget_gate * (1 - forget_gate),
                         grad_hidden * tanh_cell * out_gate * (1 - out_gate),
                         cell * in_gate * (1 - candidate * candidate)], dim=-2)
    grads = grads.flatten(-2).to(out.dtype)
    out.copy_(grads)
    return grads, cell * forget_gate


_COMPILED: dict[str, Any] = {}
RECOMPILE_LIMIT = 64


def fused(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (elementwise work: :func:`forward_step`, :func:`backward_step`) compiled by ``torch.compile``, once
    per process for all shapes: inductor fuses it into one pass over memory, 2-3x faster than eager on a CPU. Eager
    where compiling fails (e.g. no C++ compiler: with a warning) or with ``GESTURES_COMPILE=0``: the same math."""
    if name not in _COMPILED:
        _COMPILED[name] = function if os.environ.get("GESTURES_COMPILE", "1") == "0" else _FirstCall(name, function)
    return _COMPILED[name]


class _FirstCall:
    """Compile on the first call; fall back to the eager function if that fails."""

    def __init__(self, name: str, function: Callable[..., Any]) -> None:
        self.name, self.function = name, function

    def __call__(self, *args: Any) -> Any:
        lstm_kernels.quiet_toolchain_probe()
        # A grid worker meets more than dynamo's default 8 variants of a step (sizes 1, strides of dense evaluation's
        # shrinking slices, one set per stack): past the limit it would silently run them eagerly, 2-3x slower.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        compiled = torch.compile(self.function, dynamic=True)
        try:
            result = compiled(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure: the eager function is the same math
            message = str(error).splitlines()[0] if str(error) else ""
            warnings.warn(f"torch.compile of {self.name} failed ({type(error).__name__}: {message}); running it "
                          "eagerly (slower). Set GESTURES_COMPILE=0 to skip compiling.", RuntimeWarning, stacklevel=2)
            _COMPILED[self.name] = self.function
            return self.function(*args)
        _COMPILED[self.name] = compiled
        return result


class StackedLSTM(torch.autograd.Function):
    """:func:`lstm_forward` with a hand-written backward pass: one fused elementwise step (:func:`backward_step`) and
    one small product per time step; the weight gradients of all steps come from one batched product each. Where
    :func:`gestures_hub.lstm_kernels.supports` the inputs, both passes run as one C++ call per direction instead.
    Inputs get no gradient."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias: torch.Tensor,
                reverse: bool, workspace: Workspace | None = None) -> torch.Tensor:
        workspace = workspace or Workspace()
        hidden, saved, ctx.kernels = run_lstm(inputs, weight_ih, weight_hh, bias, reverse, workspace)
        ctx.save_for_backward(inputs, weight_hh, *saved)
        ctx.reverse, ctx.workspace, ctx.dtypes = reverse, workspace, (weight_ih.dtype, bias.dtype)
        return hidden

    @staticmethod
    def backward(ctx, grad_hidden: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inputs, weight_hh, *saved = ctx.saved_tensors
        if ctx.kernels:
            grads = lstm_kernels.backward(inputs, saved, weight_hh, grad_hidden, ctx.reverse, ctx.workspace)
        else:
            grads = _steps_backward(inputs, weight_hh, saved, grad_hidden, ctx.reverse, ctx.workspace)
        grad_ih, grad_hh, grad_bias = grads
        # in the weights' dtypes: no conversion for weights used through copies in the products' dtype
        ih_dtype, bias_dtype = ctx.dtypes
        return None, grad_ih.to(ih_dtype), grad_hh.to(weight_hh.dtype), grad_bias.to(bias_dtype), None, None


def run_lstm(inputs: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias: torch.Tensor,
             reverse: bool, workspace: Workspace, keep: bool = True) -> tuple[torch.Tensor, list[torch.Tensor], bool]:
    """Final hidden states of one direction (:func:`lstm_forward`), what its backward pass needs (with ``keep``; the
    C++ kernels always write it, into ``workspace``), and whether those kernels computed them
    (:mod:`gestures_hub.lstm_kernels`)."""
    if lstm_kernels.supports(inputs, weight_hh.shape[1]):
        pre = input_gates(inputs, weight_ih, reverse, workspace)
        hidden, saved = lstm_kernels.forward(pre, weight_hh, bias, reverse, workspace)
        return hidden, list(saved), True
    hidden, steps = lstm_forward(inputs, weight_ih, weight_hh, bias, reverse, keep=keep, workspace=workspace)
    return hidden, [tensor for step in steps for tensor in step], False


def _steps_backward(inputs: torch.Tensor, weight_hh: torch.Tensor, saved: list[torch.Tensor],
                    grad_hidden: torch.Tensor, reverse: bool,
                    workspace: Workspace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:class:`StackedLSTM`'s backward pass step by step, from :func:`lstm_forward`'s kept outputs ``saved``."""
    gates, cells, tanh_cells, hiddens = (saved[part::4] for part in range(4))
    models, steps, batch, _ = inputs.shape
    low_dtype = inputs.dtype
    weight_hh_t = weight_hh.to(low_dtype).transpose(1, 2)
    # Step t's recurrent inputs are the states of the step before it in the forward order (zeros for the first).
    first, shift = (steps - 1, 1) if reverse else (0, -1)
    low = workspace.empty("grads", (models, steps, batch, gates[0].shape[-1]), low_dtype, inputs.device)
    zeros = torch.zeros_like(cells[0])
    grad_h, grad_c = grad_hidden, zeros
    for step in range(steps) if reverse else range(steps - 1, -1, -1):
        previous_cell = zeros if step == first else cells[step + shift]
        step_grads, grad_c = fused("backward_step", backward_step)(gates[step], previous_cell, tanh_cells[step],
                                                                    grad_h, grad_c, low[:, step])
        if step != first:
            grad_h = torch.bmm(step_grads, weight_hh_t)
    flat = low.view(models, steps * batch, -1)
    grad_ih = torch.bmm(flat.transpose(1, 2), inputs.reshape(models, steps * batch, -1))
    # every step's recurrent input in time order, zeros for the first step (contiguous: no copy inside bmm)
    nothing = [torch.zeros_like(hiddens[0])]
    previous = torch.stack([*hiddens[1:], *nothing] if reverse else [*nothing, *hiddens[:-1]], 1)
    grad_hh = torch.bmm(previous.view(models, steps * batch, -1).transpose(1, 2), flat)
    ones = torch.ones(models, 1, steps * batch, dtype=low_dtype, device=inputs.device)
    grad_bias = torch.bmm(ones, flat)  # a product, not sum(dtype=float32), which would copy the whole tensor
    return grad_ih, grad_hh, grad_bias


def adamw_update(weight: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                 scalars: torch.Tensor, copy: torch.Tensor | None = None) -> None:
    """One AdamW step of ``weight`` in place, as ``torch.optim.AdamW``'s (decoupled weight decay), from ``grad`` (any
    float dtype); writes the new values into ``copy`` too (the weight in the products' dtype). ``scalars``: the decay
    factor ``1 - lr * weight_decay``, ``1 - beta1``, ``beta2``, ``1 - beta2``, ``eps``, the step size
    ``lr / (1 - beta1 ** t)`` and ``sqrt(1 - beta2 ** t)``, as a tensor (a changing Python float would recompile)."""
    decay, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, correction2_sqrt = scalars.unbind()
    grad = grad.to(weight.dtype)
    weight.mul_(decay)
    exp_avg.lerp_(grad, one_minus_beta1)
    exp_avg_sq.mul_(beta2).add_(one_minus_beta2 * grad * grad)
    # one division per element: AdamW's sqrt(v) / correction2_sqrt as a product by the reciprocal (a rounding apart)
    weight.sub_(step_size * exp_avg / (exp_avg_sq.sqrt() * (1 / correction2_sqrt) + eps))
    if copy is not None:
        copy.copy_(weight)


class StackedAdamW:
    """``torch.optim.AdamW`` for a :class:`StackedClassifier`: one :func:`adamw_update` pass per tensor (compiled by
    :func:`fused`), which reads the gradient of a weight used through a lower-precision copy from that copy and
    rewrites the copy. The float32 weights and AdamW's states follow AdamW's update exactly (the bfloat16 gradients
    are what the float32 ones would be, converted); a model-stacked optimiser is elementwise, so each model is
    updated as if alone."""

    def __init__(self, stack: StackedClassifier, lr: float, weight_decay: float = 1e-2,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.stack, self.lr, self.weight_decay, self.betas, self.eps = stack, lr, weight_decay, betas, eps
        self.steps = 0
        self.state = {name: (torch.zeros_like(weight), torch.zeros_like(weight))
                      for name, weight in stack.params.items()}

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        values = [1 - self.lr * self.weight_decay, 1 - beta1, beta2, 1 - beta2, self.eps,
                  self.lr / (1 - beta1 ** self.steps), math.sqrt(1 - beta2 ** self.steps)]
        copies = self.stack.product_copies()
        scalars = None
        for name, weight in self.stack.params.items():
            copy = copies.get(name)
            grad = weight.grad if copy is None else copy.grad
            if grad is None:
                continue
            if scalars is None:  # all parameters are float32 on one device
                scalars = torch.tensor(values, dtype=weight.dtype, device=weight.device)
            fused("adamw_update", adamw_update)(weight, grad, *self.state[name], scalars, copy)
            if copy is not None:
                self.stack.copies_written(name)

    def zero_grad(self) -> None:
        for tensor in (*self.stack.params.values(), *self.stack.product_copies().values()):
            tensor.grad = None


def _is_input_weight(name: str) -> bool:
    return ".weight_ih" in name


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("bias")


def _stacked_name(name: str) -> str:
    return name.replace(".", "__")
