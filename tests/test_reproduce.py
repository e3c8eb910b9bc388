"""The stacked grid trainer is the single-model algorithm, batched; the grid writes the paper-shaped table."""

import json
import re

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from helpers import noisy_dataset, write_features

from gestures_hub import GesturesConfig, GesturesForVideoClassification
from gestures_hub.reproduce import (
    ReproduceArguments,
    dense_probabilities,
    load_bank,
    plan_stacks,
    reproduce,
    train_stack,
)
from gestures_hub.stacked_model import StackedClassifier, StackedLSTM, lstm_forward
from gestures_hub.train import Run, fit
from gestures_hub.training_data import FeatureBank, SegmentSampler

pytestmark = pytest.mark.usefixtures("one_thread")


def heads(aggregation, count=3, dim=5, hidden=4):
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(GesturesForVideoClassification(GesturesConfig(encoder="none", feature_dim=dim,
                                                                    aggregation=aggregation, hidden_size=hidden)))
    return models


@pytest.mark.parametrize("aggregation", ["mean", "lstm", "blstm"])
def test_stacked_classifier_is_the_models_side_by_side(tmp_path, aggregation):
    models = heads(aggregation)
    stack = StackedClassifier(models)
    torch.manual_seed(0)
    table, rows = torch.randn(100, 5), torch.randperm(100)[:72].view(3, 6, 4)  # 3 models x 6 videos x 4 snippets
    features = table[rows]
    logits = stack(table, rows)
    for m, model in enumerate(models):
        assert all(torch.equal(value, stack.export(m)[key]) for key, value in model.state_dict().items())
        torch.testing.assert_close(logits[m], model(snippet_features=features[m]).logits)

    # whole videos of different lengths, as in dense evaluation, against the packed-sequence model
    lengths = [7, 3, 11, 5]
    sequences = [np.random.default_rng(n).normal(size=(n, 5)) for n in lengths]
    bank = FeatureBank.load(write_features(tmp_path / "f", sequences, [0, 1, 0, 1]))
    val_sets = [np.array([2, 0, 3]), np.array([1, 3])]
    dense = dense_probabilities(bank, stack, [0, 1, 0], val_sets, chunk=4)
    for m, fold in enumerate([0, 1, 0]):
        sequences = [bank.sequence(v) for v in val_sets[fold]]
        padded = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)
        mask = (torch.arange(padded.shape[1]) < torch.tensor([len(s) for s in sequences])[:, None]).long()
        with torch.no_grad():
            expected = models[m](snippet_features=padded, attention_mask=mask).logits.softmax(-1)[:, 1]
        np.testing.assert_allclose(dense[m], expected.numpy(), atol=1e-6)


@pytest.mark.parametrize("loss", [None, "weighted"])
def test_a_stack_of_models_equals_single_runs(tmp_path, loss):
    """Every (aggregation, gamma, fold) model of a batched run matches `gestures train` of that setting; without
    ``loss``, both train with the paper code's loss."""
    options = ReproduceArguments(features=noisy_dataset(tmp_path / "f", num_videos=30), output_dir=str(tmp_path),
                                 protocols=["patient"], segments=[4], gammas=[1, "middle"], folds=2, epochs=3,
                                 batch_size=8, hidden_size=4, precision="fp32", **({"loss": loss} if loss else {}))
    bank = load_bank(options)
    accelerator = Accelerator()
    sampler = SegmentSampler(bank, 4)
    for spec in plan_stacks(bank, options):
        result = train_stack(bank, options, spec, keep_model=True)
        assert len(result.spec.folds) == 4
        for m, (gamma, fold) in enumerate(zip(spec.gammas, spec.folds, strict=True)):
            args = options.training_arguments(spec.aggregation, 4, gamma, "patient")
            assert args.loss == (loss or "original")
            args.output_dir = str(tmp_path / f"{spec.aggregation}-{m}")
            run = Run(args, accelerator, bank, sampler, sampler.draw("middle"), tmp_path / f"{spec.aggregation}-{m}")
            train_videos, val_videos = spec.splits[fold]
            state, model, _ = fit(run, run.output_dir / "fold", train_videos, val_videos, args.epochs, fold,
                                  run.output_dir / "best")
            single = model.state_dict()
            for key, value in result.model.export(m).items():
                torch.testing.assert_close(value, single[key], atol=1e-5, rtol=1e-4)
            assert result.best_epochs[m] == state.best_epoch


