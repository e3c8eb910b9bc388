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
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
import uuid
import zlib
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
Pose = dict[str, np.ndarray]


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


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> RGB:
    r, g, b = np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0, 255)
    return (float(r), float(g), float(b))


def _rgb(colour: Sequence[float]) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32)


def _pick(rng: np.random.Generator, options: Sequence) -> object:
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
        skin=_jitter(rng, _pick(rng, skins), 12),
        hair=_jitter(rng, _pick(rng, hairs), 10),
        gown=_jitter(rng, _pick(rng, gowns), 15),
        sheet=_jitter(rng, _pick(rng, sheets), 8),
        sheet_pattern=str(_pick(rng, ("plain", "plain", "stripes", "checks"))),
        pattern_period=float(rng.uniform(0.04, 0.12)),
        blanket=_jitter(rng, _pick(rng, blankets), 15),
        floor=_jitter(rng, _pick(rng, floors), 10),
        gain=float(rng.uniform(0.75, 1.1)),
        gradient=(float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-0.4, 0.4))),
        vignette=float(rng.uniform(0.0, 0.4)),
        tint=(float(rng.uniform(0.94, 1.06)), 1.0, float(rng.uniform(0.9, 1.08))),
        noise=float(rng.uniform(1.5, 5.0)),
    )


