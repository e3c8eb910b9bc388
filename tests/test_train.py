"""Training with Accelerate: losses, sampling, outputs, export, resume, order-sensitivity, two processes."""

import json
import math
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from helpers import (
    accelerate_launch,
    as_flags,
    checkout_env,
    events_dataset,
    noisy_dataset,
    spread_dataset,
    write_features,
)
from safetensors.torch import load_file
from transformers import AutoModelForVideoClassification

from gestures_hub import GesturesConfig, GesturesForVideoClassification
from gestures_hub import train as train_module
from gestures_hub.attach import attach_encoder
from gestures_hub.cli import build_parser
from gestures_hub.losses import loss_norms, loss_weights, sample_losses, timeline_losses
from gestures_hub.model import detect_spread
from gestures_hub.sampling import segment_indices, segment_ranges
from gestures_hub.train import Run, TrainingArguments, train
from gestures_hub.training_data import FeatureBank, SegmentSampler, epoch_draws

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_args(features, output_dir, **overrides):
    options = dict(features=features, output_dir=str(output_dir), aggregation="blstm", num_segments=4, gamma=2.0,
                   hidden_size=4, folds=3, epochs=4, batch_size=8, eval_batch_size=4, seed=0)
    return TrainingArguments(**{**options, **overrides})


# Losses -------------------------------------------------------------------------------------------------------------


def batch_loss(logits, labels, loss, weights):
    """The mean loss of a batch, as training and validation take it."""
    return sample_losses(logits, labels, loss, weights).sum(-1) / loss_norms(labels, loss, weights).sum(-1)


def test_original_loss_is_the_paper_formula():
    torch.manual_seed(0)
    logits, labels = torch.randn(10, 2), torch.tensor([1, 0, 0, 1, 0, 0, 0, 1, 0, 0])
    train_labels = np.array([1] * 3 + [0] * 7)
    weights = loss_weights(train_labels, "original")
    assert weights.tolist() == pytest.approx([10 / 3])  # 1 / fraction of TCS
    one_hot = F.one_hot(labels, 2).float()
    expected = F.binary_cross_entropy_with_logits(logits, one_hot, pos_weight=torch.tensor([10 / 3]))
    by_hand = -(10 / 3 * one_hot * F.logsigmoid(logits) + (1 - one_hot) * F.logsigmoid(-logits)).mean()
    loss = batch_loss(logits, labels, "original", weights)
    assert loss == pytest.approx(float(expected), rel=1e-6)
    assert loss == pytest.approx(float(by_hand), rel=1e-6)
    # The scalar pos_weight multiplies the positive column of both classes: FOS and TCS are weighted alike.
    swapped = batch_loss(logits.flip(-1), 1 - labels, "original", weights)
    assert swapped == pytest.approx(float(loss), rel=1e-6)


def test_weighted_loss_balances_the_classes():
    train_labels = np.array([1] * 3 + [0] * 9)
    weights = loss_weights(train_labels, "weighted")
    assert weights.tolist() == pytest.approx([12 / (2 * 9), 12 / (2 * 3)])  # N / (2 N_c), i.e. ∝ 1 / fraction
    assert weights[0] * 9 == pytest.approx(weights[1] * 3)  # each class carries half of the total weight
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 2), torch.tensor([1, 0, 0, 1, 0, 0, 1])
    expected = F.cross_entropy(logits, labels, weight=weights)
    assert batch_loss(logits, labels, "weighted", weights) == pytest.approx(float(expected), rel=1e-6)
    # the model's own loss uses the same weights once they are in its config
    model = GesturesForVideoClassification(GesturesConfig(encoder="none", feature_dim=4, hidden_size=4,
                                                          class_weights=weights.tolist()))
    with torch.no_grad():
        out = model(snippet_features=torch.randn(7, 3, 4), labels=labels)
    assert float(out.loss) == pytest.approx(float(batch_loss(out.logits, labels, "weighted", weights)), rel=1e-6)
    with pytest.raises(ValueError, match="both classes"):
        loss_weights(np.zeros(5, dtype=int), "weighted")