def test_reproduce_writes_the_60_setting_grid_with_seizure_level_results_and_the_u_test(tmp_path):
    rng = np.random.default_rng(0)
    # 15.3-20 s videos (kept by the seizure-wise 15 s minimum), long enough for 16 segments
    sequences = [rng.normal(size=(int(rng.integers(230, 300)), 4)) + 0.7 * (i % 2) for i in range(24)]
    patients = [f"p{i // 2:02d}" for i in range(24)]  # two seizures per patient
    features = write_features(tmp_path / "f", sequences, [i % 2 for i in range(24)], patients=patients)
    options = ReproduceArguments(features=features, output_dir=str(tmp_path / "grid"), folds=3, epochs=2,
                                 batch_size=8, hidden_size=4, workers=2, bootstrap=200)
    assert options.gammas == [1.0, 1.25, 2.0, 4.0, "middle"] and options.segments == [2, 4, 8, 16]
    report = reproduce(options)
    table = (tmp_path / "grid" / "reproduce.md").read_text()
    for protocol in ("seizure", "patient"):
        grid = json.loads((tmp_path / "grid" / protocol / "grid.json").read_text())
        assert grid == json.loads(json.dumps(report["protocols"][protocol]))
        assert len(grid["settings"]) == 60  # mean/LSTM/BLSTM x 2/4/8/16 segments x 5 gammas
        for entry in grid["settings"]:
            assert [fold["fold"] for fold in entry["folds"]] == [0, 1, 2]
            assert sum(fold["num_val"] for fold in entry["folds"]) == 24
            assert set(entry["summary"]) == {"middle", "middle_seizure", "dense", "dense_seizure"}
            assert sum(map(sum, entry["summary"]["middle_seizure"]["pooled"]["confusion_matrix"])) == 24
            low, high = entry["summary"]["middle_seizure"]["interval"]["f1"]
            assert low <= entry["summary"]["middle_seizure"]["pooled"]["f1"] <= high
        assert grid["intervals"]["resamples"] == 200 and grid["intervals"]["confidence"] == 0.95
        comparison = grid["comparison"]
        assert comparison["comparisons"] == 59 and comparison["p_values"][comparison["best"]] is None
        assert all(0 <= p <= 1 for i, p in enumerate(comparison["p_values"]) if i != comparison["best"])
    assert table.count("| BLSTM | 16 | 1.25 |") == 2  # one row per protocol, the paper's near semi-elliptic jitter
    assert table.count("| best |") == 2 and "Seizures TP/TN/FP/FN" in table and "Mann-Whitney" in table
    assert "Seizure F1 (pooled)" in table and "95% confidence interval: BCa bootstrap resampling patients" in table
    assert re.search(r"\| \d\.\d{3} \(\d\.\d{3}-\d\.\d{3}\) \|", table)  # a pooled F1 with its interval
    assert "Seizure-wise 3-fold cross-validation" in table and "Patient-grouped stratified 3-fold" in table


def test_compare_settings_is_the_one_tailed_bonferroni_corrected_u_test():
    from scipy.stats import mannwhitneyu

    from gestures_hub.reproduce import compare_settings

    folds = [[0.9, 0.95, 1.0, 0.9], [0.5, 0.6, 0.55, 0.5], [0.9, 0.92, 1.0, 0.88]]
    settings = [{"folds": [{"middle_seizure": {"f1": value}} for value in values]} for values in folds]
    result = compare_settings(settings)
    assert result["best"] == 0 and result["comparisons"] == 2
    expected = [None, *(min(1.0, 2 * mannwhitneyu(folds[0], other, alternative="greater").pvalue)
                        for other in folds[1:])]
    assert result["p_values"] == pytest.approx(expected)
    assert result["p_values"][1] < 0.05 < result["p_values"][2]  # clearly worse vs as good


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("reverse", [False, True])
def test_the_hand_written_lstm_backward_is_the_gradient(reverse, steps):
    torch.manual_seed(0)
    inputs = torch.randn(3, steps, 4, 6, dtype=torch.float64)  # 3 models, time-major, 4 videos, 6 features
    weights = [torch.randn(3, *shape, dtype=torch.float64, requires_grad=True) for shape in ((12, 6), (3, 12), (1, 12))]
    assert torch.autograd.gradcheck(lambda *w: StackedLSTM.apply(inputs, *w, reverse), weights)


def test_bfloat16_projections_train_like_float32(tmp_path):
    """``--precision bf16`` rounds the LSTM input projections only: the same models come out, up to that rounding."""
    results, features = {}, noisy_dataset(tmp_path / "f", num_videos=30)
    for precision in ("fp32", "bf16"):
        options = ReproduceArguments(features=features, output_dir=str(tmp_path),
                                     protocols=["patient"], aggregations=["blstm"], segments=[4], gammas=[2],
                                     folds=2, epochs=4, batch_size=8, hidden_size=4, precision=precision)
        bank = load_bank(options)
        results[precision] = [train_stack(bank, options, spec, keep_model=True) for spec in plan_stacks(bank, options)]
    for single, mixed in zip(results["fp32"], results["bf16"], strict=True):
        for name, value in single.model.params.items():
            torch.testing.assert_close(mixed.model.params[name], value, atol=3e-2, rtol=3e-2)
            assert not torch.equal(mixed.model.params[name], value)  # the rounding is real
        for m in range(len(single.spec.folds)):
            np.testing.assert_allclose(mixed.probabilities[m]["dense"], single.probabilities[m]["dense"], atol=0.05)
    # The tolerances above only bound the projections' rounding; they would not see weights, AdamW states (which take
    # the weights' dtype) or LSTM states rounded to bfloat16 too. Those must stay float32:
    for result in results["bf16"]:
        assert {value.dtype for value in result.model.params.values()} == {torch.float32}
    weights = [torch.randn(2, *shape) for shape in ((16, 6), (4, 16), (1, 16))]  # 2 models, 6 features, hidden 4
    hidden, saved = lstm_forward(torch.randn(2, 5, 3, 6).bfloat16(), *weights, keep=True)
    assert hidden.dtype == torch.float32 and len(saved) == 5
    for gates, cell, tanh_cell, product_input in saved:  # only the recurrent product's input is bfloat16
        assert {gates.dtype, cell.dtype, tanh_cell.dtype} == {torch.float32}
        assert product_input.dtype == torch.bfloat16
