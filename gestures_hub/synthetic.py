"""Synthetic seizure videos with ground truth: a procedurally rendered patient in bed.

No real seizure video or trained weight ships with this package, so demos and tests run on this cohort.
Each video shows a figure (head, trunk, four limbs) lying in bed, filmed from above, whose joint angles
follow a seizure timeline:

* baseline: quiet lying with breathing (sometimes one voluntary arm movement);
* FOS: focal semiology only (unilateral clonic jerks of an arm or a leg, facial twitching, head version
  with unilateral posturing, hand and oral automatisms, or hypermotor flailing with no rhythmic bilateral
  phase), then postictal calm;
* TCS: the same kinds of focal onset (except hypermotor), then at ``onset_bilateral`` bilateral tonic
  stiffening (limbs extend, small tremor), bilateral clonic jerks slowing from about 4 Hz to 1 Hz, and
  postictal stillness with deep breathing.

Patients differ in body size and build, pose, camera angle, tilt and zoom, lighting, bedding, and sensor
noise; some videos have a blanket over the lower body or a person walking past the bed. Every frame
carries a "SYNTHETIC" watermark and every file a metadata comment. Output is deterministic for a seed.

This module holds the seizures' specifications, the cohort's sampling, its manifest and ``gestures synth``; the
movements are :mod:`gestures_hub.synthetic_motion`, the drawing and encoding :mod:`gestures_hub.synthetic_render`
(:func:`~gestures_hub.synthetic_render.render_video`).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

LABELS = ("FOS", "TCS")
VIEWS = ("Large", "Small")  # as in gestures_import: Large is the wide view of the bed, Small a close-up
FOCAL_KINDS = ("clonic_arm", "clonic_leg", "face", "version", "automatisms", "hypermotor")
_FOS_WEIGHTS = (0.25, 0.15, 0.15, 0.15, 0.15, 0.15)
_TCS_ONSETS = FOCAL_KINDS[:-1]  # a focal-to-bilateral seizure starts with focal signs, not hypermotor
MANIFEST_COLUMNS = ("video", "patient", "seizure", "label", "view", "onset_bilateral", "duration", "seed",
                    "synthetic", "semiology")
SYNTHETIC_NOTE = "SYNTHETIC video rendered by gestures_hub.synthetic: not patient data"


def is_synthetic_video(path: str | Path) -> bool:
    """Whether a video file carries the metadata comment this module writes (False for unreadable files)."""
    import av

    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment") == SYNTHETIC_NOTE
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return False

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Appearance:
    """How one patient and their room look (colours are flat-lit RGB in 0-255)."""

    size: float = 1.0  # body length factor
    build: float = 1.0  # body width factor
    skin: RGB = (205.0, 160.0, 130.0)
    hair: RGB = (70.0, 50.0, 35.0)
    gown: RGB = (150.0, 185.0, 215.0)
    sheet: RGB = (228.0, 228.0, 222.0)
    sheet_pattern: str = "plain"  # plain, stripes, checks
    pattern_period: float = 0.08  # bed units
    blanket: RGB = (90.0, 120.0, 170.0)
    floor: RGB = (150.0, 145.0, 135.0)
    gain: float = 1.0
    gradient: tuple[float, float] = (0.0, 0.0)
    vignette: float = 0.2
    tint: RGB = (1.0, 1.0, 1.0)
    noise: float = 2.5  # sensor noise std in 8-bit levels


@dataclass(frozen=True)
class Camera:
    """Bed-to-image mapping: rotation (degrees), zoom (frame widths per body length), vertical
    foreshortening of an oblique camera (tilt, 1 = straight down) and the bed point seen at the centre."""

    angle: float = 0.0
    zoom: float = 0.72
    tilt: float = 1.0
    focus: tuple[float, float] = (0.03, 0.0)


@dataclass(frozen=True)
class SeizureSpec:
    """Everything needed to render one synthetic seizure video, including its ground truth.

    Times are seconds from the start of the video: ``onset`` (clinical onset, end of baseline),
    ``onset_bilateral`` (TCS only: start of the bilateral tonic phase), ``tonic_end`` (TCS only: start of
    the clonic phase) and ``offset`` (end of ictal movement). ``focal`` and ``side`` describe the focal
    semiology; ``blanket`` is where a blanket starts along the bed (None: no blanket) and ``walker`` when a
    person walks by (None: nobody). Unset times get defaults in proportion to the duration.
    """

    patient: str
    seizure: str
    label: str
    duration: float
    fps: int = 30
    width: int = 320
    height: int = 240
    onset_bilateral: float | None = None
    seed: int = 0
    view: str = "Large"
    focal: str = "clonic_arm"
    side: str = "left"
    onset: float | None = None
    tonic_end: float | None = None
    offset: float | None = None
    appearance: Appearance = field(default_factory=Appearance)
    camera: Camera = field(default_factory=Camera)
    blanket: float | None = None
    walker: float | None = None

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {self.label!r}")
        if self.focal not in FOCAL_KINDS:
            raise ValueError(f"focal must be one of {FOCAL_KINDS}, got {self.focal!r}")
        if self.side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {self.side!r}")
        object.__setattr__(self, "view", _view_name(self.view))
        _check_size(self.width, self.height)
        if self.fps <= 0 or self.n_frames < 2:
            raise ValueError("fps must be positive and the video at least two frames long")
        object.__setattr__(self, "duration", self.n_frames / self.fps)  # whole frames
        if self.label == "FOS" and (self.onset_bilateral is not None or self.tonic_end is not None):
            raise ValueError("a FOS has no bilateral phase: onset_bilateral and tonic_end must be None")
        d = self.duration
        onset = 0.15 * d if self.onset is None else self.onset
        times: tuple[float, ...]
        if self.label == "TCS":
            ob = onset + 0.25 * (d - onset) if self.onset_bilateral is None else self.onset_bilateral
            te = ob + 0.15 * (d - ob) if self.tonic_end is None else self.tonic_end
            off = te + 0.5 * (d - ob) if self.offset is None else self.offset
            times = (onset, ob, te, off)
            object.__setattr__(self, "onset_bilateral", ob)
            object.__setattr__(self, "tonic_end", te)
        else:
            off = onset + 0.7 * (d - onset) if self.offset is None else self.offset
            times = (onset, off)
        if not all(a < b for a, b in zip((0.0, *times), (*times, d + 1e-9), strict=True)):
            raise ValueError(f"seizure times must increase within (0, duration]: {times}, duration {d}")
        object.__setattr__(self, "onset", onset)
        object.__setattr__(self, "offset", off)

    @property
    def n_frames(self) -> int:
        return round(self.duration * self.fps)

    @property
    def semiology(self) -> str:
        """Short description, e.g. ``clonic_arm_left`` or ``face_right>bilateral_tonic_clonic``."""
        focal = f"{self.focal}_{self.side}"
        return f"{focal}>bilateral_tonic_clonic" if self.label == "TCS" else focal


def _view_name(view: str) -> str:
    """``Large``/``Small`` from a view name or its initial (L, S)."""
    for name in VIEWS:
        if view.strip().lower() in (name.lower(), name[0].lower()):
            return name
    raise ValueError(f"view must be one of {VIEWS} (or L, S), got {view!r}")


def _check_size(width: int, height: int) -> None:
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ValueError(f"frame size must be even and at least 32x32, got {width}x{height}")


# --------------------------------------------------------------------------------------------- sampling


def jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> RGB:
    """``rgb`` with each channel moved by up to ``amount`` levels, within 0-255."""
    r, g, b = np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0, 255)
    return (float(r), float(g), float(b))


def colour_array(colour: Sequence[float]) -> np.ndarray:
    """A colour as a float32 array, for drawing."""
    return np.asarray(colour, dtype=np.float32)


def pick(rng: np.random.Generator, options: Sequence) -> object:
    """One of ``options``, drawn uniformly."""
    return options[int(rng.integers(len(options)))]


def _sample_appearance(rng: np.random.Generator) -> Appearance:
    skins = ((235, 200, 175), (215, 170, 140), (190, 140, 105), (150, 105, 75), (110, 75, 55))
    hairs = ((30, 25, 20), (80, 55, 35), (190, 160, 110), (160, 160, 160), (110, 40, 25))
    gowns = ((150, 185, 215), (160, 200, 170), (225, 225, 230), (215, 170, 185), (120, 140, 170))
    sheets = ((232, 232, 226), (215, 225, 240), (220, 235, 215), (240, 232, 205), (205, 205, 205))
    blankets = ((90, 120, 170), (170, 70, 70), (120, 120, 125), (210, 205, 190), (80, 140, 110))
    floors = ((150, 145, 135), (110, 110, 115), (175, 160, 130), (95, 85, 80))
    return Appearance(
        size=float(rng.uniform(0.88, 1.05)),
        build=float(rng.uniform(0.85, 1.25)),
        skin=jitter(rng, pick(rng, skins), 12),
        hair=jitter(rng, pick(rng, hairs), 10),
        gown=jitter(rng, pick(rng, gowns), 15),
        sheet=jitter(rng, pick(rng, sheets), 8),
        sheet_pattern=str(pick(rng, ("plain", "plain", "stripes", "checks"))),
        pattern_period=float(rng.uniform(0.04, 0.12)),
        blanket=jitter(rng, pick(rng, blankets), 15),
        floor=jitter(rng, pick(rng, floors), 10),
        gain=float(rng.uniform(0.75, 1.1)),
        gradient=(float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-0.4, 0.4))),
        vignette=float(rng.uniform(0.0, 0.4)),
        tint=(float(rng.uniform(0.94, 1.06)), 1.0, float(rng.uniform(0.9, 1.08))),
        noise=float(rng.uniform(1.5, 5.0)),
    )


def _sample_camera(rng: np.random.Generator) -> Camera:
    return Camera(
        angle=float(pick(rng, (0.0, 180.0)) + rng.uniform(-25, 25)),
        zoom=float(rng.uniform(0.62, 0.78)),
        tilt=float(rng.uniform(0.8, 1.0)),
    )


def _view_camera(camera: Camera, view: str) -> Camera:
    if view == "Large":
        return camera
    return replace(camera, zoom=camera.zoom * 1.7, focus=(-0.2, camera.focus[1]))


def _seizure_specs(
    seed: int, p: int, s: int, label: str, appearance: Appearance, camera: Camera, *,
    min_duration: float, max_duration: float, fps: int, size: tuple[int, int], views: Sequence[str],
) -> list[SeizureSpec]:
    """The specs (one per view) of seizure ``s`` of patient ``p``, drawn from their own random stream."""
    rng = np.random.default_rng([seed, 2, p, s])
    log_duration = rng.uniform(math.log(min_duration), math.log(max_duration))
    duration = max(round(math.exp(log_duration) * fps), 2) / fps
    kinds, weights = (FOCAL_KINDS, _FOS_WEIGHTS) if label == "FOS" else (_TCS_ONSETS, None)
    focal = str(rng.choice(kinds, p=weights))
    side = str(pick(rng, ("left", "right")))
    onset = duration * rng.uniform(0.08, 0.2)
    times: dict[str, float | None] = {"onset_bilateral": None, "tonic_end": None}
    if label == "TCS":
        ob = onset + (duration - onset) * rng.uniform(0.12, 0.3)
        rest = duration - ob
        tonic_end = ob + min(rest * rng.uniform(0.1, 0.2), 20.0)
        offset = tonic_end + min(rest * rng.uniform(0.35, 0.55), 75.0)
        times = {"onset_bilateral": round(ob, 3), "tonic_end": round(tonic_end, 3)}
    else:
        offset = onset + (duration - onset) * rng.uniform(0.6, 0.85)
    camera = replace(
        camera,
        angle=camera.angle + float(rng.uniform(-5, 5)),
        zoom=camera.zoom * float(rng.uniform(0.95, 1.05)),
        focus=(0.03 + float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))),
    )
    blanket = float(rng.uniform(-0.15, 0.15)) if rng.random() < 0.3 else None
    walker = float(rng.uniform(0, duration - 1)) if rng.random() < 0.25 else None
    video_seed = int(np.random.SeedSequence([seed, 3, p, s]).generate_state(1)[0])
    return [
        SeizureSpec(
            patient=_patient_id(seed, p), seizure=f"{s + 1:02d}", label=label, duration=duration, fps=fps,
            width=size[0], height=size[1], seed=video_seed, view=view, focal=focal, side=side,
            onset=round(onset, 3), offset=round(offset, 3), appearance=appearance,
            camera=_view_camera(camera, view), blanket=blanket, walker=walker, **times,
        )
        for view in views
    ]


def _patient_id(seed: int, p: int) -> str:
    """Patient IDs carry the cohort seed, so two cohorts never share a patient."""
    return f"syn{seed}p{p + 1:03d}"


def sample_cohort(
    n_patients: int,
    seed: int,
    *,
    seizures_per_patient: int = 2,
    min_duration: float = 10.0,
    max_duration: float = 40.0,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    tcs_fraction: float = 0.45,
    views: Sequence[str] = ("Large",),
) -> list[SeizureSpec]:
    """Draw the specs of a synthetic cohort (one per patient, seizure and view).

    Each patient's look comes from ``(seed, patient)`` and each seizure from ``(seed, patient, seizure)``,
    so adding patients leaves existing videos unchanged. Labels follow a low-discrepancy sequence, so
    any run of consecutive seizures has a TCS fraction within about one seizure of ``tcs_fraction``.
    Durations are log-uniform in [min_duration, max_duration], independently of the label.
    """
    if n_patients < 1 or seizures_per_patient < 1 or seed < 0:
        raise ValueError("need n_patients >= 1, seizures_per_patient >= 1 and seed >= 0")
    if not 0 < min_duration <= max_duration:
        raise ValueError(f"need 0 < min_duration <= max_duration, got {min_duration}, {max_duration}")
    if not 0.0 <= tcs_fraction <= 1.0:
        raise ValueError(f"tcs_fraction must be in [0, 1], got {tcs_fraction}")
    views = [_view_name(v) for v in views]
    if not views:
        raise ValueError("need at least one view")
    _check_size(*size)
    start = (seed * 0.7548776662466927) % 1.0
    specs: list[SeizureSpec] = []
    for p in range(n_patients):
        patient_rng = np.random.default_rng([seed, 1, p])
        appearance, camera = _sample_appearance(patient_rng), _sample_camera(patient_rng)
        for s in range(seizures_per_patient):
            k = p * seizures_per_patient + s
            label = "TCS" if (start + k * 0.6180339887498949) % 1.0 < tcs_fraction else "FOS"
            specs += _seizure_specs(
                seed, p, s, label, appearance, camera, min_duration=min_duration, max_duration=max_duration,
                fps=fps, size=size, views=views,
            )
    return specs


# ---------------------------------------------------------------------------------------------- cohorts


def video_path(spec: SeizureSpec) -> str:
    """Where a cohort stores the video of ``spec``, relative to the manifest's folder."""
    return f"videos/{spec.patient}_{spec.seizure}_{spec.view[0]}.mp4"


