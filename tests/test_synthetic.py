"""The synthetic cohort: determinism, durations and rates, ground truth matching the pixels, manifest, CLI."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest

from gestures_hub.cli import main
from gestures_hub.synthetic import MANIFEST_COLUMNS, SeizureSpec, generate_cohort, sample_cohort
from gestures_hub.synthetic_render import render_video

SMALL = {"width": 160, "height": 120, "fps": 25}


def decode(path: Path, fmt: str = "rgb24") -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format=fmt) for frame in container.decode(video=0)])


def side_motion(path: Path, spec: SeizureSpec, threshold: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame fraction of changing pixels on each side of the body midline, from the shoulders down.

    Valid for the default camera (angle 0, no tilt): the bed axis is horizontal, through the centre row.
    """
    gray = decode(path, "gray").astype(np.int16)
    _, height, width = gray.shape
    scale = spec.camera.zoom * width
    first_column = int(width / 2 + (-0.30 - spec.camera.focus[0]) * scale)
    margin = max(1, int(0.01 * scale))
    moving = np.abs(np.diff(gray, axis=0)) > threshold
    upper = moving[:, : height // 2 - margin, first_column:].mean(axis=(1, 2))
    lower = moving[:, height // 2 + margin :, first_column:].mean(axis=(1, 2))
    return upper, lower


def rendered(tmp_path: Path, **fields) -> tuple[SeizureSpec, Path]:
    spec = SeizureSpec(patient="t", seizure="01", duration=10.0, **SMALL, **fields)
    name = f"{spec.label}_{spec.focal}_{spec.seed}.mp4"
    return spec, render_video(spec, tmp_path / name)


def test_same_seed_same_frames_and_other_seed_differs(tmp_path):
    spec = sample_cohort(1, 7, seizures_per_patient=1, min_duration=10, max_duration=10, size=(160, 120))[0]
    first = decode(render_video(spec, tmp_path / "a.mp4"))
    again = decode(render_video(spec, tmp_path / "b.mp4"))
    other = decode(render_video(dataclasses.replace(spec, seed=spec.seed + 1), tmp_path / "c.mp4"))
    assert np.array_equal(first, again)
    assert first.shape == other.shape and not np.array_equal(first, other)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"], "temporary files are renamed or removed"


def test_cohort_sampling_is_stable_and_seeded():
    small = sample_cohort(2, 3)
    assert sample_cohort(3, 3)[: len(small)] == small, "adding patients keeps existing videos"
    assert sample_cohort(2, 3) == small
    other = sample_cohort(2, 4)
    assert not {s.patient for s in small} & {s.patient for s in other}
    assert len({s.seed for s in small + other}) == len(small + other)


def test_durations_frame_rates_and_labels():
    specs = sample_cohort(10, 0, seizures_per_patient=3, min_duration=12, max_duration=200, fps=25,
                          size=(640, 480), tcs_fraction=0.4)
    assert all(12 <= s.duration <= 200 and s.fps == 25 and (s.width, s.height) == (640, 480) for s in specs)
    assert max(s.duration for s in specs) > 60
    assert abs(sum(s.label == "TCS" for s in specs) - 0.4 * len(specs)) <= 1
    for s in specs:
        if s.label == "TCS":
            assert 0 < s.onset < s.onset_bilateral < s.tonic_end < s.offset <= s.duration
        else:
            assert s.onset_bilateral is None and 0 < s.onset < s.offset <= s.duration


def test_video_has_requested_duration_rate_and_size(tmp_path):
    spec = SeizureSpec(patient="t", seizure="01", label="FOS", duration=10.4, width=160, height=120, fps=25)
    path = render_video(spec, tmp_path / "v.mp4")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 25
        assert stream.codec_context.name == "h264"
        assert "SYNTHETIC" in container.metadata.get("comment", "")
        frames = [f for f in container.decode(video=0)]
    assert len(frames) == spec.n_frames == 260
    assert (frames[0].width, frames[0].height, frames[0].format.name) == (160, 120, "yuv420p")


@pytest.mark.parametrize("focal", ["clonic_arm", "face", "automatisms"])
def test_tcs_bilateral_motion_starts_at_onset_bilateral(tmp_path, focal):
    spec, path = rendered(tmp_path, label="TCS", focal=focal, side="right", seed=11)
    upper, lower = side_motion(path, spec)
    t = np.arange(1, spec.n_frames) / spec.fps
    both = np.minimum(upper, lower)  # motion on the quieter side
    before = both[t < spec.onset_bilateral].mean()
    after = both[(t >= spec.onset_bilateral) & (t < spec.offset)].mean()
    assert after > 0.004 and after > 10 * before
    clonic = (t > spec.tonic_end) & (t < spec.offset)
    assert np.corrcoef(upper[clonic], lower[clonic])[0, 1] > 0.8, "clonic jerks are bilateral and synchronous"


@pytest.mark.parametrize("focal", ["clonic_arm", "clonic_leg", "version", "automatisms", "face"])
def test_fos_motion_is_lateralised(tmp_path, focal):
    spec, path = rendered(tmp_path, label="FOS", focal=focal, side="left", seed=5)
    upper, lower = side_motion(path, spec)
    t = np.arange(1, spec.n_frames) / spec.fps
    ictal = (t >= spec.onset) & (t < spec.offset)
    left, right = upper[ictal].mean(), lower[ictal].mean()  # the patient's left is up in the image
    assert right < 0.15 * left + 5e-4
    if focal != "face":  # facial twitching stays out of the body
        assert left > 0.002


def test_hypermotor_fos_is_bilateral_but_not_synchronous(tmp_path):
    spec, path = rendered(tmp_path, label="FOS", focal="hypermotor", seed=3)
    upper, lower = side_motion(path, spec)
    t = np.arange(1, spec.n_frames) / spec.fps
    ictal = (t >= spec.onset) & (t < spec.offset)
    assert min(upper[ictal].mean(), lower[ictal].mean()) > 0.004
    assert np.corrcoef(upper[ictal], lower[ictal])[0, 1] < 0.75


def test_distractors_are_rendered(tmp_path):
    plain, plain_path = rendered(tmp_path, label="FOS", focal="face", seed=2)
    busy = dataclasses.replace(plain, walker=4.0, blanket=0.0)
    base, other = decode(plain_path), decode(render_video(busy, tmp_path / "busy.mp4"))
    assert np.abs(base[0].astype(int) - other[0]).mean() > 5, "the blanket covers the legs"
    changes = np.abs(np.diff(other.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    t = np.arange(1, busy.n_frames) / busy.fps
    assert changes[(t > 4.5) & (t < 6.0)].mean() > 3 * changes[t < busy.onset].mean(), "a person walks by"


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        return list(reader)


def test_generate_cohort_writes_manifest_with_relative_paths(tmp_path):
    manifest = generate_cohort(tmp_path / "cohort", 2, 5, seizures_per_patient=1, min_duration=10,
                               max_duration=10.5, size=(160, 120), fps=25, tcs_fraction=0.5, progress=False)
    assert manifest == tmp_path / "cohort" / "manifest.csv" and (manifest.parent / "SYNTHETIC").is_file()
    rows = read_manifest(manifest)
    assert len(rows) == 2 and {r["label"] for r in rows} == {"FOS", "TCS"}
    for row in rows:
        assert not Path(row["video"]).is_absolute() and (manifest.parent / row["video"]).is_file()
        assert row["patient"].startswith("syn5p") and row["view"] == "Large" and row["synthetic"] == "true"
        duration = float(row["duration"])
        assert 10 <= duration <= 10.5
        if row["label"] == "TCS":
            assert 0 < float(row["onset_bilateral"]) < duration
        else:
            assert row["onset_bilateral"] == ""


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["synth", "--out", str(out), "--patients", "1", "--seed", "9", "--seizures-per-patient", "1",
                 "--min-duration", "10", "--max-duration", "10", "--size", "160x120", "--fps", "25",
                 "--views", "L,S", "--quiet"])
    assert code == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    rows = read_manifest(out / "manifest.csv")
    assert [r["view"] for r in rows] == ["Large", "Small"] and len({r["seizure"] for r in rows}) == 1
    assert all((out / r["video"]).is_file() for r in rows)
    assert main(["synth", "--out", str(out), "--patients", "0"]) == 2


def test_cli_rejects_bad_size():
    with pytest.raises(SystemExit):
        main(["synth", "--out", "x", "--size", "161x120"])
