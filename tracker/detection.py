"""Face detection with MediaPipe's BlazeFace models (short range and full range).

The short-range model (128x128 input) is fast and suits faces within about two metres of a webcam;
the full-range model (192x192) finds small and distant faces. ``FaceDetector`` runs either, or both
in turn ("auto": short range first, full range only when it finds nothing).

Anchor layout (from the BlazeFace paper and MediaPipe's SSD anchor options): short range has a
16x16 grid with 2 anchors per cell (stride 8) followed by an 8x8 grid with 6 anchors per cell
(stride 16), 896 in all; full range a 48x48 grid with one anchor per cell (2304). Anchor centres
sit at ((col + 0.5) / grid, (row + 0.5) / grid), all anchors have unit size, and the regressors
are offsets in input pixels: divide by the input size to get normalised coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from .runtime import ModelRunner

DetectorKind = Literal["short", "full", "auto"]

# Keypoint order in BlazeFace's output (the subject's right eye is on the image's left).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")


@dataclass(frozen=True)
class Detection:
    """A detected face in image pixels (zero-based, x right, y down)."""

    box: np.ndarray          # (4,) x0, y0, x1, y1
    score: float
    keypoints: np.ndarray    # (6, 2) in KEYPOINT_NAMES order
    model: str               # "short" or "full"

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass(frozen=True)
class _Variant:
    model_name: str
    input_size: int
    grids: tuple[tuple[int, int], ...]   # (grid size, anchors per cell) per output layer


_VARIANTS = {
    "short": _Variant("face_detection_short_range", 128, ((16, 2), (8, 6))),
    "full": _Variant("face_detection_full_range", 192, ((48, 1),)),
}


def make_anchors(grids: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Anchor centres (N, 2) in normalised input coordinates, in the models' output order."""
    layers = []
    for grid, per_cell in grids:
        centres = (np.arange(grid, dtype=np.float32) + 0.5) / grid
        xs, ys = np.meshgrid(centres, centres)
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        layers.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(layers).astype(np.float32)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box against many (x0, y0, x1, y1)."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = 0.3) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """BlazeFace's blending suppression: overlapping candidates are averaged, weighted by score.

    Averaging the cluster instead of keeping its best member steadies the box from frame to frame.
    """
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), bool)
    kept = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        cluster = remaining & (iou(boxes[i], boxes) > iou_threshold)
        cluster[i] = True
        weights = scores[cluster] / scores[cluster].sum()
        box = (boxes[cluster] * weights[:, None]).sum(axis=0)
        kps = (keypoints[cluster] * weights[:, None, None]).sum(axis=0)
        kept.append((box, kps, float(scores[i])))
        remaining &= ~cluster
    return kept


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Fit the image into a size x size square keeping its aspect ratio (black bars).

    Returns the square and (scale, pad_x, pad_y) so that square = image * scale + pad.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    # Bilinear, like MediaPipe's own image-to-tensor step for these detectors (INTER_AREA would be
    # ten times slower here, for a shrink ratio that is rarely a whole number).
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    square = cv2.copyMakeBorder(resized, pad_y, size - new_h - pad_y, pad_x, size - new_w - pad_x,
                                cv2.BORDER_CONSTANT, value=(0, 0, 0))
    # Exact scale per axis after rounding; use the mean (they differ by under a pixel).
    scale = (new_w / w + new_h / h) / 2
    return square, scale, float(pad_x), float(pad_y)


class FaceDetector:
    """BlazeFace detection on a BGR image; returns faces in image pixels, best first."""

    def __init__(self, kind: DetectorKind = "auto", threshold: float = 0.5, iou_threshold: float = 0.3,
                 threads: int = 1) -> None:
        if kind not in ("short", "full", "auto"):
            raise ValueError(f"detector kind must be 'short', 'full' or 'auto', not {kind!r}")
        self.kind = kind
        self.threshold = threshold
        self.iou_threshold = iou_threshold
        names = ("short", "full") if kind == "auto" else (kind,)
        self._runners = {n: ModelRunner.load(_VARIANTS[n].model_name, threads) for n in names}
        self._anchors = {n: make_anchors(_VARIANTS[n].grids) for n in names}

    def detect(self, image: np.ndarray, max_faces: int | None = None) -> list[Detection]:
        if self.kind == "auto":
            found = self._detect_with("short", image)
            if not found:
                found = self._detect_with("full", image)
        else:
            found = self._detect_with(self.kind, image)
        return found[:max_faces] if max_faces else found

    def _detect_with(self, name: str, image: np.ndarray) -> list[Detection]:
        variant = _VARIANTS[name]
        size = variant.input_size
        square, scale, pad_x, pad_y = letterbox(image, size)
        tensor = cv2.cvtColor(square, cv2.COLOR_BGR2RGB).astype(np.float32)[None] * (2.0 / 255.0) - 1.0
        regressors, logits = self._runners[name](tensor)
        regressors, logits = regressors[0], logits[0, :, 0]
        keep = logits > np.log(self.threshold / (1.0 - self.threshold))
        if not keep.any():
            return []
        raw = regressors[keep] / size
        anchors = self._anchors[name][keep]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -100, 100)))
        centres = anchors + raw[:, 0:2]
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centres - half, centres + half], axis=1)
        keypoints = anchors[:, None, :] + raw[:, 4:16].reshape(-1, 6, 2)
        detections = []
        for box, kps, score in weighted_nms(boxes, keypoints, scores, self.iou_threshold):
            # normalised square -> continuous square pixels -> image pixels (zero-based centres)
            box_px = (box * size - np.array([pad_x, pad_y, pad_x, pad_y])) / scale - 0.5
            kps_px = (kps * size - np.array([pad_x, pad_y])) / scale - 0.5
            detections.append(Detection(box_px.astype(np.float32), score, kps_px.astype(np.float32), name))
        return detections
