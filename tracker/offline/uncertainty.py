"""Per-landmark uncertainty: how far each point moves when the same face is cropped slightly differently.

The mesh model sees the face only through its crop. A point the model is sure of lands on the same
image pixel whatever the crop's exact position, size and angle; a point it guesses (a jaw hidden by
hair, a profile's far side, a blurred eye) moves. So the face is cropped ``crops`` times with small
shifts, scalings and rotations of its tracking ROI, and each point's spread is the RMS distance (in
image pixels) of its positions from their mean. The jitters are fixed for a given seed, so the same
image gives the same uncertainty. The cost is one mesh inference per crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ibug68 import to_ibug68
from ..landmarks import Landmarker, Roi


@dataclass(frozen=True)
class JitterConfig:
    crops: int = 8                 # mesh runs per face
    shift: float = 0.05            # largest centre shift, fraction of the crop side
    scale: float = 0.08            # largest relative change of the crop side
    rotation_deg: float = 8.0      # largest turn of the crop
    seed: int = 0

    def __post_init__(self) -> None:
        if self.crops < 2:
            raise ValueError(f"uncertainty needs at least 2 jittered crops, not {self.crops}")
        if self.shift < 0 or self.scale < 0 or self.rotation_deg < 0 or self.scale >= 1:
            raise ValueError("jitter amounts must be non-negative (and scale below 1)")


@dataclass(frozen=True)
class PointUncertainty:
    """Spread of each point across the jittered crops, in image pixels."""

    mesh: np.ndarray       # (478,) or (468,) float32
    ibug68: np.ndarray     # (68,) float32
    crops: int


def jittered_rois(roi: Roi, config: JitterConfig = JitterConfig()) -> list[Roi]:
    """``config.crops`` variations of ``roi``: shift, scale and rotation drawn uniformly within the limits."""
    rng = np.random.default_rng(config.seed)
    draws = rng.uniform(-1.0, 1.0, size=(config.crops, 4))
    rois = []
    for dx, dy, ds, da in draws.tolist():
        rois.append(Roi(roi.cx + dx * config.shift * roi.size, roi.cy + dy * config.shift * roi.size,
                        roi.size * (1.0 + ds * config.scale), roi.angle + math.radians(da * config.rotation_deg)))
    return rois


def spread(samples: np.ndarray) -> np.ndarray:
    """(crops, points, >=2) positions -> (points,) RMS 2D distance from the per-point mean."""
    xy = np.asarray(samples, np.float64)[..., :2]
    return np.sqrt(((xy - xy.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0)).astype(np.float32)


def point_uncertainty(image: np.ndarray, roi: Roi, landmarker: Landmarker,
                      config: JitterConfig = JitterConfig()) -> PointUncertainty:
    """Uncertainty of the face in ``roi`` (usually ``roi_from_landmarks`` of its mesh) in a BGR image."""
    meshes = np.stack([landmarker(image, r).points for r in jittered_rois(roi, config)])
    ibug = np.stack([to_ibug68(m) for m in meshes])
    return PointUncertainty(spread(meshes), spread(ibug), config.crops)


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing their mean rank."""
    v = np.asarray(values, np.float64).ravel()
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v), np.float64)
    r[order] = np.arange(1, len(v) + 1)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=r)
    return (sums / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (ties averaged)."""
    ra, rb = ranks(a), ranks(b)
    if len(ra) != len(rb) or len(ra) < 2:
        raise ValueError("rank correlation needs two arrays of the same length, at least 2")
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else math.nan


@dataclass(frozen=True)
class FaceUncertainty:
    """``PointUncertainty`` of one analysed face, with its summaries for the command line."""

    points: PointUncertainty

    def summary(self) -> str:
        u68 = self.points.ibug68
        return (f"uncertainty (68 points, px): median {np.median(u68):.2f}, max {u68.max():.2f} "
                f"at point {int(u68.argmax())}")

    def as_json(self) -> dict[str, object]:
        return {"crops": self.points.crops,
                "ibug68": np.round(self.points.ibug68.astype(np.float64), 3).tolist(),
                "mesh": np.round(self.points.mesh.astype(np.float64), 3).tolist()}


def face_uncertainty(image: np.ndarray, face, landmarker: Landmarker,
                     config: JitterConfig = JitterConfig()) -> FaceUncertainty:
    """Uncertainty of an analysed ``Face`` (``facewire analyze --uncertainty``)."""
    from ..landmarks import roi_from_landmarks
    return FaceUncertainty(point_uncertainty(image, roi_from_landmarks(face.landmarks), landmarker, config))
