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