def _manifest_row(spec: SeizureSpec) -> dict[str, str]:
    return {
        "video": video_path(spec), "patient": spec.patient, "seizure": spec.seizure, "label": spec.label,
        "view": spec.view,
        "onset_bilateral": "" if spec.onset_bilateral is None else f"{spec.onset_bilateral:.3f}",
        "duration": f"{spec.duration:.4f}", "seed": str(spec.seed), "synthetic": "true",
        "semiology": spec.semiology,
    }


def write_manifest(specs: Sequence[SeizureSpec], path: str | os.PathLike) -> Path:
    """Write the manifest CSV (``gestures extract`` format) of ``specs`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_manifest_row(spec) for spec in specs)
    os.replace(tmp, path)
    return path


def generate_cohort(
    out_dir: str | os.PathLike,
    n_patients: int,
    seed: int,
    *,
    seizures_per_patient: int = 2,
    min_duration: float = 10.0,
    max_duration: float = 40.0,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    tcs_fraction: float = 0.45,
    views: Sequence[str] = ("Large",),
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Render a synthetic cohort into ``out_dir`` (videos/, manifest.csv and a ``SYNTHETIC`` marker file,
    the convention of gestures_hub.cards); returns the manifest path.

    ``workers`` processes render videos in parallel (default: up to 2, bounded by the CPU count).
    """
    from tqdm.auto import tqdm

    from .synthetic_render import render_video  # it imports this module

    specs = sample_cohort(
        n_patients, seed, seizures_per_patient=seizures_per_patient, min_duration=min_duration,
        max_duration=max_duration, fps=fps, size=size, tcs_fraction=tcs_fraction, views=views,
    )
    out = Path(out_dir)
    jobs = sorted(specs, key=lambda s: -s.n_frames)  # longest first balances the workers
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    with tqdm(total=len(jobs), unit="video", desc="synthetic cohort", disable=not progress) as bar:
        if workers == 1:
            for spec in jobs:
                render_video(spec, out / video_path(spec))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(render_video, spec, out / video_path(spec)) for spec in jobs]
                for future in as_completed(futures):
                    future.result()
                    bar.update()
    (out / "SYNTHETIC").write_text(SYNTHETIC_NOTE + "\n", encoding="utf-8")
    return write_manifest(specs, out / "manifest.csv")


# -------------------------------------------------------------------------------------------------- CLI


def run(args: argparse.Namespace) -> int:
    """Run ``gestures synth``; returns the exit code."""
    start = time.perf_counter()
    try:
        manifest = generate_cohort(
            args.out, args.patients, args.seed, seizures_per_patient=args.seizures_per_patient,
            min_duration=args.min_duration, max_duration=args.max_duration, fps=args.fps, size=args.size,
            tcs_fraction=args.tcs_fraction, views=tuple(v.strip() for v in args.views.split(",")),
            workers=args.workers, progress=not args.quiet,
        )
    except ValueError as err:
        print(f"gestures synth: error: {err}", file=sys.stderr)
        return 2
    with open(manifest, newline="", encoding="utf-8") as f:
        labels = [row["label"] for row in csv.DictReader(f)]
    print(
        f"Wrote {len(labels)} SYNTHETIC videos ({labels.count('TCS')} TCS, {labels.count('FOS')} FOS) for "
        f"{args.patients} synthetic patients in {time.perf_counter() - start:.1f} s.\n"
        f"Manifest: {manifest}\n"
        "These videos are procedurally rendered for demos and tests; they are not patient data."
    )
    return 0
