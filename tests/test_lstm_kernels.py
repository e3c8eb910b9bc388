"""The grid's C++ LSTM kernels (bfloat16 products on CPUs with AMX) against the step-by-step path and float64."""

import functools
import os
import shutil
import warnings

import ninja
import pytest
import torch

from gestures_hub import lstm_kernels
from gestures_hub.stacked_model import StackedLSTM, Workspace, run_lstm

AMX = lstm_kernels.amx_bf16()


def lstm_case(steps: int, batch: int = 5, models: int = 3, dim: int = 32, hidden: int = 16):
    """Time-major bfloat16 inputs and float32 weights of ``models`` one-direction LSTMs (stacked layouts)."""
    torch.manual_seed(steps * 10 + batch)
    inputs = torch.randn(models, steps, batch, dim).bfloat16()
    weights = [torch.randn(models, *shape) * scale
               for shape, scale in (((4 * hidden, dim), 0.2), ((hidden, 4 * hidden), 0.3), ((1, 4 * hidden), 0.3))]
    # the products' operands as the stack uses them: the matrices in bfloat16, the biases in float32
    return inputs, [weights[0].bfloat16(), weights[1].bfloat16(), weights[2]]


def hidden_and_grads(inputs, weights, reverse, grad_hidden):
    leaves = [weight.clone().requires_grad_() for weight in weights]
    hidden = StackedLSTM.apply(inputs, *leaves, reverse, Workspace())
    hidden.backward(grad_hidden)
    return [hidden.detach().double(), *(leaf.grad.double() for leaf in leaves)]


def relative_error(got, truth):
    return ((got - truth).abs().max() / truth.abs().max().clamp_min(1e-12)).item()  # 0 where both are 0 (1 step)


@pytest.mark.parametrize("shape", [(1, 5, 32, 16), (2, 5, 32, 16), (7, 5, 32, 16), (16, 64, 64, 64)],
                         ids=["1-step", "2-steps", "7-steps", "grid-blstm-16"])
@pytest.mark.parametrize("reverse", [False, True])
def test_kernels_compute_the_lstm_and_its_gradients_at_least_as_well_as_the_steps(monkeypatch, reverse, shape):
    """Where this CPU has AMX the kernels run and, against float64 on the same bfloat16 operands, are as accurate as
    the step-by-step path (more: their recurrent products are not rounded to bfloat16); elsewhere the steps run.
    Shapes: steps, sequences, features, hidden size (the last: one model of the grid's BLSTM-16 stack)."""
    steps, batch, dim, hidden = shape
    inputs, weights = lstm_case(steps, batch=batch, dim=dim, hidden=hidden)
    grad_hidden = torch.randn(inputs.shape[0], inputs.shape[2], weights[1].shape[1])
    truth = hidden_and_grads(inputs.double(), [weight.double() for weight in weights], reverse, grad_hidden.double())
    assert run_lstm(inputs, *weights, reverse, Workspace())[2] is AMX
    kernels = hidden_and_grads(inputs, weights, reverse, grad_hidden)
    monkeypatch.setattr(lstm_kernels, "supports", lambda *args: False)
    assert run_lstm(inputs, *weights, reverse, Workspace())[2] is False
    steps_path = hidden_and_grads(inputs, weights, reverse, grad_hidden)
    for name, got, stepwise, expected in zip(("hidden", "grad_ih", "grad_hh", "grad_bias"), kernels, steps_path, truth,
                                             strict=True):
        assert got.shape == expected.shape
        assert relative_error(stepwise, expected) < 0.03, name
        assert relative_error(got, expected) < max(0.03, 1.5 * relative_error(stepwise, expected)), name
    if AMX:  # the kernels really ran (their exp is exp_u20, their recurrent products are not rounded to bfloat16)
        assert not torch.equal(kernels[0], steps_path[0])


def uncached_extension(monkeypatch):
    """A fresh :func:`lstm_kernels.extension` for one test (the module's cached one comes back after it)."""
    monkeypatch.setattr(lstm_kernels, "extension", functools.cache(lstm_kernels.extension.__wrapped__))


def test_a_failed_build_warns_and_leaves_the_steps(monkeypatch):
    import torch.utils.cpp_extension

    def broken(*args, **kwargs):
        raise RuntimeError("Error building extension 'gestures_hub_lstm_kernels': [1/2] c++ -O3 ...\n"
                           "lstm_kernels.cpp:9:10: fatal error: fbgemm/Utils.h: No such file or directory\n"
                           "ninja: build stopped: subcommand failed.")

    monkeypatch.setattr(lstm_kernels, "amx_bf16", lambda: True)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken)
    uncached_extension(monkeypatch)
    expected = (r"Building the C\+\+ LSTM kernels failed \(RuntimeError: lstm_kernels.cpp:9:10: fatal error: "
                r"fbgemm/Utils.h: No such file or directory\); the grid runs its step-by-step LSTM")
    with pytest.warns(RuntimeWarning, match=expected):
        assert lstm_kernels.extension() is None
    inputs, weights = lstm_case(3)
    assert not lstm_kernels.supports(inputs, 16)
    assert run_lstm(inputs, *weights, False, Workspace())[2] is False


def test_gestures_compile_0_builds_nothing(monkeypatch):
    import torch.utils.cpp_extension

    def forbidden(*args, **kwargs):
        raise AssertionError("built although GESTURES_COMPILE=0")

    monkeypatch.setenv("GESTURES_COMPILE", "0")
    monkeypatch.setattr(lstm_kernels, "amx_bf16", lambda: True)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", forbidden)
    uncached_extension(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lstm_kernels.extension() is None


def test_the_ninja_package_is_put_on_path_for_the_build_only(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ninja there
    with lstm_kernels._ninja_on_path():
        found = shutil.which("ninja")
    assert found is not None and found.startswith(ninja.BIN_DIR)
    assert os.environ["PATH"] == str(tmp_path)


def test_the_float32_products_and_small_hidden_states_keep_the_steps():
    inputs, weights = lstm_case(3)
    assert not lstm_kernels.supports(inputs.float(), 16)
    assert not lstm_kernels.supports(inputs, 12)
    assert run_lstm(inputs.float(), weights[0].float(), weights[1].float(), weights[2], False, Workspace())[2] is False
