"""Feature-dataset schema, atomic shards, resume bookkeeping and loading with `datasets`."""

import json

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest

from gestures_hub import features as F

DIM = 4


def settings(**overrides):
    values = dict(
        encoder="r2plus1d_34", fps=15.0, frames_per_snippet=8, stride=1, feature_dim=DIM, image_size=112
    )
    return F.FeatureSettings(**{**values, **overrides})


def row(video, n=5, label="FOS", **overrides):
    values = {
        "video": video,
        "patient": "061",
        "seizure": "05",
        "view": "Large",
        "label": label,
        "duration": (n - 1 + 8) / 15,
        "onset_bilateral": None,
        "start_times": np.arange(n) / 15,
        "features": np.arange(n * DIM, dtype=np.float32).reshape(n, DIM),
    }
    return {**values, **overrides}


@pytest.fixture
def out_dir(tmp_path):
    out = tmp_path / "feats"
    F.write_settings(out, settings())
    return out


def test_write_and_load_with_datasets(out_dir):
    F.write_shard(out_dir, [row("a", n=3), row("b", n=6, label="TCS", onset_bilateral=2.5)], 0)
    F.write_shard(out_dir, [row("c", n=4, label="")], 1)
    assert [p.name for p in F.shard_paths(out_dir)] == ["train-00000.parquet", "train-00001.parquet"]

    ds = datasets.load_dataset(str(out_dir), split="train")
    assert ds["video"][:] == ["a", "b", "c"]
    assert ds.features["label"].names == ["FOS", "TCS"]
    assert ds["label"][:] == [0, 1, -1]
    assert ds.features["features"] == datasets.Array2D(shape=(None, DIM), dtype="float32")
    assert ds.features["start_times"] == datasets.List(datasets.Value("float32"))
    assert ds["onset_bilateral"][:] == [None, 2.5, None]
    assert ds["num_snippets"][:] == [3, 6, 4]
    b = ds.with_format("numpy")[1]
    assert b["features"].dtype == np.float32 and b["features"].shape == (6, DIM)
    np.testing.assert_array_equal(b["features"], row("b", n=6)["features"])
    np.testing.assert_allclose(b["start_times"], np.arange(6) / 15, rtol=1e-6)


def test_load_features_and_settings(out_dir):
    F.write_shard(out_dir, [row("a")], 0)
    ds = F.load_features(out_dir)
    assert len(ds) == 1
    expected = settings().to_dict()
    assert F.dataset_settings(ds) == expected
    assert F.read_settings(out_dir) == expected
    assert json.loads((out_dir / F.SETTINGS_FILENAME).read_text()) == expected
    metadata = pq.read_schema(F.shard_paths(out_dir)[0]).metadata
    assert json.loads(metadata[F.METADATA_KEY]) == expected
    (out_dir / F.SETTINGS_FILENAME).unlink()  # the shard metadata is the fallback
    assert F.read_settings(out_dir) == expected


def test_adding_shards_later_is_seen(out_dir):
    F.write_shard(out_dir, [row("a")], 0)
    assert len(F.load_features(out_dir)) == 1
    F.write_shard(out_dir, [row("b"), row("c")], 1)
    assert sorted(F.load_features(out_dir)["video"]) == ["a", "b", "c"]


