"""Drawing a synthetic seizure video: the figure, the bed and the room, from above, encoded to H.264.

:func:`render_video` renders one :class:`gestures_hub.synthetic.SeizureSpec` with the joint angles of
:func:`gestures_hub.synthetic_motion.seizure_motion`: shaded capsules for the body parts, a lit bed with its sheet,
pillow and blanket, sometimes a person walking past, sensor noise and a "SYNTHETIC" watermark in every frame; the file
carries the metadata comment :data:`gestures_hub.synthetic.SYNTHETIC_NOTE`.
"""

from __future__ import annotations

import math
import os
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .synthetic import SYNTHETIC_NOTE, colour_array, jitter, pick
from .synthetic_motion import seizure_motion, smooth_noise

if TYPE_CHECKING:
    from .synthetic import Appearance, SeizureSpec
    from .synthetic_motion import Pose

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
    speed, direction = rng.uniform(0.45, 0.75), float(pick(rng, (-1.0, 1.0)))
    lane = float(pick(rng, (-1.0, 1.0))) * rng.uniform(0.33, 0.45)
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
    skin = colour_array(jitter(rng, (190, 145, 115), 40))
    scrubs, hair = colour_array(jitter(rng, (70, 110, 150), 30)), colour_array(jitter(rng, (50, 40, 30), 20))
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
        self.exposure = 1 + 0.015 * smooth_noise(rng, spec.n_frames, spec.fps, 0.2)
        self.colours = {
            "skin": colour_array(app.skin), "gown": colour_array(app.gown), "hair": colour_array(app.hair),
            "eye": colour_array((40, 30, 30)), "lips": colour_array(app.skin) * colour_array((0.75, 0.5, 0.5)),
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