def _sample_camera(rng: np.random.Generator) -> Camera:
    return Camera(
        angle=float(_pick(rng, (0.0, 180.0)) + rng.uniform(-25, 25)),
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
    side = str(_pick(rng, ("left", "right")))
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


# ----------------------------------------------------------------------------------------------- motion

_AXIAL_DOFS = ("dx", "dy", "rot", "head_tilt", "head_yaw", "mouth", "mouth_side", "blink")
_LIMITS = {
    "sh_abd": (-10, 120), "sh_elev": (0, 85), "el_flex": (0, 150), "fa_elev": (-10, 85), "hip_abd": (-5, 40),
    "hip_flex": (0, 85), "knee_flex": (0, 150), "head_yaw": (-90, 90), "mouth": (0, 1), "mouth_side": (-1, 1),
    "blink": (0, 1),
}


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _envelope(t: np.ndarray, start: float, end: float, ramp: float) -> np.ndarray:
    """1 inside [start, end] with smooth ramps of ``ramp`` seconds inside the edges, 0 outside."""
    ramp = max(min(ramp, 0.5 * (end - start)), 1e-3)
    return _smoothstep((t - start) / ramp) * _smoothstep((end - t) / ramp)


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, cutoff: float) -> np.ndarray:
    """Zero-mean, unit-variance random signal band-limited to ``cutoff`` Hz."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / fps)
    spectrum[(freqs > cutoff) | (freqs == 0)] = 0
    x = np.fft.irfft(spectrum, n)
    return x / (x.std() + 1e-12)


def _glide_phase(
    t: np.ndarray, start: float, end: float, f_start: float, f_end: float, fps: float
) -> np.ndarray:
    """Phase (cycles) of a rhythm gliding exponentially from f_start to f_end Hz over [start, end]."""
    s = np.clip((t - start) / max(end - start, 1e-6), 0.0, 1.0)
    return np.cumsum(f_start * (f_end / f_start) ** s) / fps


def _jerk(phase: np.ndarray) -> np.ndarray:
    """Clonic jerk waveform in [0, 1]: a fast contraction, then a slower relaxation, once per cycle."""
    u = phase % 1.0
    return np.where(u < 0.15, np.sin(0.5 * np.pi * u / 0.15), np.exp(-(u - 0.15) / 0.18))


def _rest_pose(rng: np.random.Generator, n: int) -> Pose:
    """Joint angles (degrees) of a patient lying still; limb arrays are (2, n): left, right."""
    hand_on_belly = rng.random(2) < 0.4
    hip_flex = rng.uniform(20, 45, 2) if rng.random() < 0.25 else rng.uniform(0, 5, 2)
    limbs = {
        "sh_abd": rng.uniform(8, 35, 2),
        "sh_elev": rng.uniform(0, 10, 2),
        "el_flex": np.where(hand_on_belly, rng.uniform(60, 110, 2), rng.uniform(0, 25, 2)),
        "fa_elev": rng.uniform(0, 12, 2),
        "hip_abd": rng.uniform(2, 10, 2),
        "hip_flex": hip_flex,
        "knee_flex": 2 * hip_flex + rng.uniform(0, 8, 2),
    }
    axial = {"head_tilt": rng.uniform(-10, 10), "head_yaw": rng.uniform(-25, 25)}
    pose = {k: np.repeat(v[:, None], n, axis=1) for k, v in limbs.items()}
    pose.update({k: np.full(n, float(axial.get(k, 0.0))) for k in _AXIAL_DOFS})
    return pose


def _add_voluntary(pose: Pose, spec: SeizureSpec, t: np.ndarray, rng: np.random.Generator) -> None:
    """Sometimes the patient moves one arm once during the baseline (not a seizure sign)."""
    length = rng.uniform(1.5, 3.0)
    if rng.random() < 0.35 and spec.onset > length + 0.5:
        start = rng.uniform(0, spec.onset - length - 0.5)
        bump = np.sin(np.pi * np.clip((t - start) / length, 0, 1)) ** 2
        pose["el_flex"][int(rng.integers(2))] += rng.uniform(20, 45) * bump


def _add_focal(pose: Pose, kind: str, side: str, start: float, end: float, t: np.ndarray, fps: float,
               rng: np.random.Generator) -> None:
    """Add focal semiology of ``kind`` on ``side`` between ``start`` and ``end``."""
    i, sign = (0, 1.0) if side == "left" else (1, -1.0)
    n = len(t)
    env = _envelope(t, start, end, 0.5)
    if kind in ("clonic_arm", "clonic_leg", "face"):
        f0 = rng.uniform(1.5, 4.0)
        phase = _glide_phase(t, start, end, f0, f0 * rng.uniform(0.6, 0.95), fps)
        jerk = _jerk(phase + 0.06 * _smooth_noise(rng, n, fps, 0.3)) * env
    if kind == "clonic_arm":
        pose["el_flex"][i] += rng.uniform(30, 60) * jerk
        pose["sh_abd"][i] += rng.uniform(5, 15) * jerk
        pose["sh_elev"][i] += rng.uniform(5, 20) * jerk
        pose["mouth_side"] += sign * rng.uniform(0.2, 0.6) * jerk
        if rng.random() < 0.4:  # Jacksonian march to the leg on the same side
            march = jerk * _envelope(t, 0.5 * (start + end), end, 0.5)
            pose["hip_flex"][i] += rng.uniform(8, 18) * march
            pose["knee_flex"][i] += rng.uniform(16, 36) * march
    elif kind == "clonic_leg":
        pose["hip_flex"][i] += rng.uniform(15, 30) * jerk
        pose["knee_flex"][i] += rng.uniform(30, 60) * jerk
        pose["hip_abd"][i] += rng.uniform(3, 8) * jerk
    elif kind == "face":
        pose["mouth_side"] += sign * rng.uniform(0.6, 1.0) * jerk
        pose["mouth"] += rng.uniform(0.2, 0.5) * jerk
        pose["blink"] += 0.8 * jerk
        pose["head_tilt"] += sign * rng.uniform(3, 6) * jerk
    elif kind == "version":  # forced head turn with tonic posturing of the arm on the same side
        hold = _envelope(t, start, end, rng.uniform(1.0, 2.5))
        tremor = np.sin(2 * np.pi * rng.uniform(6, 9) * t) * hold
        pose["head_yaw"] += sign * rng.uniform(50, 80) * hold
        pose["head_tilt"] += sign * (rng.uniform(10, 25) * hold + 2 * tremor)
        pose["sh_abd"][i] += rng.uniform(30, 60) * hold
        pose["sh_elev"][i] += rng.uniform(20, 40) * hold + 2 * tremor
        pose["el_flex"][i] *= 1 - 0.9 * hold
    elif kind == "automatisms":  # fumbling of one hand, chewing
        pose["el_flex"][i] += rng.uniform(20, 40) * _smooth_noise(rng, n, fps, 2.0) * env
        pose["sh_abd"][i] += rng.uniform(6, 12) * _smooth_noise(rng, n, fps, 1.5) * env
        pose["fa_elev"][i] += rng.uniform(10, 25) * np.abs(_smooth_noise(rng, n, fps, 1.5)) * env
        pose["mouth"] += 0.6 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 2) * t)) * env
        pose["head_yaw"] += rng.uniform(3, 8) * _smooth_noise(rng, n, fps, 0.5) * env
    elif kind == "hypermotor":  # irregular, asynchronous bilateral flailing and rocking, never rhythmic
        cutoff = rng.uniform(0.8, 1.6)

        def flail(amplitude: float, burst: np.ndarray) -> np.ndarray:
            return amplitude * _smooth_noise(rng, n, fps, cutoff) * burst

        for j in (0, 1):  # each side waxes and wanes on its own
            burst = env * (0.6 + 0.4 * np.tanh(2 * _smooth_noise(rng, n, fps, 0.3)))
            pose["el_flex"][j] += flail(rng.uniform(25, 45), burst)
            pose["sh_abd"][j] += flail(rng.uniform(15, 30), burst)
            pose["sh_elev"][j] += np.abs(flail(rng.uniform(20, 40), burst))
            legs = np.abs(flail(1.0, burst))
            pose["hip_flex"][j] += rng.uniform(25, 45) * legs
            pose["knee_flex"][j] += rng.uniform(50, 90) * legs
            pose["hip_abd"][j] += flail(rng.uniform(4, 10), burst)
        pose["rot"] += flail(rng.uniform(2, 5), env)
        pose["dy"] += flail(rng.uniform(0.01, 0.02), env)
        pose["head_yaw"] += flail(rng.uniform(20, 40), env)


def _add_tonic_clonic(
    pose: Pose, spec: SeizureSpec, t: np.ndarray, fps: float, rng: np.random.Generator
) -> None:
    """Bilateral tonic stiffening from ``onset_bilateral``, then clonic jerks slowing down to ``offset``."""
    ob, te, end = spec.onset_bilateral, spec.tonic_end, spec.offset
    sign = 1.0 if spec.side == "left" else -1.0
    ramp = min(0.6, 0.5 * (te - ob))
    weight = np.interp(t, [ob, ob + ramp, te, end, end + 3.0], [0, 1, 1, 0.5, 0])
    targets = {
        "sh_abd": rng.uniform(25, 55, 2), "sh_elev": rng.uniform(25, 50, 2), "el_flex": rng.uniform(0, 25, 2),
        "fa_elev": np.zeros(2), "hip_abd": rng.uniform(6, 14, 2), "hip_flex": np.zeros(2),
        "knee_flex": np.zeros(2),
    }
    for k, target in targets.items():
        pose[k] += weight * (target[:, None] - pose[k])
    pose["head_yaw"] += weight * (sign * rng.uniform(20, 50) - pose["head_yaw"])
    vibration = _envelope(t, ob, te + 0.3, 0.3) * np.clip((t - ob) / (te - ob), 0.3, 1.0)
    for k in ("sh_elev", "el_flex", "hip_flex", "knee_flex"):
        wave = np.sin(2 * np.pi * rng.uniform(7, 10) * t + rng.uniform(0, 2 * np.pi, (2, 1)))
        pose[k] += rng.uniform(1.5, 3.0) * vibration * wave
    phase = _glide_phase(t, te, end, rng.uniform(3.5, 5.0), rng.uniform(0.8, 1.3), fps)
    env = _envelope(t, te, end, 0.3)
    amplitudes = {"el_flex": (35, 70), "sh_elev": (10, 25), "hip_flex": (10, 20), "knee_flex": (20, 40)}
    for k, (lo, hi) in amplitudes.items():
        lag = rng.uniform(-0.04, 0.04, (2, 1))
        pose[k] += rng.uniform(lo, hi, (2, 1)) * _jerk(phase + lag) * env
    common = _jerk(phase) * env
    pose["head_tilt"] += rng.uniform(4, 10) * common
    pose["mouth"] += 0.5 * common
    pose["blink"] += 0.7 * common
    pose["dx"] -= 0.008 * common


def _breathing(spec: SeizureSpec, t: np.ndarray, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Chest expansion in [-amplitude, amplitude]: apnoea in the tonic phase, deep breaths afterwards."""
    f = rng.uniform(0.2, 0.33)
    end = spec.offset
    if spec.label == "TCS":
        ob, te = spec.onset_bilateral, spec.tonic_end
        times = [ob, ob + min(0.5, 0.5 * (te - ob)), te, end, end + 1.5]
        amp = np.interp(t, times, [1, 0.2, 0.2, 0.6, rng.uniform(2, 3)])
        freq = np.interp(t, [end, end + 1.5], [f, rng.uniform(0.35, 0.5)])
    else:
        amp = np.interp(t, [end, end + 1.5], [1, rng.uniform(1.2, 1.6)])
        freq = np.interp(t, [end, end + 1.5], [f, 1.2 * f])
    return amp * np.sin(2 * np.pi * (np.cumsum(freq) / fps + rng.uniform()))