def test_failed_write_leaves_no_partial_shard(out_dir, monkeypatch):
    def broken_write(table, file):
        file.write(b"PAR1 partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(F.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        F.write_shard(out_dir, [row("a")], 0)
    assert list((out_dir / "data").iterdir()) == []
    assert F.completed_videos(out_dir) == set()
    monkeypatch.undo()
    F.write_shard(out_dir, [row("a")], 0)
    assert F.completed_videos(out_dir) == {"a"}


def test_hidden_temp_files_are_ignored_by_load_dataset(out_dir):
    F.write_shard(out_dir, [row("a")], 0)
    (out_dir / "data" / ".train-00001.parquet.x1.tmp").write_bytes(b"PAR1 partial")
    assert F.load_features(out_dir)["video"][:] == ["a"]
    assert F.completed_videos(out_dir) == {"a"}


def test_resume_with_writer(out_dir):
    with F.FeatureShardWriter(out_dir, settings(), videos_per_shard=2) as writer:
        assert writer.add(row("a")) is None
        assert writer.add(row("b")).name == "train-00000.parquet"
        writer.add(row("c"))
    assert F.completed_videos(out_dir) == {"a", "b", "c"}

    (out_dir / "data" / ".train-00002.parquet.stale.tmp").write_bytes(b"x")  # left by a killed run
    (out_dir / "data" / "..train-00001.parquet.sha256.stale.tmp").write_bytes(b"x")  # a checksum's, killed mid-write
    writer = F.FeatureShardWriter(out_dir, settings(package_version="9.9"), videos_per_shard=2)
    assert writer.done == {"a", "b", "c"}
    assert not list((out_dir / "data").glob(".*.tmp"))
    with pytest.raises(ValueError, match="'b' already has a row"):
        writer.add(row("b"))
    writer.add(row("d"))
    assert writer.flush().name == "train-00002.parquet"
    assert writer.flush() is None
    assert sorted(F.load_features(out_dir)["video"]) == ["a", "b", "c", "d"]


def test_writer_flushes_finished_videos_on_error(out_dir):
    with (
        pytest.raises(RuntimeError),
        F.FeatureShardWriter(out_dir, settings(), videos_per_shard=10) as writer,
    ):
        writer.add(row("a"))
        raise RuntimeError("extraction crashed")
    assert F.completed_videos(out_dir) == {"a"}


def test_settings_mismatch_is_refused(out_dir):
    F.write_shard(out_dir, [row("a")], 0)
    with pytest.raises(ValueError, match="extracted with"):
        F.FeatureShardWriter(out_dir, settings(stride=2))


def test_duplicates_and_existing_shards_are_refused(out_dir):
    F.write_shard(out_dir, [row("a")], 0)
    with pytest.raises(FileExistsError):
        F.write_shard(out_dir, [row("b")], 0)
    with pytest.raises(ValueError, match=r"\['a'\]"):
        F.write_shard(out_dir, [row("a")], 1)
    with pytest.raises(ValueError, match=r"\['b'\]"):
        F.write_shard(out_dir, [row("b"), row("b")], 1)


def test_write_shard_needs_settings(tmp_path):
    with pytest.raises(FileNotFoundError, match=F.SETTINGS_FILENAME):
        F.write_shard(tmp_path, [row("a")], 0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"features": np.zeros((5, DIM + 1), np.float32)}, r"shape \(n_snippets >= 1, 4\)"),
        ({"features": np.zeros((0, DIM), np.float32), "start_times": []}, "shape"),
        ({"features": np.full((5, DIM), np.nan, np.float32)}, "NaN"),
        ({"start_times": np.arange(4) / 15}, "one value per snippet"),
        ({"start_times": np.zeros(5)}, "strictly increasing"),
        ({"label": "GTCS"}, "label must be one of"),
        ({"duration": -1.0}, "duration"),
        ({"onset_bilateral": float("inf")}, "onset_bilateral"),
        ({"patient": 61}, "patient must be a string"),
        ({"num_snippets": 4}, "num_snippets=4"),
    ],
)
def test_bad_rows_are_rejected_naming_the_video(out_dir, overrides, message):
    with pytest.raises(ValueError, match=message) as info:
        F.write_shard(out_dir, [row("good"), row("bad_video", **overrides)], 0)
    assert "'bad_video'" in str(info.value)
    assert F.shard_paths(out_dir) == []


def test_row_without_video_id(out_dir):
    with pytest.raises(ValueError, match="video id"):
        F.write_shard(out_dir, [row("")], 0)


def test_label_encoding():
    assert [F.encode_label(x) for x in ("FOS", "TCS", "", None, -1, 0, 1)] == [0, 1, -1, -1, -1, 0, 1]
    with pytest.raises(ValueError):
        F.encode_label(2)


def test_settings_validation():
    with pytest.raises(ValueError, match="stride"):
        settings(stride=0)
    with pytest.raises(ValueError, match="lack"):
        F.FeatureSettings.from_dict({"encoder": "x"})