def test_timeline_losses_weigh_videos_like_the_seizure_loss():
    torch.manual_seed(0)
    snippet_logits, targets = torch.randn(3, 4, 2), torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    known, norms = torch.tensor([True, True, False]), torch.tensor([2.0, 0.5, 3.0])
    terms = timeline_losses(snippet_logits, targets, known, norms)
    for video in range(2):
        assert float(terms[video]) == pytest.approx(float(norms[video] * F.cross_entropy(snippet_logits[video],
                                                                                          targets[video])), rel=1e-6)
    assert float(terms[2]) == 0.0  # a TCS video without onset_bilateral


def test_spread_targets_start_at_the_onset(tmp_path):
    sequences = [np.zeros((30, 2), dtype=np.float32)] * 3
    bank = FeatureBank.load(write_features(tmp_path / "f", sequences, [0, 1, 1], onsets=[None, 1.0, None]))
    indices = np.array([[0, 14, 15, 29]] * 3)  # 0, 0.93, 1.0, 1.93 s
    targets, known = bank.spread_targets(np.arange(3), indices)
    assert targets.tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]
    assert known.tolist() == [True, True, False]


def test_timeline_loss_teaches_when_the_seizure_spreads(tmp_path):
    """Trained with --timeline-weight, the snippet logits of new videos cross over where TCS seizures spread and
    stay FOS in FOS videos; with the paper's loss alone, the timeline says nothing of the spread."""
    features, _, _ = spread_dataset(tmp_path / "train")
    _, sequences, onsets = spread_dataset(tmp_path / "test", num_videos=10, seed=1)
    errors = {}
    for weight in (0.0, 1.0):
        out = tmp_path / f"w{weight}"
        metrics = train(tiny_args(features, out, folds=2, epochs=40, final_epochs=40, learning_rate=1e-2,
                                  timeline_weight=weight, metric_for_best_model="loss"))
        if weight:  # cross-validation evaluates the timelines of the folds' best models too
            timeline = metrics["timeline"]
            assert timeline["num_detected"] == timeline["num_tcs"] == 20 and timeline["num_false_spread"] == 0
            assert timeline["median_error_s"] <= 0.2 and all("spread" in fold for fold in metrics["folds"])
            predictions = pd.read_csv(out / "predictions.csv")
            tcs = predictions[predictions["label"] == 1]
            cv_errors = (tcs["spread_time"] - tcs["onset_bilateral"]).abs()
            assert cv_errors.median() == pytest.approx(timeline["median_error_s"])
        else:
            assert "timeline" not in metrics
        model = GesturesForVideoClassification.from_pretrained(out / "final-features").eval()
        with torch.no_grad():
            curves = [model(snippet_features=torch.from_numpy(x).float()[None]).snippet_logits[0].softmax(-1)[:, 1]
                      for x in sequences]
        spreads = [detect_spread(np.arange(len(curve)) / 15, curve.numpy()) for curve in curves]
        assert all(spread is None for spread, onset in zip(spreads, onsets, strict=True) if onset is None)
        errors[weight] = [abs(spread - onset) if spread is not None else math.inf
                          for spread, onset in zip(spreads, onsets, strict=True) if onset is not None]
    assert max(errors[1.0]) <= 0.2, errors  # within 3 snippets of every onset
    assert min(errors[0.0]) > 0.5, errors