def seizure_motion(spec: SeizureSpec) -> tuple[Pose, np.ndarray]:
    """Joint angles (degrees; limb arrays (2, n_frames) for left, right) and breathing of a seizure."""
    rng = np.random.default_rng(spec.seed)
    t = np.arange(spec.n_frames) / spec.fps
    pose = _rest_pose(rng, len(t))
    _add_voluntary(pose, spec, t, rng)
    if spec.label == "TCS":
        _add_focal(pose, spec.focal, spec.side, spec.onset, spec.onset_bilateral + 0.3, t, spec.fps, rng)
        _add_tonic_clonic(pose, spec, t, spec.fps, rng)
    else:
        _add_focal(pose, spec.focal, spec.side, spec.onset, spec.offset, t, spec.fps, rng)
    for k, (lo, hi) in _LIMITS.items():
        np.clip(pose[k], lo, hi, out=pose[k])
    return pose, _breathing(spec, t, spec.fps, rng)


# --------------------------------------------------------------------------------------------- geometry

# Capsules in drawing order: (name, material, hidden under a blanket).
_PARTS = (
    ("thigh_l", "gown", True), ("shin_l", "skin", True), ("foot_l", "skin", True),
    ("thigh_r", "gown", True), ("shin_r", "skin", True), ("foot_r", "skin", True),
    ("hips", "gown", True), ("trunk", "gown", True), ("shoulders", "gown", True), ("neck", "skin", False),
    ("hair", "hair", False), ("face", "skin", False), ("eye_l", "eye", False), ("eye_r", "eye", False),
    ("mouth", "lips", False),
    ("upper_l", "gown", False), ("fore_l", "skin", False), ("hand_l", "skin", False),
    ("upper_r", "gown", False), ("fore_r", "skin", False), ("hand_r", "skin", False),
)


