"""The movements of a synthetic seizure: joint angles over time for :mod:`gestures_hub.synthetic`'s videos.

A seizure's timeline (:class:`gestures_hub.synthetic.SeizureSpec`) becomes joint angles (degrees) of a figure lying in
bed: rest with breathing and sometimes one voluntary movement, focal semiology, and for TCS the bilateral tonic and
clonic phases; :mod:`gestures_hub.synthetic_render` draws them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .synthetic import SeizureSpec

Pose = dict[str, np.ndarray]

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


def smooth_noise(rng: np.random.Generator, n: int, fps: float, cutoff: float) -> np.ndarray:
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
        jerk = _jerk(phase + 0.06 * smooth_noise(rng, n, fps, 0.3)) * env
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
        pose["el_flex"][i] += rng.uniform(20, 40) * smooth_noise(rng, n, fps, 2.0) * env
        pose["sh_abd"][i] += rng.uniform(6, 12) * smooth_noise(rng, n, fps, 1.5) * env
        pose["fa_elev"][i] += rng.uniform(10, 25) * np.abs(smooth_noise(rng, n, fps, 1.5)) * env
        pose["mouth"] += 0.6 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 2) * t)) * env
        pose["head_yaw"] += rng.uniform(3, 8) * smooth_noise(rng, n, fps, 0.5) * env
    elif kind == "hypermotor":  # irregular, asynchronous bilateral flailing and rocking, never rhythmic
        cutoff = rng.uniform(0.8, 1.6)

        def flail(amplitude: float, burst: np.ndarray) -> np.ndarray:
            return amplitude * smooth_noise(rng, n, fps, cutoff) * burst

        for j in (0, 1):  # each side waxes and wanes on its own
            burst = env * (0.6 + 0.4 * np.tanh(2 * smooth_noise(rng, n, fps, 0.3)))
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