def test_validation_loss_adds_the_timeline_terms(tmp_path):
    features, _, _ = spread_dataset(tmp_path / "f", num_videos=8)
    bank, videos = FeatureBank.load(features), np.arange(8)
    sampler, weights = SegmentSampler(bank, 4), loss_weights(bank.labels, "weighted")
    torch.manual_seed(0)
    model = train_module.new_model(bank, tiny_args(features, tmp_path), weights)
    losses = {}
    for weight in (0.0, 0.5):
        run = Run(tiny_args(features, tmp_path, timeline_weight=weight), Accelerator(cpu=True), bank, sampler,
                  sampler.draw("middle"), tmp_path)
        losses[weight] = train_module.validate(run, model, videos, weights)["val_loss"]
    with torch.no_grad():
        snippet_logits = model(snippet_features=bank.gather(videos, run.middle)).snippet_logits
    targets, _ = bank.spread_targets(videos, run.middle)
    assert 0 < targets.sum() < targets.size
    norms = loss_norms(torch.as_tensor(bank.labels), "weighted", weights)
    terms = F.cross_entropy(snippet_logits.flatten(0, 1), torch.as_tensor(targets).flatten(), reduction="none")
    timeline = float((norms * terms.view(8, 4).mean(-1)).sum() / norms.sum())
    assert losses[0.5] - losses[0.0] == pytest.approx(0.5 * timeline, rel=1e-4)


@pytest.mark.parametrize("metric", ["f1", "loss"])
def test_metric_for_best_model_picks_the_best_epoch(tmp_path, metric):
    train(tiny_args(noisy_dataset(tmp_path / "f"), tmp_path / "out", fold=0, epochs=8, no_final=True,
                    metric_for_best_model=metric))
    log = pd.read_csv(tmp_path / "out" / "fold-0" / "log.csv")
    best_epoch = json.loads((tmp_path / "out" / "fold-0" / "results.json").read_text())["best_epoch"]
    first_best = {"f1": int(np.argmax(log["val_f1"])), "loss": int(np.argmin(log["val_loss"]))}  # ties: the first
    assert first_best["f1"] != first_best["loss"]  # so the test tells the two apart
    assert best_epoch == first_best[metric] + 1


def test_timeline_weight_needs_onsets_and_snippet_logits(tmp_path):
    with pytest.raises(ValueError, match="stacked RNNs"):
        tiny_args("f", tmp_path, timeline_weight=0.5, num_layers=2)
    with pytest.raises(ValueError, match="none of the 12 TCS videos has an onset_bilateral"):
        train(tiny_args(noisy_dataset(tmp_path / "f"), tmp_path / "out", timeline_weight=0.5))