def _unit(angle_deg: np.ndarray, sign: float) -> np.ndarray:
    a = np.radians(angle_deg)
    return np.stack([np.cos(a), sign * np.sin(a)], axis=-1)


def _point(x: float, y: float, n: int) -> np.ndarray:
    return np.broadcast_to(np.array([x, y]), (n, 2))


def _cos(angle_deg: np.ndarray) -> np.ndarray:
    return np.cos(np.radians(angle_deg))[:, None]


def _skeleton(pose: Pose, breath: np.ndarray, app: Appearance) -> tuple[np.ndarray, np.ndarray]:
    """Capsule end points (n, parts, 2, 2) and radii (n, parts) in bed units (x: toward the feet, y: to the
    patient's left; 1 unit is about one body length), in ``_PARTS`` order."""
    n, sz, bw = len(breath), app.size, app.size * app.build
    caps: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | float]] = {}
    for i, (tag, sign) in enumerate((("l", 1.0), ("r", -1.0))):
        hip = _point(0.03 * sz, sign * 0.065 * bw, n)
        leg = _unit(pose["hip_abd"][i], sign)
        knee = hip + 0.245 * sz * _cos(pose["hip_flex"][i]) * leg
        ankle = knee + 0.24 * sz * _cos(pose["hip_flex"][i] - pose["knee_flex"][i]) * leg
        caps[f"thigh_{tag}"] = (hip, knee, 0.055 * bw)
        caps[f"shin_{tag}"] = (knee, ankle, 0.04 * bw)
        foot = ankle + 0.02 * sz * _unit(pose["hip_abd"][i] + 25, sign)
        caps[f"foot_{tag}"] = (foot, foot, 0.032 * sz)
        shoulder = _point(-0.265 * sz, sign * 0.12 * bw, n)
        upper = _unit(pose["sh_abd"][i], sign)
        elbow = shoulder + 0.165 * sz * _cos(pose["sh_elev"][i]) * upper
        fore = _unit(pose["sh_abd"][i] - pose["el_flex"][i], sign)
        wrist = elbow + 0.145 * sz * _cos(np.clip(pose["sh_elev"][i] + pose["fa_elev"][i], -80, 85)) * fore
        caps[f"upper_{tag}"] = (shoulder, elbow, 0.035 * bw)
        caps[f"fore_{tag}"] = (elbow, wrist, 0.03 * bw)
        hand = wrist + 0.02 * sz * fore
        caps[f"hand_{tag}"] = (hand, hand, 0.03 * sz)
    chest = 1 + 0.03 * breath
    caps["hips"] = (_point(0.02 * sz, 0.055 * bw, n), _point(0.02 * sz, -0.055 * bw, n), 0.065 * bw)
    caps["trunk"] = (_point(-0.24 * sz, 0, n), _point(-0.02 * sz, 0, n), 0.09 * bw * chest)
    caps["shoulders"] = (_point(-0.255 * sz, 0.105 * bw, n), _point(-0.255 * sz, -0.105 * bw, n),
                         0.05 * bw * chest)
    caps["neck"] = (_point(-0.34 * sz, 0, n), _point(-0.28 * sz, 0, n), 0.03 * sz)
    tilt, yaw = np.radians(pose["head_tilt"]), np.radians(pose["head_yaw"])
    up = np.stack([-np.cos(tilt), -np.sin(tilt)], axis=-1)  # from the neck toward the crown
    lateral = np.stack([up[:, 1], -up[:, 0]], axis=-1)  # toward the patient's left
    turn, width = (sz * np.sin(yaw))[:, None], (sz * np.cos(yaw))[:, None]
    head = _point(-0.33 * sz, 0, n) + 0.06 * sz * up
    face = head + 0.022 * turn * lateral + 0.004 * sz * up
    eyes = face + 0.014 * sz * up + 0.02 * turn * lateral
    mouth = face - 0.024 * sz * up + 0.02 * turn * lateral
    pull = pose["mouth_side"][:, None]
    eye_r = 0.0065 * sz * (1 - 0.75 * pose["blink"])
    caps["hair"] = (head, head, 0.062 * sz)
    caps["face"] = (face, face, 0.05 * sz)
    caps["eye_l"] = (eyes + 0.019 * width * lateral,) * 2 + (eye_r,)
    caps["eye_r"] = (eyes - 0.019 * width * lateral,) * 2 + (eye_r,)
    caps["mouth"] = (mouth + 0.013 * width * lateral + 0.008 * sz * np.maximum(pull, 0) * up,
                     mouth - 0.013 * width * lateral + 0.008 * sz * np.maximum(-pull, 0) * up,
                     0.004 * sz + 0.008 * sz * pose["mouth"])
    ends = np.stack([np.stack([caps[name][0], caps[name][1]], axis=1) for name, _, _ in _PARTS], axis=1)
    radii = np.stack([np.broadcast_to(caps[name][2], (n,)) for name, _, _ in _PARTS], axis=1)
    return _move_body(ends, pose), radii


