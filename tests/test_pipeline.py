"""The Hub unit used with transformers alone: the video processor, the pipeline, remote code, and what a model carries.

The fresh-process checks run where ``gestures_hub`` cannot be imported and ``HF_HUB_OFFLINE=1``: what a user with an mp4
and nothing but transformers (and PyAV) gets must equal ``gestures predict``.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import av
import numpy as np
import pytest
import torch
from transformers import AutoVideoProcessor, pipeline

from gestures_hub import PIPELINE_NAME, GesturesForVideoClassification
from gestures_hub.cli import main
from gestures_hub.extract import extract
from gestures_hub.model import GesturesVideoClassificationPipeline, GesturesVideoProcessor
from gestures_hub.model.video_reader import VideoError
from gestures_hub.predict import DEMO_MODEL_DIR, predict_video
from gestures_hub.presets import get_config
from gestures_hub.sample_videos import write_test_video
from gestures_hub.synthetic import generate_cohort
from gestures_hub.train import TrainingArguments, train

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    sys.modules["gestures_hub"] = None  # any import of the package now fails
    import torch
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor, pipeline

    source, video, out_path = sys.argv[1:]
    processor = AutoVideoProcessor.from_pretrained(source, trust_remote_code=True)
    inputs = processor(video)
    model = AutoModelForVideoClassification.from_pretrained(source, trust_remote_code=True).eval()
    assert not type(model).__module__.startswith("gestures_hub"), type(model).__module__
    with torch.no_grad():
        direct = model(pixel_values=inputs["pixel_values"], attention_mask=inputs["attention_mask"])
    by_model = pipeline(model=source, trust_remote_code=True)
    by_task = pipeline("video-classification", model=source, trust_remote_code=True)
    json.dump({
        "processor": type(processor).__name__,
        "pipelines": [type(by_model).__name__, type(by_task).__name__],
        "pixel_shape": list(inputs["pixel_values"].shape),
        "snippet_times": inputs["snippet_times"][0].tolist(),
        "direct": direct.logits.softmax(-1)[0].tolist(),
        "direct_snippets": direct.snippet_logits.softmax(-1)[0, :, 1].tolist(),
        "scores": by_model(video),
        "task_scores": by_task(video),
        "timeline": by_model(video, return_timeline=True),
    }, open(out_path, "w"))
    """
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four synthetic patients (seed 8080, never used in training the demo model), two videos each."""
    folder = tmp_path_factory.mktemp("cohort")
    return generate_cohort(folder, 4, 8080, fps=15, size=(96, 72), min_duration=8.0, max_duration=11.0,
                           progress=False)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """The embedded demo model saved with save_pretrained: weights, config, processor and the Hub unit's code."""
    model = GesturesForVideoClassification.from_pretrained(DEMO_MODEL_DIR)
    directory = tmp_path_factory.mktemp("demo") / "gestures-demo"
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def trained_dir(cohort, tmp_path_factory):
    """A video-in model exported by `gestures train` (features from the demo encoder, 2 folds, 2 epochs)."""
    work = tmp_path_factory.mktemp("train")
    extract(cohort, str(DEMO_MODEL_DIR), work / "features", device="cpu", progress=False)
    train(TrainingArguments(features=str(work / "features"), output_dir=str(work / "run"), folds=2, epochs=2,
                            num_segments=4, seed=0, encoder=str(DEMO_MODEL_DIR)))
    return work / "run" / "final-video"