# Sampling -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 3])
def test_segment_sampler_is_segment_indices_for_all_videos(tmp_path, stride):
    lengths = [40, 57, 103, 250]
    features = write_features(tmp_path / "f", [np.zeros((n, 2)) for n in lengths], [0, 1, 0, 1],
                              frames_per_snippet=8)
    bank = FeatureBank.load(features)
    bank.settings["stride"] = stride
    sampler = SegmentSampler(bank, num_segments=3)
    middle = sampler.draw("middle")
    for video, length in enumerate(lengths):
        expected = segment_indices(length, num_segments=3, frames_per_snippet=8, stride=stride)
        assert middle[video].tolist() == expected.tolist()
    uniform = np.stack([epoch_draws(sampler, 1, seed=0, epoch=epoch) for epoch in range(300)])
    beta = np.stack([epoch_draws(sampler, 4, seed=0, epoch=epoch) for epoch in range(300)])
    for video, length in enumerate(lengths):
        for segment, (first, last) in enumerate(segment_ranges(length, num_segments=3, frames_per_snippet=8,
                                                               stride=stride)):
            lowest, highest = -(-first // stride), last // stride  # the vectors starting inside the segment
            for draws in (uniform, beta):
                assert lowest <= draws[:, video, segment].min() and draws[:, video, segment].max() <= highest
    if stride == 1:
        assert set(uniform[:, 0, 0].tolist()) == set(range(0, 9))  # every start of a 9-start range is drawn
        assert beta[:, 0, 0].std() < 0.7 * uniform[:, 0, 0].std()  # Beta(4, 4) concentrates in the middle
    assert (np.diff(uniform, axis=-1) > 0).all()
    assert np.array_equal(epoch_draws(sampler, 4, 0, 5), beta[5])  # a function of (seed, epoch)


def test_short_video_is_named(tmp_path):
    features = write_features(tmp_path / "f", [np.zeros((n, 2)) for n in (30, 5, 30, 30)], [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"v001"):
        train(tiny_args(features, tmp_path / "run", num_segments=4, folds=2))
    with pytest.raises(ValueError, match="larger than the number of patients"):
        train(tiny_args(features, tmp_path / "run2", num_segments=2, folds=5))


# Cross-validation, export, reload -----------------------------------------------------------------------------------


def test_cross_validation_outputs_and_reload(tmp_path):
    features = noisy_dataset(tmp_path / "f")
    out = tmp_path / "run"
    report = train(tiny_args(features, out, loss="original"))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["protocol"] == {"group_by": "patient", "folds": 3, "seed": 0,
                                 "description": "patient-grouped stratified 3-fold cross-validation",
                                 "min_seizure_duration": 0.0, "evaluate_discarded": False, "short_seizures": [],
                                 "discarded_views": []}
    assert saved["dataset"]["num_videos"] == 24 and saved["dataset"]["synthetic"] is True
    assert saved["settings"]["loss"] == "original" and saved["settings"]["gamma"] == 2.0
    assert [fold["fold"] for fold in saved["folds"]] == [0, 1, 2]
    assert sum(fold["num_val"] for fold in saved["folds"]) == 24
    for fold in saved["folds"]:
        assert 1 <= fold["best_epoch"] <= 4
        for name in ("middle", "dense"):
            assert set(fold[name]) == {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc",
                                       "confusion_matrix"}
    assert set(saved["summary"]["middle"]) == {"mean", "std", "pooled", "interval", "calibration", "operating_points"}
    assert "| middle snippets, pooled |" in (out / "metrics.md").read_text()
    assert len((out / "fold-0" / "log.csv").read_text().splitlines()) == 1 + 4
    assert (out / "fold-0" / "checkpoint" / "trainer_state.json").is_file()
    # final model: median best epoch, rounded up
    expected_epochs = math.ceil(np.median([fold["best_epoch"] for fold in saved["folds"]]))
    assert len((out / "final-run" / "log.csv").read_text().splitlines()) == 1 + expected_epochs
    for export in (out / "final-features", out / "fold-1" / "best"):
        assert json.loads((export / "cv_metrics.json").read_text()) == saved
        assert json.loads((export / "training_args.json").read_text())["aggregation"] == "blstm"

    # An exported fold model reloads through the Auto API (remote code) and reproduces its validation predictions.
    results = json.loads((out / "fold-1" / "results.json").read_text())
    model = AutoModelForVideoClassification.from_pretrained(out / "fold-1" / "best", trust_remote_code=True).eval()
    assert type(model).__name__ == "GesturesForVideoClassification"
    bank = FeatureBank.load(features)
    videos = bank.table.index[bank.table["video"].isin(results["videos"])].to_numpy()
    middle = SegmentSampler(bank, 4).draw("middle")
    with torch.no_grad():
        probabilities = model(snippet_features=bank.gather(videos, middle[videos])).logits.softmax(-1)[:, 1]
        dense = [model(snippet_features=bank.sequence(v)[None]).logits.softmax(-1)[0, 1] for v in videos]
    np.testing.assert_allclose(probabilities.numpy(), results["probabilities"]["middle"], atol=1e-5)
    np.testing.assert_allclose(np.array(dense), results["probabilities"]["dense"], atol=1e-5)


def test_resume_gives_the_same_weights(tmp_path):
    features = noisy_dataset(tmp_path / "f")
    options = dict(fold=1, epochs=6, dropout=0.3, scheduler="cosine", no_final=True)
    train(tiny_args(features, tmp_path / "straight", **options))
    interrupted = tmp_path / "interrupted"
    assert train(tiny_args(features, interrupted, max_epochs_this_run=2, **options)) is None
    assert not (interrupted / "fold-1" / "results.json").exists()
    train(tiny_args(features, interrupted, resume=True, max_epochs_this_run=3, **options))
    train(tiny_args(features, interrupted, resume=True, **options))
    for name in ("checkpoint/model.safetensors", "best/model.safetensors"):
        a, b = load_file(tmp_path / "straight" / "fold-1" / name), load_file(interrupted / "fold-1" / name)
        assert all(torch.equal(a[key], b[key]) for key in a)
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed = json.loads((interrupted / "metrics.json").read_text())
    assert straight["folds"] == resumed["folds"]
    with pytest.raises(ValueError, match="other arguments"):
        train(tiny_args(features, interrupted, resume=True, **{**options, "learning_rate": 0.1}))
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_args(features, interrupted, **options))


def test_order_needs_a_recurrent_aggregator(tmp_path):
    """Same events in a different order: LSTM and BLSTM learn it, mean pooling cannot; presence: all learn."""
    accuracy = {}
    for task in ("order", "presence"):
        features = events_dataset(tmp_path / task, task)
        for aggregation in ("mean", "lstm", "blstm"):
            report = train(tiny_args(features, tmp_path / f"{task}-{aggregation}", aggregation=aggregation,
                                     num_segments=8, gamma=1, hidden_size=8, folds=2, epochs=20, batch_size=10,
                                     checkpoint_every=100, no_final=True))
            accuracy[task, aggregation] = report["summary"]["middle"]["pooled"]["accuracy"]
    assert accuracy["order", "mean"] <= 0.65, accuracy  # chance level, up to best-epoch selection on 60 videos
    assert min(accuracy["order", "lstm"], accuracy["order", "blstm"]) >= 0.95, accuracy
    assert min(accuracy["presence", name] for name in ("mean", "lstm", "blstm")) >= 0.9, accuracy


# Two processes ------------------------------------------------------------------------------------------------------


def misfit(weights: dict, reference: dict) -> float:
    """The largest difference of ``weights`` from ``reference``, in units of the tolerance 1e-5 + 1e-4 |w| (within it:
    float32 rounding of sums in another order, ~1e-7 here)."""
    return max(float(((weights[key] - value).abs() / (1e-5 + 1e-4 * value.abs())).max())
               for key, value in reference.items())


class HalvedGradients(Accelerator):
    """Every gradient halved: what a 2-process run that forgot to undo DDP's averaging over processes computes."""

    def backward(self, loss, **kwargs):
        super().backward(loss / 2, **kwargs)


def test_two_processes_match_one(tmp_path):
    """With the timeline loss too: each process adds its videos' terms over the global batch's norm.

    AdamW's epsilon is 10, far above every gradient (|g| < 1 here), so that a step is lr / eps * m (SGD with momentum,
    learning rate 0.1) instead of AdamW's scale-free lr * m / sqrt(v): a gradient-scale error between 1 and 2 processes
    (a rank's gradients halved, DDP's mean left as it is) then moves the weights instead of vanishing in the
    normalisation. Measured in units of the tolerance (1e-5 + 1e-4 |w|): 2 processes differ from 1 by 7e-4; rank 1's
    gradients halved by 560 (e.g. a bias 0.395 instead of 0.421); every gradient halved by 1200 here, but by 7 with
    AdamW's default epsilon, where only epsilon itself sees the scale."""
    features = noisy_dataset(tmp_path / "f", onsets=True)
    options = dict(features=features, folds=3, fold=0, epochs=3, batch_size=8, num_segments=4, hidden_size=4,
                   aggregation="lstm", timeline_weight=0.5, learning_rate=1.0, adam_epsilon=10.0, no_final=True)
    done = subprocess.run([*accelerate_launch(2), "-m", "gestures_hub.train", *as_flags(options), "--output-dir",
                           str(tmp_path / "two")], env=checkout_env(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    train(TrainingArguments(output_dir=str(tmp_path / "one"), **options))
    train(TrainingArguments(output_dir=str(tmp_path / "half"), **options),
          HalvedGradients(cpu=True, step_scheduler_with_optimizer=False))

    records = [json.loads((tmp_path / "two" / "processes" / f"process-{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["process_index"] for r in records] == [0, 1] and {r["num_processes"] for r in records} == {2}
    assert records[0]["weights_sha256"] == records[1]["weights_sha256"]  # identical parameters on both ranks
    one, two, half = (load_file(tmp_path / run / "fold-0" / "checkpoint" / "model.safetensors")
                      for run in ("one", "two", "half"))
    two = {key.removeprefix("module."): value for key, value in two.items()}  # DDP's wrapper may name them so

    assert misfit(two, one) <= 1, misfit(two, one)
    assert misfit(half, one) > 100, misfit(half, one)  # it resolves a scale error: halved gradients miss by far more
    metrics = [json.loads((tmp_path / run / "fold-0" / "results.json").read_text()) for run in ("one", "two")]
    for name in ("middle", "dense"):
        np.testing.assert_allclose(metrics[0]["probabilities"][name], metrics[1]["probabilities"][name], atol=1e-4)
        assert metrics[0][name]["confusion_matrix"] == metrics[1][name]["confusion_matrix"]
    assert metrics[0]["best_epoch"] == metrics[1]["best_epoch"]


# Encoder, command line ----------------------------------------------------------------------------------------------


def test_attach_encoder_gives_a_video_model():
    from gestures_hub.presets import get_config

    video_config = get_config("tiny-videomae")
    head = GesturesForVideoClassification(GesturesConfig(
        encoder="none", feature_dim=video_config.feature_dim, frames_per_snippet=video_config.frames_per_snippet,
        image_size=video_config.image_size, aggregation="lstm", hidden_size=5, num_segments=3, gamma="middle")).eval()
    model = attach_encoder(head, "tiny-videomae")
    assert model.config.encoder == "videomae" and model.config.aggregation == "lstm"
    assert model.config.hidden_size == 5 and model.config.num_segments == 3
    torch.manual_seed(0)
    pixel_values = torch.rand(2, 3, 3, video_config.frames_per_snippet, video_config.image_size,
                              video_config.image_size)
    with torch.no_grad():
        features = model.gestures.encode_snippets(pixel_values.flatten(0, 1)).unflatten(0, (2, 3))
        torch.testing.assert_close(model(pixel_values=pixel_values).logits,
                                   head(snippet_features=features).logits)
    mismatched = GesturesForVideoClassification(GesturesConfig(encoder="none", feature_dim=7))
    with pytest.raises(ValueError, match="feature_dim"):
        attach_encoder(mismatched, "tiny-videomae")
    other_geometry = GesturesForVideoClassification(GesturesConfig.from_dict({**head.config.to_dict(),
                                                                             "frame_geometry": "center_crop"}))
    with pytest.raises(ValueError, match="frame_geometry=center_crop, the encoder uses crop_and_pad"):
        attach_encoder(other_geometry, "tiny-videomae")  # features of one geometry never meet an encoder of the other


def test_command_line():
    parser = build_parser()
    assert parser.parse_args(["train", "--features", "d", "--output-dir", "o"]).func == "train:run"
    args = parser.parse_args(["train", "--features", "d", "--output-dir", "o", "--gamma", "middle", "--loss",
                              "original", "--folds", "5", "--fold", "2", "--group-by", "seizure", "--resume"])
    assert (args.gamma, args.loss, args.folds, args.fold, args.group_by, args.resume) == \
        ("middle", "original", 5, 2, "seizure", True)
    assert (args.learning_rate, args.batch_size, args.epochs, args.weight_decay, args.adam_epsilon) == \
        (1e-2, 64, 400, 0.01, 1e-8)
    args = parser.parse_args(["reproduce", "--features", "d", "--output-dir", "o", "--gammas", "1", "middle"])
    assert args.gammas == [1.0, "middle"] and args.loss == "original" and args.segments == [2, 4, 8, 16]
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--features", "d", "--output-dir", "o", "--gamma", "-1"])