def _move_body(ends: np.ndarray, pose: Pose) -> np.ndarray:
    """Whole-body rocking (rotation about the pelvis) and shifts."""
    rot = np.radians(pose["rot"])[:, None, None]
    x, y = ends[..., 0], ends[..., 1]
    return np.stack([np.cos(rot) * x - np.sin(rot) * y + pose["dx"][:, None, None],
                     np.sin(rot) * x + np.cos(rot) * y + pose["dy"][:, None, None]], axis=-1)


def _walker(spec: SeizureSpec) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """A person walking past the bed: capsules (n, 4, 2, 2) and radii (n, 4) in bed units (radius 0 when
    out of sight), and their colours."""
    rng = np.random.default_rng([spec.seed, 5])
    t = np.arange(spec.n_frames) / spec.fps - spec.walker
    speed, direction = rng.uniform(0.45, 0.75), float(_pick(rng, (-1.0, 1.0)))
    lane = float(_pick(rng, (-1.0, 1.0))) * rng.uniform(0.33, 0.45)
    u = direction * (-1.0 + speed * t)
    centre = np.stack([u, np.full_like(u, lane)], axis=-1)
    swing = 0.1 * np.sin(2 * np.pi * 1.8 * t)[:, None] * np.array([direction, 0.0])
    across = np.array([0.0, 0.12])
    caps = [
        (centre + across, centre + 1.05 * across + swing),  # arms
        (centre - across, centre - 1.05 * across - swing),
        (centre + 0.9 * across, centre - 0.9 * across),  # shoulders
        (centre, centre),  # head
    ]
    ends = np.stack([np.stack(c, axis=1) for c in caps], axis=1)
    radii = np.outer(np.abs(u) < 1.2, [0.03, 0.03, 0.055, 0.048])
    skin = _rgb(_jitter(rng, (190, 145, 115), 40))
    scrubs, hair = _rgb(_jitter(rng, (70, 110, 150), 30)), _rgb(_jitter(rng, (50, 40, 30), 20))
    return ends, radii, [skin, skin, scrubs, hair]


