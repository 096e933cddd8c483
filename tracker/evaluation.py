"""Accuracy checks on annotated photos: landmark NME and head-pose angle error.

Both commands score one face per photo: the analysed face whose detection box overlaps the
annotation's box most. A photo where no found face overlaps it counts as a miss (a failure).
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .analysis import Face, FaceAnalyzer, load_image
from .detection import iou
from .ibug68 import NON_JAW, nme, read_pts
from .pose import aflw_angles

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
FAILURE_NME = 0.10


class EvaluationError(ValueError):
    """The evaluation input (folder, annotations, ground-truth table) is unusable."""


def annotated_images(folder: Path) -> list[tuple[Path, Path]]:
    """(image, .pts) pairs in name order."""
    if not folder.is_dir():
        raise EvaluationError(f"{folder} is not a directory")
    pairs = []
    for pts in sorted(folder.glob("*.pts")):
        image = next((pts.with_suffix(s) for s in IMAGE_SUFFIXES if pts.with_suffix(s).exists()), None)
        if image is None:
            log.warning("%s has no image beside it; skipped", pts.name)
            continue
        pairs.append((image, pts))
    if not pairs:
        raise EvaluationError(f"{folder} holds no images with .pts annotations (NAME.pts beside NAME.jpg/png)")
    return pairs


def box_of(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)


def match_face(faces: list[Face], truth: np.ndarray) -> Face | None:
    """The face overlapping the annotation's box most, or None when none overlaps it."""
    if not faces:
        return None
    overlaps = iou(box_of(truth), np.stack([f.box for f in faces]))
    best = int(np.argmax(overlaps))
    return faces[best] if overlaps[best] > 0 else None


@dataclass(frozen=True)
class LandmarkScore:
    image: str
    found: bool
    nme68: float   # NaN when no face was found
    nme51: float

    @property
    def failed(self) -> bool:
        return not self.found or self.nme68 > FAILURE_NME


@dataclass(frozen=True)
class LandmarkReport:
    scores: tuple[LandmarkScore, ...]

    def _values(self, attr: str) -> np.ndarray:
        return np.array([getattr(s, attr) for s in self.scores if s.found])

    def summary(self) -> dict[str, float]:
        n68, n51 = self._values("nme68"), self._values("nme51")
        return {
            "images": len(self.scores),
            "found": int(sum(s.found for s in self.scores)),
            "mean_nme68": float(n68.mean()) if len(n68) else float("nan"),
            "median_nme68": float(np.median(n68)) if len(n68) else float("nan"),
            "mean_nme51": float(n51.mean()) if len(n51) else float("nan"),
            "median_nme51": float(np.median(n51)) if len(n51) else float("nan"),
            "failure_rate": float(np.mean([s.failed for s in self.scores])),
        }


def evaluate_landmarks(folder: Path, analyzer: FaceAnalyzer,
                       progress: Callable[[int, int, str], None] | None = None) -> LandmarkReport:
    pairs = annotated_images(folder)
    scores = []
    for k, (image_path, pts_path) in enumerate(pairs):
        truth = read_pts(pts_path)
        face = match_face(analyzer.analyze(load_image(image_path)), truth)
        if face is None:
            scores.append(LandmarkScore(image_path.name, False, float("nan"), float("nan")))
        else:
            scores.append(LandmarkScore(image_path.name, True, nme(face.ibug68, truth),
                                        nme(face.ibug68, truth, NON_JAW)))
        if progress:
            progress(k + 1, len(pairs), image_path.name)
    return LandmarkReport(tuple(scores))


@dataclass(frozen=True)
class PoseScore:
    image: str
    found: bool
    truth: tuple[float, float, float]      # yaw, pitch, roll (AFLW2000 convention, degrees)
    predicted: tuple[float, float, float]  # NaN when no face was found


@dataclass(frozen=True)
class PoseReport:
    scores: tuple[PoseScore, ...]
    skipped_out_of_range: int

    def summary(self) -> dict[str, float]:
        found = [s for s in self.scores if s.found]
        err = np.abs(np.array([s.predicted for s in found]) - np.array([s.truth for s in found])) \
            if found else np.full((0, 3), np.nan)
        mae = err.mean(axis=0) if len(err) else np.full(3, np.nan)
        return {
            "images": len(self.scores),
            "found": len(found),
            "skipped_out_of_range": self.skipped_out_of_range,
            "mae_yaw": float(mae[0]), "mae_pitch": float(mae[1]), "mae_roll": float(mae[2]),
            "mae_mean": float(mae.mean()),
        }


def read_pose_truth(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise EvaluationError(f"ground-truth table {path} does not exist") from None
    needed = {"image", "pitch_deg", "yaw_deg", "roll_deg"}
    if not rows or not needed <= set(rows[0]):
        raise EvaluationError(f"{path} must be a CSV with columns {', '.join(sorted(needed))} "
                              f"(and optionally in_range_99deg)")
    return rows


def evaluate_pose(folder: Path, truth_csv: Path, analyzer: FaceAnalyzer,
                  progress: Callable[[int, int, str], None] | None = None) -> PoseReport:
    if not folder.is_dir():
        raise EvaluationError(f"{folder} is not a directory")
    rows = read_pose_truth(truth_csv)
    kept = [r for r in rows if r.get("in_range_99deg", "1") != "0"]
    scores = []
    for k, row in enumerate(kept):
        image_path = folder / row["image"]
        truth = (float(row["yaw_deg"]), float(row["pitch_deg"]), float(row["roll_deg"]))
        faces = analyzer.analyze(load_image(image_path))
        pts_path = image_path.with_suffix(".pts")
        face = match_face(faces, read_pts(pts_path)) if pts_path.exists() else (faces[0] if faces else None)
        if face is None:
            scores.append(PoseScore(row["image"], False, truth, (float("nan"),) * 3))
        else:
            pitch, yaw, roll = aflw_angles(face.pose.rotation)
            scores.append(PoseScore(row["image"], True, truth, (yaw, pitch, roll)))
        if progress:
            progress(k + 1, len(kept), row["image"])
    return PoseReport(tuple(scores), len(rows) - len(kept))
