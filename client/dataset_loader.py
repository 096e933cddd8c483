"""Read ``facewire dataset`` files and augment their samples for training, with numpy alone.

Every geometric augmentation (box-crop jitter, rotation and shift, resize) is one 2x3 affine from
old to new pixel coordinates (zero-based pixel centres); the image is resampled bilinearly through
its inverse and every label follows the same affine: 2D points and box corners fully, the depth of
3D points by the affine's scale, and head pose and gaze by its in-plane rotation (the camera turned
about its optical axis). A horizontal flip mirrors x, swaps left and right landmarks (iBUG 68 mirror
pairs, and the mesh's own pairs from ``models/reference_face.npz``), swaps the eyes' gaze and negates
its x, and negates yaw and roll (exact: mirroring x conjugates Ry and Rz to their inverses).

Conventions are the dataset file's (``facewire.tracker.offline.dataset``): head pose (yaw, pitch,
roll) degrees with rotation = Rx(-pitch) Ry(-yaw) Rz(roll) in camera axes (x right, y down, z away
from the camera); gaze rows = subject's right eye, left eye, combined.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .views import rot_x, rot_y, rot_z

# iBUG 68 mirror partners (0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth).
_PAIRS_68 = [(0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9),
             (17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (31, 35), (32, 34),
             (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
             (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
MIRROR_68 = np.arange(68)
for _a, _b in _PAIRS_68:
    MIRROR_68[_a], MIRROR_68[_b] = _b, _a
MIRROR_68.setflags(write=False)

_POINT_KEYS = ("landmarks2D", "landmarks3D", "landmarks478")
BOX_FLIP_ORDER = np.array([1, 0, 3, 2])     # keeps the corners clockwise from the top-left


class DatasetFileError(ValueError):
    """A file is not a readable ``facewire dataset`` file."""


def mirror_478() -> np.ndarray:
    """Each mesh vertex's mirror partner (478,), from the reference face shipped in facewire.models."""
    import facewire.models
    path = Path(facewire.models.__file__).with_name("reference_face.npz")
    with np.load(path) as data:
        mirror = data["mirror"].astype(np.int64)
    if mirror.shape != (478,) or not np.array_equal(mirror[mirror], np.arange(478)):
        raise DatasetFileError(f"{path}: mirror must be a (478,) involution")
    return mirror


@dataclass(frozen=True)
class Sample:
    """One frame and its labels, in the stored image's pixels (see the module docstring)."""

    image: np.ndarray                  # (H, W, 3) uint8 RGB
    box: np.ndarray                    # (4, 2) corners
    landmarks2D: np.ndarray            # (68, 2)
    landmarks3D: np.ndarray            # (68, 3)
    head_pose: np.ndarray              # (3,) yaw, pitch, roll degrees
    gaze: np.ndarray                   # (3, 3) right eye, left eye, combined
    landmarks478: np.ndarray | None = None
    uncertainty68: np.ndarray | None = None
    uncertainty478: np.ndarray | None = None
    source: str = ""
    frame: int = -1


_REQUIRED = ("colorImages", "boundingBox", "landmarks2D", "landmarks3D", "headPose", "gazeVector",
             "frameNumbers", "metadata")