# -------------------------------------------------------------------------------------------- rendering

_BED_LENGTH, _BED_WIDTH, _BED_CENTRE = 1.15, 0.5, 0.03
_GLYPHS = {  # 5-row bitmap font for the watermark
    "S": ("111", "100", "111", "001", "111"), "Y": ("101", "101", "010", "010", "010"),
    "N": ("1001", "1101", "1011", "1001", "1001"), "T": ("111", "010", "010", "010", "010"),
    "H": ("101", "101", "111", "101", "101"), "E": ("111", "100", "111", "100", "111"),
    "I": ("111", "010", "010", "010", "111"), "C": ("111", "100", "100", "100", "111"),
}


class _Scene:
    """Static parts of one video: the camera mapping, the lit background and per-frame randomness."""

    def __init__(self, spec: SeizureSpec) -> None:
        cam, app = spec.camera, spec.appearance
        w, h = spec.width, spec.height
        a = math.radians(cam.angle)
        scale = cam.zoom * w
        # bed -> image: rotate, flip y (the camera looks down at a supine patient), foreshorten
        self.matrix = scale * np.diag([1.0, cam.tilt]) @ np.array(
            [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ np.diag([1.0, -1.0])
        self.centre = np.array([w / 2, h / 2]) - self.matrix @ np.array(cam.focus)
        self.pixels_per_unit = scale * math.sqrt(cam.tilt)
        self.xs = np.arange(w, dtype=np.float32) + 0.5
        self.ys = np.arange(h, dtype=np.float32) + 0.5
        u, v = self._bed_coordinates(w, h)
        bed_rng = np.random.default_rng([spec.seed, 7])  # the same bed in every view
        self.background, self.blanket_mask, self.blanket = self._background(spec, u, v, bed_rng)
        rng = np.random.default_rng([spec.seed, 4, zlib.crc32(spec.view.encode())])
        self.light = self._light(app, w, h)
        self.noise = rng.normal(0, app.noise, (8, h, w, 3)).astype(np.float32)
        self.noise_index = rng.integers(0, 8, spec.n_frames)
        self.exposure = 1 + 0.015 * _smooth_noise(rng, spec.n_frames, spec.fps, 0.2)
        self.colours = {
            "skin": _rgb(app.skin), "gown": _rgb(app.gown), "hair": _rgb(app.hair), "eye": _rgb((40, 30, 30)),
            "lips": _rgb(app.skin) * _rgb((0.75, 0.5, 0.5)),
        }
        self._watermark(spec.height)

    def to_image(self, ends: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Capsules from bed units to pixels, with their bounding boxes (x0, y0, x1, y1) in the frame."""
        ends, radii = ends @ self.matrix.T + self.centre, radii * self.pixels_per_unit
        margin = radii[..., None] + 1.0
        lo = np.floor(ends.min(axis=-2) - margin).astype(int)
        hi = np.ceil(ends.max(axis=-2) + margin).astype(int)
        size = np.array([len(self.xs), len(self.ys)])
        boxes = np.concatenate([np.clip(lo, 0, size), np.clip(hi, 0, size)], axis=-1)
        boxes[radii <= 0] = 0
        return ends, radii, boxes

    def _bed_coordinates(self, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        gx, gy = np.meshgrid(self.xs, self.ys)
        pix = np.stack([gx, gy], axis=-1) - self.centre
        bed = pix @ np.linalg.inv(self.matrix).T
        return bed[..., 0], bed[..., 1]

    def _coverage(self, distance: np.ndarray) -> np.ndarray:
        """Anti-aliased coverage of a region from its signed distance in bed units (negative inside)."""
        return np.clip(0.5 - distance * self.pixels_per_unit, 0.0, 1.0)[..., None]

    def _background(
        self, spec: SeizureSpec, u: np.ndarray, v: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        app = spec.appearance
        tiles = ((u % 0.3) < 0.008) | ((v % 0.3) < 0.008)
        image = np.array(app.floor) * np.where(tiles, 0.85, 1.0)[..., None]
        du, dv = np.abs(u - _BED_CENTRE) - _BED_LENGTH / 2, np.abs(v) - _BED_WIDTH / 2
        frame = self._coverage(np.maximum(du, dv) - 0.025)
        image += frame * (np.array([70.0, 72.0, 78.0]) - image)
        wrinkles = 1 + sum(0.03 * np.sin(2 * np.pi * (fu * u + fv * v) + ph)
                           for fu, fv, ph in rng.uniform([-6, -6, 0], [6, 6, 6.3], (3, 3)))
        period = app.pattern_period
        stripes = np.tanh(3 * np.sin(2 * np.pi * v / period))
        pattern = {"plain": 1.0, "stripes": 0.93 + 0.07 * stripes,
                   "checks": 0.93 + 0.07 * stripes * np.tanh(3 * np.sin(2 * np.pi * u / period))}
        sheet = np.array(app.sheet) * (wrinkles * pattern[app.sheet_pattern])[..., None]
        image += self._coverage(np.maximum(du, dv)) * (sheet - image)
        pillow = np.hypot((u + 0.42 * app.size) / 0.1, v / 0.2) - 1
        image += self._coverage(pillow * 0.1) * (np.array(app.sheet) * 1.03 - image)
        if spec.blanket is None:
            return image.astype(np.float32), None, None
        mask = self._coverage(np.maximum(spec.blanket - u, np.maximum(du - 0.02, dv - 0.03)))
        folds = 1 + 0.06 * np.sin(2 * np.pi * (4 * u + rng.uniform(-3, 3) * v) + rng.uniform(0, 6.3))
        blanket = np.array(app.blanket) * (wrinkles * folds)[..., None]
        image += mask * (blanket - image)
        return image.astype(np.float32), mask.astype(np.float32), blanket.astype(np.float32)

    @staticmethod
    def _light(app: Appearance, w: int, h: int) -> np.ndarray:
        x = (np.arange(w) + 0.5) / w - 0.5
        y = (np.arange(h)[:, None] + 0.5) / h - 0.5
        field_ = (1 + app.gradient[0] * x + app.gradient[1] * y) * (1 - app.vignette * (x * x + y * y))
        return (app.gain * field_[..., None] * np.array(app.tint)).astype(np.float32)

    def _watermark(self, height: int) -> None:
        """Burn "SYNTHETIC" into the bottom-left corner of the background."""
        s = max(1, height // 120)
        x, y = 2 * s, height - 7 * s
        for ch in "SYNTHETIC":
            bits = np.array([[c == "1" for c in row] for row in _GLYPHS[ch]])
            glyph = np.kron(bits, np.ones((s, s), dtype=bool))
            if x + glyph.shape[1] > self.background.shape[1]:
                break
            box = np.s_[y:y + glyph.shape[0], x:x + glyph.shape[1]]
            self.background[box][glyph] = 235.0 / self.light[box][glyph]
            x += glyph.shape[1] + s

    def draw(self, canvas: np.ndarray, box: Sequence[int], a: Sequence[float], b: Sequence[float], r: float,
             colour: np.ndarray, under_blanket: bool = False) -> None:
        """Composite a shaded, anti-aliased capsule (segment ``a``-``b``, radius ``r``, bounding ``box``
        x0, y0, x1, y1, all in pixels)."""
        x0, y0, x1, y1 = box
        if x0 >= x1 or y0 >= y1:
            return
        px, py = self.xs[x0:x1] - a[0], self.ys[y0:y1, None] - a[1]
        vx, vy = b[0] - a[0], b[1] - a[1]
        length2 = vx * vx + vy * vy
        if length2 > 1e-6:
            s = px * (vx / length2) + py * (vy / length2)
            np.minimum(np.maximum(s, 0.0, out=s), 1.0, out=s)
            d = np.hypot(px - s * vx, py - s * vy)
        else:
            d = np.hypot(px, py)
        cover = (r + 0.5) - d
        np.minimum(np.maximum(cover, 0.0, out=cover), 1.0, out=cover)
        shade = 1.0 - 0.4 / max(r, 0.5) * d
        region = canvas[y0:y1, x0:x1]
        region *= (1.0 - cover)[..., None]
        if under_blanket and self.blanket is not None:
            hidden = self.blanket_mask[y0:y1, x0:x1, 0]
            bulge = self.blanket[y0:y1, x0:x1] * (0.55 + 0.5 * shade)[..., None]
            region += (cover * hidden)[..., None] * bulge
            cover *= 1.0 - hidden
        region += (cover * shade)[..., None] * colour

    def finish(self, canvas: np.ndarray, k: int, out: np.ndarray) -> np.ndarray:
        """Lighting, exposure drift and sensor noise, written to ``out`` (RGB uint8)."""
        canvas *= self.light
        canvas *= np.float32(self.exposure[k])
        canvas += self.noise[self.noise_index[k]]
        np.minimum(np.maximum(canvas, 0.0, out=canvas), 255.0, out=canvas)
        np.copyto(out, canvas, casting="unsafe")
        return out


def _frames(spec: SeizureSpec):
    """Yield the RGB uint8 frames of a video (one reused buffer: copy a frame to keep it)."""
    scene = _Scene(spec)
    pose, breath = seizure_motion(spec)
    ends, radii = _skeleton(pose, breath, spec.appearance)
    layers = [(scene.colours[material], hidden) for _, material, hidden in _PARTS]
    if spec.walker is not None:
        w_ends, w_radii, w_colours = _walker(spec)
        ends, radii = np.concatenate([ends, w_ends], axis=1), np.concatenate([radii, w_radii], axis=1)
        layers += [(colour, False) for colour in w_colours]
    ends, radii, boxes = scene.to_image(ends, radii)
    canvas = np.empty_like(scene.background)
    image = np.empty(canvas.shape, dtype=np.uint8)
    for k in range(spec.n_frames):
        np.copyto(canvas, scene.background)
        for box, (a, b), r, (colour, hidden) in zip(
            boxes[k].tolist(), ends[k].tolist(), radii[k].tolist(), layers, strict=True
        ):
            scene.draw(canvas, box, a, b, r, colour, hidden)
        yield scene.finish(canvas, k, image)


def render_video(
    spec: SeizureSpec, path: str | os.PathLike, *, preset: str = "ultrafast", crf: int = 23
) -> Path:
    """Render ``spec`` to an H.264 MP4 (yuv420p) at ``path``, written atomically; returns the path."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            container.metadata["comment"] = SYNTHETIC_NOTE
            container.metadata["title"] = f"SYNTHETIC {spec.patient} {spec.seizure} {spec.view} {spec.label}"
            stream = container.add_stream(
                "libx264", rate=spec.fps, options={"preset": preset, "crf": str(crf), "threads": "1"})
            stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
            for image in _frames(spec):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
