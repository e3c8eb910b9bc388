"""The grid's fused LSTM steps: compiled where possible, eager (same math) where compiling fails or is switched off."""

from __future__ import annotations

import pytest
import torch

from gestures_hub import stacked_model
from gestures_hub.stacked_model import backward_step, forward_step, fused


def test_a_failing_compiler_falls_back_to_the_same_function_with_a_warning(monkeypatch):
    def broken_compile(function, **_):
        def run(*args):
            raise RuntimeError("no C++ compiler here\nsecond line")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.delenv("GESTURES_COMPILE", raising=False)
    monkeypatch.setattr(stacked_model, "_COMPILED", {})
    double = fused("double", lambda x: 2 * x)
    with pytest.warns(RuntimeWarning, match=r"torch.compile of double failed \(RuntimeError: no C\+\+ compiler "
                                            r"here\); running it eagerly \(slower\)\. Set GESTURES_COMPILE=0"):
        assert double(torch.ones(2)).tolist() == [2.0, 2.0]
    assert fused("double", None)(torch.ones(1)).tolist() == [2.0]  # no second attempt, no second warning


def test_gestures_compile_0_keeps_the_eager_function(monkeypatch):
    monkeypatch.setenv("GESTURES_COMPILE", "0")
    monkeypatch.setattr(stacked_model, "_COMPILED", {})
    assert fused("forward_step", forward_step) is forward_step


def test_compiled_steps_equal_eager_steps_and_the_backward_step_is_the_gradient(monkeypatch):
    monkeypatch.delenv("GESTURES_COMPILE", raising=False)
    monkeypatch.setattr(stacked_model, "_COMPILED", {})
    generator = torch.Generator().manual_seed(0)
    inputs, recurrent = (3 * torch.randn(3, 5, 16, generator=generator) for _ in range(2))
    cell, bias = torch.randn(3, 5, 4, generator=generator), torch.randn(3, 1, 16, generator=generator)
    compiled = fused("forward_step", forward_step)(inputs, recurrent, cell, bias)
    assert not isinstance(stacked_model._COMPILED["forward_step"], stacked_model._FirstCall)  # compiled, kept
    assert torch._dynamo.config.recompile_limit >= stacked_model.RECOMPILE_LIMIT  # no silent eager fallback
    for got, expected in zip(compiled, forward_step(inputs, recurrent, cell, bias), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    gates, new_cell, tanh_cell, low = compiled
    hidden = stacked_model.hidden_state(gates, tanh_cell)
    assert torch.equal(low, hidden)  # float32 products: the recurrent product's input is the hidden state
    i, f, o, g = (inputs + recurrent + bias).split(4, -1)
    torch.testing.assert_close(new_cell, torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g), atol=1e-6,
                               rtol=1e-6)
    torch.testing.assert_close(hidden, torch.sigmoid(o) * torch.tanh(new_cell), atol=1e-6, rtol=1e-6)
    # backward_step against autograd through the same step
    pre = (inputs + recurrent + bias).requires_grad_()
    cell_in = cell.clone().requires_grad_()
    out_gates, out_cell, out_tanh, _ = forward_step(pre, torch.zeros_like(pre), cell_in, torch.zeros_like(bias))
    out_hidden = stacked_model.hidden_state(out_gates, out_tanh)
    grad_hidden, grad_cell = torch.randn_like(out_hidden), torch.randn_like(out_cell)
    torch.autograd.backward([out_hidden, out_cell], [grad_hidden, grad_cell])
    steps = torch.full((3, 2, 5, 16), float("nan"))  # written into a view of a buffer of every step's gradients
    step_grads, previous_cell_grad = fused("backward_step", backward_step)(gates, cell, tanh_cell, grad_hidden,
                                                                           grad_cell, steps[:, 1])
    torch.testing.assert_close(step_grads, pre.grad, atol=1e-5, rtol=1e-5)
    assert torch.equal(steps[:, 1], step_grads)
    assert steps[:, 0].isnan().all()  # nothing written beside the view
    torch.testing.assert_close(previous_cell_grad, cell_in.grad, atol=1e-5, rtol=1e-5)


def _stack_and_loss(dtype):
    """A BLSTM stack of 3 models (6 features, hidden 4) with products in ``dtype``, and a loss closure on fixed data."""
    from gestures_hub import GesturesConfig, GesturesForVideoClassification

    torch.manual_seed(0)
    models = [GesturesForVideoClassification(GesturesConfig(encoder="none", feature_dim=6, hidden_size=4,
                                                            aggregation="blstm")) for _ in range(3)]
    stack = stacked_model.StackedClassifier(models, dtype)
    table = torch.randn(40, 6).to(dtype)
    rows = torch.randint(0, 40, (3, 5, 4), generator=torch.Generator().manual_seed(1))
    return stack, lambda: stack(table, rows).logsumexp(-1).sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stacked_adamw_is_torch_adamw_and_keeps_the_product_copies_in_step(dtype):
    """StackedAdamW on a stack whose products run in ``dtype`` (bfloat16: through copies of the LSTM matrices) gives
    the float32 weights torch.optim.AdamW gives on the same stack using the weights converted at each product."""
    mine, loss = _stack_and_loss(dtype)
    reference, reference_loss = _stack_and_loss(dtype)
    reference.dtype = torch.float32  # no copies: every product converts the float32 weights, as before copies existed
    optimizer = stacked_model.StackedAdamW(mine, lr=1e-2, weight_decay=1e-2)
    torch_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=1e-2)
    name = "gestures__aggregator__rnn__weight_ih_l0"
    for _ in range(4):
        loss().backward()
        reference_loss().backward()
        if dtype == torch.bfloat16:  # the gradient went to the copy, in bfloat16
            assert mine.params[name].grad is None and mine.product_weight(name).grad.dtype == torch.bfloat16
        optimizer.step()
        optimizer.zero_grad()
        torch_optimizer.step()
        torch_optimizer.zero_grad()
        for key, value in reference.params.items():
            assert mine.params[key].dtype == torch.float32
            torch.testing.assert_close(mine.params[key], value, atol=1e-6, rtol=1e-5)
        copy = mine.product_weight(name)
        assert copy.dtype == dtype and torch.equal(copy, mine.params[name].to(dtype))
    assert not torch.equal(mine.params[name], _stack_and_loss(dtype)[0].params[name])  # the weights did move
    # a weight changed outside the optimiser (e.g. the best epoch's loaded back) is copied again
    with torch.no_grad():
        mine.params[name].fill_(0.5)
    assert torch.equal(mine.product_weight(name), torch.full_like(mine.params[name], 0.5).to(dtype))
