"""One long video's time ranges split across ``accelerate launch`` processes (gestures_hub.rank_split): the processes'
parts join into the features, snippet times and damage report of one process's sequential extraction."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import accelerate_launch, checkout_env
from test_damage import jumping_mp4
from tqdm.auto import tqdm

from gestures_hub import GesturesForVideoClassification
from gestures_hub.decode_workers import DecodeSettings
from gestures_hub.extract import extract
from gestures_hub.features import shard_paths
from gestures_hub.model.video_reader import DecodeReport, iter_frames
from gestures_hub.presets import get_config
from gestures_hub.rank_split import extract_parts, join_parts, part_path, plan_ranks
from gestures_hub.sample_videos import write_test_video
from gestures_hub.snippet_encoder import SnippetEncoder, choose_runtime

SETTINGS = DecodeSettings(15, 32, "crop_and_pad", frames_per_snippet=4, stride=2, chunk_snippets=8)  # tiny-videomae's


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {"long60.mp4": write_test_video(folder / "long60.mp4", duration=12, fps=60, pattern="bar"),
            "short25.mp4": write_test_video(folder / "short25.mp4", duration=2.5, fps=25, pattern="bar"),
            "jump_one.mp4": jumping_mp4(folder, from_packet_on=False)}


@pytest.fixture(scope="module")
def encoder() -> SnippetEncoder:
    torch.manual_seed(0)
    model = GesturesForVideoClassification(get_config("tiny-videomae")).eval()  # 4-frame 32x32 snippets, 15 fps
    return SnippetEncoder(model, choose_runtime(model.config.encoder, "cpu", "fp32", batch_size=3))


def test_long_videos_are_split_over_the_processes_the_others_dealt_whole():
    durations = [12.0, 2.5, 3.0, None, 30.0]  # 47.5 s: a share is 15.8 s of 3 processes; only the last is longer
    plans = [plan_ranks(durations, SETTINGS, rank, 3) for rank in range(3)]
    assert [plan.whole for plan in plans] == [[2], [0, 3], [1]] and all(plan.split == 1 for plan in plans)
    assert [plan.owns for plan in plans] == [{4: 3}, {}, {}]
    parts = sorted((part.number, rank, part) for rank, plan in enumerate(plans) for part in plan.parts)
    assert [(number, rank) for number, rank, _ in parts] == [(0, 0), (1, 1), (2, 2)]  # the owner takes the first
    assert [pair for _, _, part in parts for pair in part.ranges] == SETTINGS.ranges(30.0, None, parts=3)
    # with 2 decoders a process, twice as many ranges, still one block per process
    two = [plan_ranks(durations, SETTINGS, rank, 3, ranges_per_part=2) for rank in range(3)]
    assert [len(plan.parts[0].ranges) for plan in two] == [2, 2, 2]
    assert [pair for plan in two for pair in plan.parts[0].ranges] == SETTINGS.ranges(30.0, None, parts=6)
    assert len(SETTINGS.ranges(30.0, None, parts=6)) == 6 and SETTINGS.ranges(0.6, None, parts=6) == [
        (0, SETTINGS.ranges(0.6, None)[0][1])]  # 3 snippets: one range
    alone = plan_ranks(durations, SETTINGS, 0, 1)
    assert alone.whole == [0, 1, 2, 3, 4] and not alone.parts and not alone.split
    tiny = plan_ranks([0.6, 0.1], SETTINGS, 0, 2)  # longer than its share, but 3 snippets: one range, whole
    assert tiny.whole == [0] and not tiny.parts and not tiny.split


@pytest.mark.parametrize("workers", [0, 2])
def test_the_parts_of_every_process_join_into_the_sequential_extraction(videos, encoder, tmp_path, workers):
    names = ["long60.mp4", "jump_one.mp4"]
    paths, durations = [videos[name] for name in names], [12.0, 3.0]
    for rank in range(2):  # each process's parts, one after the other here
        extract_parts(encoder, paths, names, plan_ranks(durations, SETTINGS, rank, 2).parts, workers, SETTINGS,
                      tmp_path, tqdm(disable=True))
    owner = plan_ranks(durations, SETTINGS, 0, 2)
    assert owner.owns == {0: 2}
    joined = join_parts(tmp_path, "long60.mp4", 2, SETTINGS)
    features, starts = encoder.video(videos["long60.mp4"], stride=2)
    np.testing.assert_allclose(joined.features, features, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(joined.start_times, starts)
    whole = DecodeReport()
    list(iter_frames(videos["long60.mp4"], fps=15, size=32, geometry="crop_and_pad", report=whole))
    assert joined.report == whole and joined.warnings == []
    assert not part_path(tmp_path, "long60.mp4", 0).exists()  # removed once joined


def test_a_part_that_cannot_be_decoded_apart_makes_the_owner_extract_the_video_whole(videos, encoder, tmp_path):
    plans = [plan_ranks([3.0], SETTINGS, rank, 2) for rank in range(2)]
    for plan in plans:  # the timestamp jump is in the first part
        extract_parts(encoder, [videos["jump_one.mp4"]], ["jump_one.mp4"], plan.parts, 0, SETTINGS, tmp_path,
                      tqdm(disable=True))
    assert join_parts(tmp_path, "jump_one.mp4", 2, SETTINGS) is None
    assert part_path(tmp_path, "jump_one.mp4", 1).exists()  # kept until the next run clears them


def test_two_processes_split_one_long_video_and_write_what_one_process_would(videos, tmp_path):
    folder = videos["long60.mp4"].parent
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["video", "patient", "seizure", "label"])
        writer.writerows([[name, f"p{index}", "s1", "FOS"] for index, name in enumerate(["long60.mp4", "short25.mp4"])])
    torch.manual_seed(0)
    GesturesForVideoClassification(get_config("tiny-videomae")).eval().save_pretrained(tmp_path / "model")
    alone = extract(manifest, tmp_path / "model", tmp_path / "alone", stride=2, precision="fp32", progress=False)
    assert alone.split == {}
    command = [*accelerate_launch(2), "-m", "gestures_hub.extract", "--manifest", str(manifest), "--model",
               str(tmp_path / "model"), "--out", str(tmp_path / "two"), "--stride", "2", "--precision", "fp32",
               "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env=checkout_env(ACCELERATE_USE_CPU="true"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SPLIT   long60.mp4: its time ranges were extracted by 2 processes" in result.stdout
    expected, got = ({row["video"]: row for row in datasets.load_dataset(str(tmp_path / out), split="train")
                      .with_format("numpy")} for out in ("alone", "two"))
    assert sorted(got) == sorted(expected) == ["long60.mp4", "short25.mp4"]
    for name, row in expected.items():
        np.testing.assert_allclose(got[name]["features"], row["features"], atol=1e-6, rtol=0, err_msg=name)
        np.testing.assert_array_equal(got[name]["start_times"], row["start_times"], err_msg=name)
    # the owner of the split video (process 0) wrote its row; process 1 the short one, dealt to it whole
    shards = {int(path.stem.split("-")[1]): pq.read_table(path, columns=["video"]).column("video").to_pylist()
              for path in shard_paths(tmp_path / "two")}
    assert shards == {0: ["long60.mp4"], 1: ["short25.mp4"]}
    assert not (tmp_path / "two" / ".parts").exists() or not any((tmp_path / "two" / ".parts").iterdir())
