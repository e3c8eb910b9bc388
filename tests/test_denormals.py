"""Training flushes denormal floats to zero (x86 computes on them up to 100x slower), and only meanwhile."""

import pytest
import torch
from helpers import noisy_dataset

from gestures_hub import reproduce as reproduce_module
from gestures_hub import train as train_module
from gestures_hub.denormals import flushed_denormals
from gestures_hub.reproduce import ReproduceArguments, load_bank, plan_stacks, train_stack
from gestures_hub.train import TrainingArguments, train

pytestmark = pytest.mark.usefixtures("one_thread")

FLUSHES = torch.set_flush_denormal(False)  # whether this CPU can flush them (x86); False is the default anyway


def denormal_survives() -> bool:
    """Whether 1e-39, below float32's smallest normal number (1.18e-38), survives a product."""
    return (torch.tensor([1e-39]) * 2).item() != 0


def test_denormals_are_flushed_inside_only_and_blocks_nest():
    assert denormal_survives()
    with flushed_denormals():
        assert denormal_survives() is not FLUSHES
        with flushed_denormals():
            assert denormal_survives() is not FLUSHES
        assert denormal_survives() is not FLUSHES  # leaving the inner block keeps the outer one's flushing
    assert denormal_survives()


def test_denormals_come_back_after_an_error():
    with pytest.raises(RuntimeError, match="boom"), flushed_denormals():
        raise RuntimeError("boom")
    assert denormal_survives()


def test_environment_variable_keeps_denormals(monkeypatch):
    monkeypatch.setenv("GESTURES_FLUSH_DENORMALS", "0")
    with flushed_denormals():
        assert denormal_survives()


def recording(module, name, monkeypatch) -> list[bool]:
    """Replace ``module.name`` by a wrapper that records, at every call, whether denormals survive."""
    seen, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        seen.append(denormal_survives())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return seen


def test_gestures_train_epochs_flush_denormals(tmp_path, monkeypatch):
    seen = recording(train_module, "train_epoch", monkeypatch)
    train(TrainingArguments(features=noisy_dataset(tmp_path / "f"), output_dir=str(tmp_path / "out"), folds=2, fold=0,
                            epochs=3, no_final=True, num_segments=4, hidden_size=4, batch_size=8, eval_batch_size=4))
    assert seen == [not FLUSHES] * 3
    assert denormal_survives()


def test_grid_epochs_flush_denormals(tmp_path, monkeypatch):
    seen = recording(reproduce_module, "stack_epoch", monkeypatch)
    options = ReproduceArguments(features=noisy_dataset(tmp_path / "f"), output_dir=str(tmp_path),
                                 protocols=["patient"], aggregations=["lstm"], segments=[4], gammas=[1], folds=2,
                                 epochs=2, batch_size=8, hidden_size=4)
    bank = load_bank(options)
    train_stack(bank, options, plan_stacks(bank, options)[0])
    assert seen == [not FLUSHES] * 2
    assert denormal_survives()