def fresh_process(source: str, video, tmp_path, env: dict | None = None) -> dict:
    (tmp_path / "fresh.py").write_text(FRESH_PROCESS)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "fresh.py"), source, str(video), str(tmp_path / "out.json")],
        cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def cli_prediction(model_dir, video, tmp_path, capsys) -> dict:
    assert main(["predict", str(video), "--model", str(model_dir), "--out", str(tmp_path / "cli"), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["predictions"][0]


def assert_same_as_cli(fresh: dict, cli: dict) -> None:
    assert fresh["processor"] == "GesturesVideoProcessor"
    assert fresh["pipelines"] == ["GesturesVideoClassificationPipeline"] * 2
    labels = list(cli["probabilities"])
    for scores in (fresh["scores"], fresh["task_scores"], fresh["timeline"]["scores"]):
        assert scores[0]["label"] == cli["label"]
        assert {s["label"]: s["score"] for s in scores} == pytest.approx(cli["probabilities"], abs=1e-5)
    assert fresh["direct"] == pytest.approx([cli["probabilities"][name] for name in labels], abs=1e-5)
    timeline = fresh["timeline"]
    assert timeline["label"] == cli["label"] and timeline["notice"] == cli["notice"]
    assert timeline["duration"] == pytest.approx(cli["duration"])
    cli_times = [row["time"] for row in cli["timeline"]]
    assert timeline["snippet_times"] == pytest.approx(cli_times, abs=1e-4)
    assert fresh["snippet_times"] == pytest.approx(cli_times, abs=1e-4)
    for name in labels:
        assert timeline["snippet_scores"][name] == pytest.approx([row[name] for row in cli["timeline"]], abs=1e-5)
    assert fresh["direct_snippets"] == pytest.approx([row["TCS"] for row in cli["timeline"]], abs=1e-5)
    assert (timeline["spread_time"] is None) == (cli["spread_time"] is None)
    if cli["spread_time"] is not None:
        assert timeline["spread_time"] == pytest.approx(cli["spread_time"])


def tcs_video(cohort):
    return next(cohort.parent / row.split(",")[0] for row in cohort.read_text().splitlines()[1:] if ",TCS," in row)


def test_demo_model_with_transformers_alone_equals_gestures_predict(demo_dir, cohort, tmp_path, capsys):
    video = tcs_video(cohort)
    fresh = fresh_process(str(demo_dir), video, tmp_path)
    cli = cli_prediction(demo_dir, video, tmp_path, capsys)
    assert cli["label"] == "TCS" and cli["spread_time"] is not None  # the ground truth: this video spreads
    assert fresh["pixel_shape"][2:] == [3, 8, 64, 64]
    assert_same_as_cli(fresh, cli)
    assert fresh["timeline"]["trained_on_synthetic_data"] is True and "DEMO MODEL" in fresh["timeline"]["notice"]


def test_trained_model_with_transformers_alone_equals_gestures_predict(trained_dir, cohort, tmp_path, capsys):
    assert (trained_dir / "video_preprocessor_config.json").is_file()
    assert json.loads((trained_dir / "config.json").read_text())["trained_on_synthetic_data"] is True
    video = tcs_video(cohort)
    assert_same_as_cli(fresh_process(str(trained_dir), video, tmp_path), cli_prediction(trained_dir, video, tmp_path,
                                                                                          capsys))


def test_by_repo_id_from_a_hub_cache_snapshot(demo_dir, cohort, tmp_path, capsys):
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--gestures-org--gestures-demo"
    shutil.copytree(demo_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    video = tcs_video(cohort)
    fresh = fresh_process("gestures-org/gestures-demo", video, tmp_path, env={"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert_same_as_cli(fresh, cli_prediction(demo_dir, video, tmp_path, capsys))


def test_in_process_pipeline_and_auto_video_processor(demo_dir, cohort):
    video = tcs_video(cohort)
    processor = AutoVideoProcessor.from_pretrained(demo_dir)
    assert type(processor) is GesturesVideoProcessor and processor.config.image_size == 64
    assert json.loads((demo_dir / "video_preprocessor_config.json").read_text()) == {
        "auto_map": {"AutoVideoProcessor": "video_processing_gestures.GesturesVideoProcessor"},
        "batch_size": 16, "stride": None, "video_processor_type": "GesturesVideoProcessor"}  # nothing said twice
    for pipe in (pipeline(PIPELINE_NAME, model=str(demo_dir)), pipeline(model=str(demo_dir), trust_remote_code=True)):
        assert type(pipe).__name__ == "GesturesVideoClassificationPipeline"  # the package's, or the folder's copy
        assert [s["label"] for s in pipe(str(video), top_k=1)] == ["TCS"]
        assert [[s["label"] for s in one] for one in pipe([video, str(video)], top_k=1)] == [["TCS"], ["TCS"]]
    with pytest.raises(TypeError, match="Unknown argument.*frames_per_second"):
        pipe(str(video), frames_per_second=3)


def test_pipeline_streams_batch_by_batch_with_identical_results(demo_dir, cohort):
    pipe = pipeline(PIPELINE_NAME, model=str(demo_dir), batch_size=3)
    video = tcs_video(cohort)
    small = pipe(str(video), return_timeline=True)
    large = pipeline(PIPELINE_NAME, model=str(demo_dir), batch_size=64)(str(video), return_timeline=True)
    assert small["snippet_times"] == large["snippet_times"]
    assert small["snippet_scores"]["TCS"] == pytest.approx(large["snippet_scores"]["TCS"], abs=1e-5)
    seen = []
    original = pipe.model.gestures.encode_snippets
    pipe.model.gestures.encode_snippets = lambda pixels: seen.append(len(pixels)) or original(pixels)
    pipe(str(video))
    assert max(seen) == 3 and sum(seen) == len(small["snippet_times"])  # never more than one batch of pixels
    half = pipeline(PIPELINE_NAME, model=str(demo_dir), dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16
    assert half(str(video))[0]["label"] == small["label"]


def test_processor_on_caller_decoded_frames_matches_the_file(tmp_path):
    path = write_test_video(tmp_path / "clip.mp4", duration=2.0, fps=25, size=(80, 60), pattern="bar")
    with av.open(str(path)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    config = get_config("gestures-demo")
    processor = GesturesVideoProcessor(config)
    from_file = processor(str(path))
    reference = processor(frames, video_fps=25)
    # The file is converted from YUV and resized in one swscale call, caller frames from RGB: same frames, same
    # geometry, a few grey levels apart (chroma upsampling before vs after the resize; 2.5 levels measured).
    grey_levels = (reference["pixel_values"] - from_file["pixel_values"]).abs() * torch.tensor(config.image_std).view(
        3, 1, 1, 1) * 255
    assert reference["pixel_values"].shape == from_file["pixel_values"].shape and grey_levels.mean() < 4
    torch.testing.assert_close(reference["snippet_times"], from_file["snippet_times"])
    for video in (torch.from_numpy(frames), list(frames), torch.from_numpy(frames).permute(0, 3, 1, 2)):
        torch.testing.assert_close(processor(video, video_fps=25)["pixel_values"], reference["pixel_values"], rtol=0,
                                   atol=0)
    doubled = processor(np.repeat(frames, 2, axis=0), video_fps=50)  # each frame twice at twice the rate: same video
    torch.testing.assert_close(doubled["pixel_values"], reference["pixel_values"], rtol=0, atol=0)
    batch = processor([str(path), frames[:20]], video_fps=25)  # 3 snippets and 1 (0.8 s): padded, masked
    assert batch["pixel_values"].shape == (2, 3, 3, 8, 64, 64)
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert processor(str(path), stride=4)["pixel_values"].shape[1] == 6
    with pytest.raises(VideoError, match="shorter than one snippet"):
        processor(frames[:5], video_fps=25)
    with pytest.raises(VideoError, match="uint8 RGB"):
        processor(frames.astype(np.float32), video_fps=25)
    with pytest.raises(TypeError, match="a file path"):
        processor(42)


def test_pipeline_refuses_a_features_model(tmp_path):
    model = GesturesForVideoClassification(get_config("tiny-features"))
    with pytest.raises(ValueError, match="takes precomputed snippet features"):
        GesturesVideoClassificationPipeline(model=model, device="cpu")


# What a model carries through from_pretrained -------------------------------------------------------------------------


def test_frozen_encoder_stays_frozen_through_from_pretrained_and_can_be_unfrozen(demo_dir):
    model = GesturesForVideoClassification.from_pretrained(demo_dir)
    encoder = list(model.gestures.encoder.parameters())
    assert encoder and not any(p.requires_grad for p in encoder)
    assert model.num_parameters(only_trainable=True) == model.num_parameters() - sum(p.numel() for p in encoder)
    model.gestures.encoder.requires_grad_(True)
    assert all(p.requires_grad for p in model.gestures.encoder.parameters())
    from transformers import AutoModel

    base = AutoModel.from_pretrained(demo_dir)
    assert not any(p.requires_grad for p in base.encoder.parameters())


def test_three_label_fine_tune_with_ignore_mismatched_sizes_changes_only_what_it_should(demo_dir):
    weighted = GesturesForVideoClassification(get_config("gestures-demo", class_weights=[1.0, 3.0]))
    weighted.save_pretrained(demo_dir.parent / "weighted")
    labels = {0: "FOS", 1: "TCS", 2: "PNES"}
    for kwargs in ({"num_labels": 3}, {"id2label": labels, "label2id": {v: k for k, v in labels.items()}}):
        with pytest.warns(UserWarning, match="class_weights has 2 entries for 3 labels.*dropping them"):
            model = GesturesForVideoClassification.from_pretrained(demo_dir.parent / "weighted",
                                                                   ignore_mismatched_sizes=True, **kwargs)
        assert model.config.class_weights is None and model.classifier.out_features == 3
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        model.train()
        out = model(pixel_values=torch.randn(2, 2, 3, 8, 64, 64), labels=torch.tensor([0, 2]))
        out.loss.backward()
        optimizer.step()
        changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
        assert {"classifier.weight", "classifier.bias"} <= changed
        assert not any(name.startswith("gestures.encoder.") for name in changed)
        assert any(name.startswith("gestures.aggregator.") for name in changed)


def test_hidden_states_unknown_arguments_and_wrong_snippet_size(demo_dir):
    model = GesturesForVideoClassification.from_pretrained(demo_dir).eval()
    pixels = torch.randn(1, 3, 3, 8, 64, 64)
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    encoder_states, aggregator_states = out.hidden_states
    assert encoder_states.shape == (1, 3, 128) and aggregator_states.shape == (1, 3, 128)
    torch.testing.assert_close(encoder_states, out.snippet_features)
    torch.testing.assert_close(aggregator_states, out.last_hidden_state)
    assert model(pixel_values=pixels).hidden_states is None
    with pytest.raises(ValueError, match="no attention weights"):
        model(pixel_values=pixels, output_attentions=True)
    with pytest.raises(TypeError, match="pixel_valuez"):
        model(pixel_valuez=pixels)
    with pytest.raises(ValueError, match=r"64x64 \(the model's image_size\); got \(3, 3, 8, 112, 112\)"):
        model(pixel_values=torch.randn(1, 3, 3, 8, 112, 112))


def test_synthetic_flag_survives_save_load_save(demo_dir, tmp_path):
    first = GesturesForVideoClassification.from_pretrained(demo_dir)
    assert first.config.trained_on_synthetic_data and first.config.notice
    first.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["trained_on_synthetic_data"] is True
    fresh = GesturesForVideoClassification(get_config("gestures-demo"))
    assert not fresh.config.trained_on_synthetic_data and fresh.config.notice is None


def test_predict_from_a_model_without_synthetic_flag_has_no_notice(cohort):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GesturesForVideoClassification(get_config("gestures-demo")).eval()
    prediction = predict_video(model, tcs_video(cohort))
    assert prediction.notice is None and not prediction.demo
