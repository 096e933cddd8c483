"""MediaPipe's separate iris model on 64x64 eye crops.

The attention mesh already places both irises, so the tracker does not need this model. It is the
second, independent way to find the irises: with the plain 468-point mesh it gives the same 478
points, and the tests use it to check the converted attention model.

An eye crop is a square centred between the eye's two corner vertices, turned so the corners lie
level and 2.3 times as wide as the corner distance (the model's training crop). The model was
trained on one eye side: the other eye is mirrored before and after.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .landmarks import Roi
from .runtime import ModelRunner

IRIS_CROP = 64
EYE_SCALE = 2.3
# (outer corner, inner corner) mesh vertices; the subject's right eye is on the image's left.
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (362, 263)


@dataclass(frozen=True)
class EyeResult:
    contour: np.ndarray   # (71, 3) eye contour and brow points, image pixels
    iris: np.ndarray      # (5, 3) iris centre then four outline points, image pixels


def eye_roi(points: np.ndarray, corners: tuple[int, int]) -> Roi:
    a, b = points[corners[0], :2], points[corners[1], :2]
    d = b - a
    angle = math.atan2(float(d[1]), float(d[0]))
    if d[0] < 0:   # keep the crop upright whichever corner comes first
        angle += math.pi
    centre = (a + b) / 2
    return Roi(float(centre[0]), float(centre[1]), float(np.hypot(*d)) * EYE_SCALE, angle)


class IrisLandmarker:
    """Both eyes' iris and contour points from a face's mesh landmarks."""

    def __init__(self, threads: int = 1) -> None:
        self._runner = ModelRunner.load("iris_landmark", threads)

    def __call__(self, image: np.ndarray, mesh_points: np.ndarray) -> tuple[EyeResult, EyeResult]:
        """(subject's right eye, subject's left eye)."""
        rois = [eye_roi(mesh_points, RIGHT_EYE_CORNERS), eye_roi(mesh_points, LEFT_EYE_CORNERS)]
        crops = [roi.crop(image, IRIS_CROP) for roi in rois]
        crops[1] = crops[1][:, ::-1]          # the model sees every eye as the subject's right eye
        batch = np.stack([cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for c in crops]).astype(np.float32) / 255.0
        results = []
        for k, roi in enumerate(rois):
            contour, iris = (o.reshape(-1, 3).copy() for o in self._runner(batch[k:k + 1]))
            if k == 1:
                contour[:, 0] = IRIS_CROP - contour[:, 0]
                iris[:, 0] = IRIS_CROP - iris[:, 0]
            results.append(EyeResult(roi.points_to_image(contour, IRIS_CROP), roi.points_to_image(iris, IRIS_CROP)))
        return results[0], results[1]