def read_file(path: str | Path) -> list[Sample]:
    """Every sample of one dataset file (no pickles are ever loaded)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in _REQUIRED if k not in d.files]
            if missing:
                raise DatasetFileError(f"{path} is not a facewire dataset file (lacks {', '.join(missing)})")
            data = {k: d[k] for k in d.files}
    except (OSError, ValueError) as exc:
        if isinstance(exc, DatasetFileError):
            raise
        raise DatasetFileError(f"cannot read {path}: {exc}") from None
    source = json.loads(str(data["metadata"])).get("source_name", path.name)
    optional = {k: data.get(k) for k in ("landmarks478", "uncertainty68", "uncertainty478")}
    return [Sample(data["colorImages"][i], data["boundingBox"][i], data["landmarks2D"][i], data["landmarks3D"][i],
                   data["headPose"][i], data["gazeVector"][i],
                   *(None if v is None else v[i] for v in optional.values()),
                   source=source, frame=int(data["frameNumbers"][i]))
            for i in range(len(data["frameNumbers"]))]


# --- rotations in the dataset's convention ------------------------------------------------------------

def rotation_from_pose(yaw: float, pitch: float, roll: float) -> np.ndarray:
    return rot_x(-math.radians(pitch)) @ rot_y(-math.radians(yaw)) @ rot_z(math.radians(roll))


def pose_from_rotation(r: np.ndarray) -> np.ndarray:
    yaw = -math.asin(max(-1.0, min(1.0, float(r[0, 2]))))
    pitch = -math.atan2(-float(r[1, 2]), float(r[2, 2]))
    roll = math.atan2(-float(r[0, 1]), float(r[0, 0]))
    return np.degrees([yaw, pitch, roll]).astype(np.float32)


# --- image resampling ----------------------------------------------------------------------------------

def warp_affine(image: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample ``image`` so that pixel p lands at ``m @ [p, 1]``; (width, height) ``size``; black outside.

    Bilinear: each output pixel reads the four input pixels around its preimage.
    """
    w, h = size
    a = np.vstack([m, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(a)[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    src = image.astype(np.float32)
    ih, iw = image.shape[:2]
    out = np.zeros((h, w, image.shape[2]), np.float32)
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        yy, xx = y0 + dy, x0 + dx
        inside = (xx >= 0) & (xx < iw) & (yy >= 0) & (yy < ih)
        out += np.where(inside[..., None], src[np.clip(yy, 0, ih - 1), np.clip(xx, 0, iw - 1)], 0.0) * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _map(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    out = np.array(pts, np.float32, copy=True)
    out[..., :2] = pts[..., :2] @ m[:, :2].T + m[:, 2]
    if pts.shape[-1] > 2:
        out[..., 2] = pts[..., 2] * math.sqrt(abs(np.linalg.det(m[:, :2])))
    return out


def transform(sample: Sample, m: np.ndarray, size: tuple[int, int]) -> Sample:
    """Apply a similarity ``m`` (2x3, old pixels -> new pixels) to the image and every label."""
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    angle = math.atan2(m[1, 0], m[0, 0])           # in-plane turn (image y down: clockwise on screen)
    turn = rot_z(angle)
    rotation = turn @ rotation_from_pose(*sample.head_pose.tolist())
    changes = {k: _map(m, getattr(sample, k)) for k in _POINT_KEYS if getattr(sample, k) is not None}
    changes.update(image=warp_affine(sample.image, m, size), box=_map(m, sample.box),
                   head_pose=pose_from_rotation(rotation),
                   gaze=(sample.gaze.astype(np.float64) @ turn.T).astype(np.float32))
    for k in ("uncertainty68", "uncertainty478"):
        if getattr(sample, k) is not None:
            changes[k] = (getattr(sample, k) * scale).astype(np.float32)
    return replace(sample, **changes)


# --- augmentations --------------------------------------------------------------------------------------

def hflip(sample: Sample, mirror478: np.ndarray | None = None) -> Sample:
    """Mirror left-right: pixels, points (with left/right partners swapped), eyes, yaw and roll."""
    w = sample.image.shape[1]

    def points(p: np.ndarray, order: np.ndarray) -> np.ndarray:
        q = p[order].copy()
        q[..., 0] = (w - 1) - q[..., 0]
        return q

    changes = dict(image=np.ascontiguousarray(sample.image[:, ::-1]),
                   box=points(sample.box, BOX_FLIP_ORDER),
                   landmarks2D=points(sample.landmarks2D, MIRROR_68),
                   landmarks3D=points(sample.landmarks3D, MIRROR_68),
                   head_pose=sample.head_pose * np.array([-1, 1, -1], np.float32),
                   gaze=sample.gaze[[1, 0, 2]] * np.array([-1, 1, 1], np.float32))
    if sample.uncertainty68 is not None:
        changes["uncertainty68"] = sample.uncertainty68[MIRROR_68]
    if sample.landmarks478 is not None or sample.uncertainty478 is not None:
        mirror478 = mirror_478() if mirror478 is None else mirror478
        if sample.landmarks478 is not None:
            changes["landmarks478"] = points(sample.landmarks478, mirror478)
        if sample.uncertainty478 is not None:
            changes["uncertainty478"] = sample.uncertainty478[mirror478]
    return replace(sample, **changes)


def color_jitter(sample: Sample, brightness: float, contrast: float, saturation: float) -> Sample:
    """Multiply brightness, contrast (about the mean grey) and saturation (about each pixel's grey)."""
    img = sample.image.astype(np.float32) * brightness
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = (img - grey.mean()) * contrast + grey.mean()
    grey = (img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    img = (img - grey) * saturation + grey
    return replace(sample, image=np.clip(np.rint(img), 0, 255).astype(np.uint8))


def grayscale(sample: Sample) -> Sample:
    grey = np.rint(sample.image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    return replace(sample, image=np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2))


def box_crop(sample: Sample, out: int, scale: float = 1.5, shift: tuple[float, float] = (0.0, 0.0),
             zoom: float = 1.0) -> Sample:
    """A square ``out`` x ``out`` crop around the box: side ``scale * zoom`` x its longer side, centre
    moved by ``shift`` (fractions of the side)."""
    lo, hi = sample.box.min(axis=0), sample.box.max(axis=0)
    side = float((hi - lo).max()) * scale * zoom
    centre = (lo + hi) / 2 + np.asarray(shift) * side
    s = out / side
    # Edge of the crop in pixel-edge coordinates: centre + 0.5 - side/2.
    left, top = centre + 0.5 - side / 2
    m = np.array([[s, 0.0, (0.5 - left) * s - 0.5], [0.0, s, (0.5 - top) * s - 0.5]])
    return transform(sample, m, (out, out))


def rotate_shift(sample: Sample, degrees: float, shift: tuple[float, float] = (0.0, 0.0)) -> Sample:
    """Turn the image about its centre by ``degrees`` (clockwise on screen) and move it by ``shift`` pixels."""
    h, w = sample.image.shape[:2]
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    rot = np.array([[c, -s], [s, c]])
    m = np.hstack([rot, (centre - rot @ centre + np.asarray(shift))[:, None]])
    return transform(sample, m, (w, h))


def resize(sample: Sample, width: int, height: int) -> Sample:
    h, w = sample.image.shape[:2]
    sx, sy = width / w, height / h
    if not math.isclose(sx, sy, rel_tol=0.02):
        raise ValueError("resize keeps the aspect ratio (labels such as 3D depth need one scale)")
    m = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    return transform(sample, m, (width, height))


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; every draw comes from the generator given to ``augment``."""

    size: int = 128                                 # output side (box crop)
    crop_scale: float = 1.5
    crop_shift: float = 0.05                        # +- fraction of the crop side
    crop_zoom: float = 0.1                          # +- relative
    rotation_deg: float = 15.0
    shift_px: float = 4.0
    flip_p: float = 0.5
    grayscale_p: float = 0.1
    color_p: float = 0.8
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    mirror478: np.ndarray | None = field(default=None, compare=False)


def augment(sample: Sample, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> Sample:
    """Box-crop jitter, rotation and shift, flip, colour jitter or grayscale, at ``config.size``."""
    u = rng.uniform
    sample = box_crop(sample, config.size, config.crop_scale,
                      (u(-config.crop_shift, config.crop_shift), u(-config.crop_shift, config.crop_shift)),
                      1.0 + u(-config.crop_zoom, config.crop_zoom))
    sample = rotate_shift(sample, u(-config.rotation_deg, config.rotation_deg),
                          (u(-config.shift_px, config.shift_px), u(-config.shift_px, config.shift_px)))
    if u() < config.flip_p:
        sample = hflip(sample, config.mirror478)
    if u() < config.grayscale_p:
        sample = grayscale(sample)
    elif u() < config.color_p:
        sample = color_jitter(sample, *(1.0 + u(-r, r) for r in (config.brightness, config.contrast,
                                                                 config.saturation)))
    return sample


def iter_samples(files: Sequence[str | Path] | Iterable[str | Path], config: AugmentConfig | None = None,
                 shuffle: bool = False, seed: int = 0) -> Iterator[Sample]:
    """Samples of every file in order (or shuffled within each file), augmented when ``config`` is given."""
    rng = np.random.default_rng(seed)
    if config is not None and config.mirror478 is None:
        config = replace(config, mirror478=mirror_478())
    for path in files:
        samples = read_file(path)
        order = rng.permutation(len(samples)) if shuffle else range(len(samples))
        for i in order:
            yield augment(samples[i], rng, config) if config is not None else samples[i]
