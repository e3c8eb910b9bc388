"""GESTURES segment sampling (checked against the original code's formulas) and batching."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from gestures_hub import features as F
from gestures_hub.sampling import (
    SnippetSequenceDataset,
    collate_sequences,
    draw_indices,
    min_vectors,
    parse_gamma,
    segment_indices,
    segment_ranges,
)


def original_ranges(num_vectors, frames_per_clip, num_chunks):
    """The original get_chunks + first/last possible start (stride 1)."""
    chunks = np.array_split(np.arange(num_vectors + frames_per_clip - 1), num_chunks)
    return [(int(c[0]), int(c[-1] - frames_per_clip + 1)) for c in chunks]


@pytest.mark.parametrize(
    ("num_vectors", "num_segments", "frames"), [(137, 16, 8), (500, 16, 8), (1000, 4, 32), (61, 3, 5)]
)
def test_ranges_match_original(num_vectors, num_segments, frames):
    ranges = segment_ranges(num_vectors, num_segments=num_segments, frames_per_snippet=frames)
    assert ranges == original_ranges(num_vectors, frames, num_segments)


def test_middle_is_the_formula_with_bankers_rounding():
    # 15 vectors, T=8 -> 22 frames -> chunks [0..10], [11..21] -> starts (0, 3), (11, 14)
    indices = segment_indices(15, num_segments=2, frames_per_snippet=8, gamma="middle")
    assert indices.tolist() == [2, 12]  # round(1.5) == 2, round(12.5) == 12
    for n in (137, 300, 1001):
        expected = [int(round((a + b) / 2)) for a, b in original_ranges(n, 8, 16)]
        assert segment_indices(n, num_segments=16, frames_per_snippet=8).tolist() == expected
        assert (
            segment_indices(n, num_segments=16, frames_per_snippet=8, gamma=float("inf")).tolist() == expected
        )


def draws(gamma, num_draws=3000, num_vectors=200, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            segment_indices(num_vectors, num_segments=4, frames_per_snippet=8, gamma=gamma, rng=rng)
            for _ in range(num_draws)
        ]
    )


def test_uniform_covers_every_allowed_start_evenly():
    samples = draws(1)
    for column, (first, last) in zip(samples.T, original_ranges(200, 8, 4), strict=True):
        values, counts = np.unique(column, return_counts=True)
        assert values.tolist() == list(range(first, last + 1))
        assert counts.min() > 0.5 * counts.mean()  # no half-weight end points


def test_beta_concentrates_in_the_middle():
    uniform, beta = draws(1), draws(4)
    for segment, (first, last) in enumerate(original_ranges(200, 8, 4)):
        assert first <= beta[:, segment].min() and beta[:, segment].max() <= last
        quarter = (last - first) / 4
        central = np.abs(beta[:, segment] - (first + last) / 2) <= quarter
        assert central.mean() > 0.8  # Beta(4, 4): ~0.82 within the middle half; uniform: 0.5
        assert beta[:, segment].std() < 0.7 * uniform[:, segment].std()
        assert abs(beta[:, segment].mean() - (first + last) / 2) < 0.5


def test_seed_reproducibility():
    kwargs = dict(num_segments=16, frames_per_snippet=8, gamma=4)
    a = segment_indices(1000, rng=123, **kwargs)
    assert a.tolist() == segment_indices(1000, rng=np.random.default_rng(123), **kwargs).tolist()
    assert a.tolist() != segment_indices(1000, rng=124, **kwargs).tolist()
    assert a.dtype == np.int64 and (np.diff(a) > 0).all()


@pytest.mark.parametrize("stride", [1, 2, 3, 5])
@pytest.mark.parametrize(("num_segments", "frames"), [(16, 8), (4, 32), (2, 1)])
def test_min_vectors_is_the_shortest_usable_length(num_segments, frames, stride):
    shortest = min_vectors(num_segments, frames, stride)
    segment_indices(shortest, num_segments=num_segments, frames_per_snippet=frames, stride=stride)
    with pytest.raises(ValueError, match="not more than frames_per_snippet"):
        segment_indices(shortest - 1, num_segments=num_segments, frames_per_snippet=frames, stride=stride)


def test_short_segment_error_names_the_video():
    assert min_vectors(16, 8) == 137
    with pytest.raises(
        ValueError, match=r"Segment \d+ of video '061_05_L' has 8 frames.*at least 137 vectors"
    ):
        segment_indices(136, num_segments=16, frames_per_snippet=8, video="061_05_L")


def test_stride_mapping_example():
    # 10 vectors, stride 4, T=8 -> 44 frames -> chunks [0..21], [22..43] -> starts (0, 14), (22, 36)
    assert segment_ranges(10, num_segments=2, frames_per_snippet=8, stride=4) == [(0, 14), (22, 36)]
    # middle frames 7 and 29 -> nearest vector starts 8 (vector 2) and 28 (vector 7)
    assert segment_indices(10, num_segments=2, frames_per_snippet=8, stride=4).tolist() == [2, 7]


@pytest.mark.parametrize("stride", [2, 3, 4, 8])
@pytest.mark.parametrize("gamma", [1, 4, "middle"])
def test_stride_draws_start_inside_their_segment(stride, gamma):
    rng = np.random.default_rng(0)
    for num_vectors in range(min_vectors(4, 8, stride), 60):
        ranges = segment_ranges(num_vectors, num_segments=4, frames_per_snippet=8, stride=stride)
        for _ in range(5):
            indices = segment_indices(
                num_vectors, num_segments=4, frames_per_snippet=8, stride=stride, gamma=gamma, rng=rng
            )
            assert ((indices >= 0) & (indices < num_vectors)).all()
            for index, (first, last) in zip(indices, ranges, strict=True):
                if any(first <= i * stride <= last for i in range(num_vectors)):
                    assert first <= index * stride <= last
                else:  # no vector starts in the range: the nearest one
                    assert abs(index * stride - (first + last) / 2) <= stride + (last - first) / 2


def test_stride_one_uniform_equals_frame_draws():
    a = segment_indices(300, num_segments=8, frames_per_snippet=8, stride=1, gamma=1, rng=5)
    rng = np.random.default_rng(5)
    expected = [int(rng.integers(first, last + 1)) for first, last in original_ranges(300, 8, 8)]
    assert a.tolist() == expected


def test_stride_one_beta_equals_frame_draws():
    a = segment_indices(300, num_segments=8, frames_per_snippet=8, stride=1, gamma=4, rng=5)
    rng = np.random.default_rng(5)
    samples = rng.beta(4, 4, 8)
    expected = [
        round(x * (last - first) + first) for x, (first, last) in zip(samples, original_ranges(300, 8, 8), strict=True)
    ]
    assert a.tolist() == expected


@pytest.mark.parametrize("stride", [1, 2, 3, 4, 5, 8, 16])
@pytest.mark.parametrize(("num_segments", "frames"), [(4, 8), (16, 8), (3, 32)])
def test_middle_is_the_allowed_vector_nearest_the_middle_frame(num_segments, frames, stride):
    shortest = min_vectors(num_segments, frames, stride)
    for num_vectors in range(shortest, shortest + 40):
        expected = []
        for first, last in segment_ranges(num_vectors, num_segments=num_segments, frames_per_snippet=frames,
                                          stride=stride):
            middle = round((first + last) / 2)
            allowed = [i for i in range(num_vectors) if first <= i * stride <= last] or range(num_vectors)
            expected.append(min(allowed, key=lambda i: (abs(i * stride - middle), i % 2)))  # ties to even
        indices = segment_indices(num_vectors, num_segments=num_segments, frames_per_snippet=frames, stride=stride)
        assert indices.tolist() == expected


NUM_DRAWS = 50_000


def window_overlaps(first: int, last: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """The vectors starting in [first, last], and how many frames of [first, last] each one's window
    [i*s - s//2, i*s - s//2 + s) holds."""
    vectors = np.arange(-(-first // stride), last // stride + 1)
    start = vectors * stride - stride // 2
    return vectors, np.minimum(start + stride, last + 1) - np.maximum(start, first)


def uniform_draws(ranges: list[tuple[int, int]], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(NUM_DRAWS, len(ranges)) gamma=1 draws with draw_indices, and with the previous rule (nearest vector by
    np.rint, ties to even, clipped to the vectors starting in the range), both seeded with the stride."""
    first, last = (np.broadcast_to(bound, (NUM_DRAWS, len(ranges))) for bound in np.array(ranges).T)
    new = draw_indices(first, last, 10**6, stride=stride, gamma=1, rng=np.random.default_rng(stride))
    frames = np.random.default_rng(stride).integers(first, last + 1)
    old = np.clip(np.rint(frames / stride), -(-first // stride), last // stride).astype(np.int64)
    return new, old


def pooled_chisquare(observed: list[np.ndarray], expected: list[np.ndarray]) -> float:
    """p-value of the chi-square test that every range's counts follow its expected counts (sum of k - 1 dof)."""
    return chisquare(np.concatenate(observed), np.concatenate(expected), ddof=len(observed) - 1).pvalue


@pytest.mark.parametrize("stride", [2, 4, 8, 16])
def test_stride_uniform_draws_interior_vectors_evenly(stride):
    num_vectors = 1 + 1600 // stride
    ranges = segment_ranges(num_vectors, num_segments=4, frames_per_snippet=8, stride=stride)
    interior = []
    for first, last in ranges:
        vectors, overlaps = window_overlaps(first, last, stride)
        interior.append(vectors[overlaps == stride])
        assert len(interior[-1]) >= 20

    def evenness(samples: np.ndarray) -> float:
        counts = [np.bincount(column, minlength=num_vectors)[i] for column, i in zip(samples.T, interior, strict=True)]
        return pooled_chisquare(counts, [np.full(len(c), c.mean()) for c in counts])

    new, old = uniform_draws(ranges, stride)
    assert evenness(new) > 0.01
    assert evenness(old) < 0.01  # even vectors drawn (s + 1) / (s - 1) as often as odd ones


@pytest.mark.parametrize("stride", [2, 4, 8, 16])
def test_stride_uniform_draws_boundary_vectors_by_window_share(stride):
    # first or last allowed vector keeping part of its window, or range ends holding frames of the windows of
    # vectors that start outside the range (which clipping gives to the boundary vectors)
    ranges = [(5 * stride + a, 11 * stride + b) for a, b in [(0, 1), (1, -1), (-1, 0)]]
    new, old = uniform_draws(ranges, stride)
    observed, expected, old_observed = [], [], []
    for segment, (first, last) in enumerate(ranges):
        vectors, overlaps = window_overlaps(first, last, stride)
        values, counts = np.unique(new[:, segment], return_counts=True)
        assert values.tolist() == vectors.tolist()
        observed.append(counts)
        expected.append(NUM_DRAWS * overlaps / overlaps.sum())
        old_observed.append(np.bincount(old[:, segment] - vectors[0], minlength=len(vectors)))
    assert pooled_chisquare(observed, expected) > 0.01
    assert pooled_chisquare(old_observed, expected) < 0.01


def test_gamma_parsing():
    assert parse_gamma("middle") is None and parse_gamma(float("inf")) is None
    assert parse_gamma("4") == 4.0 and parse_gamma(1) == 1.0
    for bad in (0, -1, "beta", float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            parse_gamma(bad)


def make_dataset(tmp_path, lengths, stride=1):
    out = tmp_path / "feats"
    settings = F.FeatureSettings("enc", 15.0, 8, stride, 3, 112)
    rows = [
        {
            "video": f"v{i}",
            "label": ("FOS", "TCS", "")[i % 3],
            "duration": 10.0,
            "start_times": np.arange(n) * stride / 15,
            "features": np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, axis=1),
        }
        for i, n in enumerate(lengths)
    ]
    with F.FeatureShardWriter(out, settings) as writer:
        for r in rows:
            writer.add(r)
    return F.load_features(out)


def test_torch_dataset_modes(tmp_path):
    ds = make_dataset(tmp_path, [40, 57, 100], stride=2)
    middle = SnippetSequenceDataset(ds, num_segments=4)
    assert (middle.frames_per_snippet, middle.stride) == (8, 2)
    item = middle[1]
    expected = segment_indices(57, num_segments=4, frames_per_snippet=8, stride=2)
    assert item["snippet_indices"].tolist() == expected.tolist()
    assert item["snippet_features"].dtype == torch.float32 and item["snippet_features"].shape == (4, 3)
    assert item["snippet_features"][:, 0].tolist() == expected.tolist()  # row i holds value i
    torch.testing.assert_close(item["start_times"], torch.tensor(expected * 2 / 15, dtype=torch.float32))
    assert (item["label"], item["video"]) == (1, "v1")
    assert middle[2]["label"] == -1

    jittered = SnippetSequenceDataset(ds, num_segments=4, gamma=4)
    torch.manual_seed(0)
    first = [jittered[2]["snippet_indices"].tolist() for _ in range(5)]
    torch.manual_seed(0)
    assert first == [jittered[2]["snippet_indices"].tolist() for _ in range(5)]
    assert len({tuple(x) for x in first}) > 1

    dense = SnippetSequenceDataset(ds, dense=True)
    assert dense[0]["snippet_features"].shape == (40, 3)


def test_torch_dataset_rejects_short_videos(tmp_path):
    ds = make_dataset(tmp_path, [136, 137, 20])
    with pytest.raises(ValueError, match=r"2 video\(s\) have fewer than 137 snippets.*\['v0', 'v2'\]"):
        SnippetSequenceDataset(ds, num_segments=16)
    kept = ds.filter(lambda n: n >= min_vectors(16, 8), input_columns="num_snippets")
    assert SnippetSequenceDataset(kept, num_segments=16)[0]["video"] == "v1"


def test_collate_pads_and_masks(tmp_path):
    ds = make_dataset(tmp_path, [5, 2, 3])
    loader = torch.utils.data.DataLoader(
        SnippetSequenceDataset(ds, dense=True), batch_size=3, collate_fn=collate_sequences
    )
    batch = next(iter(loader))
    assert batch["snippet_features"].shape == (3, 5, 3) and batch["snippet_features"].dtype == torch.float32
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]
    assert batch["lengths"].tolist() == [5, 2, 3]
    assert batch["labels"].tolist() == [0, 1, -100] and batch["labels"].dtype == torch.long  # unknown: ignored
    assert batch["video"] == ["v0", "v1", "v2"]
    assert batch["snippet_features"][1, :, 0].tolist() == [0, 1, 0, 0, 0]
    assert batch["snippet_indices"][2].tolist() == [0, 1, 2, -1, -1]
    assert batch["start_times"].shape == (3, 5)


def test_collate_minimal_items_and_errors():
    batch = collate_sequences(
        [
            {"snippet_features": np.ones((2, 4)), "label": 1, "video": "a"},
            {"snippet_features": np.ones((1, 4)), "label": 0, "video": "b"},
        ]
    )
    assert "start_times" not in batch and batch["attention_mask"].tolist() == [[1, 1], [1, 0]]
    with pytest.raises(ValueError, match="at least one"):
        collate_sequences([])
    with pytest.raises(ValueError, match="common dim"):
        collate_sequences(
            [
                {"snippet_features": np.ones((2, 4)), "label": 1, "video": "a"},
                {"snippet_features": np.ones((2, 3)), "label": 0, "video": "b"},
            ]
        )


def test_data_collator_batches_a_features_dataset_like_one_video_at_a_time(tmp_path):
    """The public collator on `load_features(...).with_format("torch")` rows (10-15 snippets each): padded batches
    give the logits of each video alone, and `model(**batch)` computes the loss."""
    from cards_fixtures import write_features

    from gestures_hub import GesturesForVideoClassification
    from gestures_hub.features import load_features
    from gestures_hub.presets import get_config
    from gestures_hub.sampling import DataCollatorForSnippetFeatures

    features = load_features(write_features(tmp_path / "features", num_videos=6)).with_format("torch")
    torch.manual_seed(0)
    model = GesturesForVideoClassification(get_config("tiny-features", aggregation="blstm")).eval()
    loader = torch.utils.data.DataLoader(features, batch_size=4, collate_fn=DataCollatorForSnippetFeatures())
    batches = list(loader)
    assert [tuple(b["snippet_features"].shape) for b in batches] == [(4, 13, 16), (2, 15, 16)]
    assert set(batches[0]) == {"snippet_features", "attention_mask", "labels"}
    assert batches[0]["attention_mask"].sum(1).tolist() == [10, 11, 12, 13]
    with torch.no_grad():
        batched = torch.cat([model(**batch).logits for batch in batches])
        alone = torch.cat([model(snippet_features=row["features"][None]).logits for row in features])
        assert model(**batches[0]).loss.ndim == 0
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)
    assert batches[0]["labels"].tolist() == [int(row["label"]) for row in features][:4]
    with pytest.raises(KeyError, match="needs 'features' and 'label'"):
        DataCollatorForSnippetFeatures()([{"features": torch.zeros(2, 16)}])
