"""Dense face landmarks: the 478-point attention mesh (or the plain 468-point mesh) on a rotated crop.

A face is cut out of the image as a square ``Roi`` turned so the eyes lie level, scaled to the model's
192x192 input, and the model's points are mapped back to image pixels. Coordinates everywhere are
zero-based pixels (the centre of the top-left pixel is (0, 0)); z is in the same pixel scale, smaller
values nearer the camera, as the models produce it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from .detection import Detection
from .runtime import ModelRunner, load_data_file

MeshKind = Literal["attention", "mesh"]

CROP_SIZE = 192
ROI_SCALE = 1.5          # crop side = 1.5 x the face's extent, as the models were trained
# Mesh vertices at the outer eye corners: 33 on the image's left (subject's right eye), 263 on the right.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263


@dataclass(frozen=True)
class Roi:
    """A square, rotated region of the image: centre (zero-based pixels), side, and the angle of its x axis."""

    cx: float
    cy: float
    size: float
    angle: float   # radians; the crop's x axis points along (cos a, sin a) in the image

    def crop_to_image(self, out: int) -> np.ndarray:
        """2x3 affine taking crop pixel indices to image pixel indices."""
        s = self.size / out
        c, n = math.cos(self.angle) * s, math.sin(self.angle) * s
        a = np.array([[c, -n], [n, c]])
        offset = np.array([self.cx, self.cy]) + a @ np.full(2, 0.5 - out / 2)
        return np.hstack([a, offset[:, None]])

    def points_to_image(self, pts: np.ndarray, out: int) -> np.ndarray:
        """Map model outputs (continuous crop coordinates, 0..out across the crop) to image pixels.

        x and y are rotated and scaled into the image; a z column, if present, is only scaled.
        """
        s = self.size / out
        c, n = math.cos(self.angle) * s, math.sin(self.angle) * s
        u = pts[..., 0] - out / 2
        v = pts[..., 1] - out / 2
        res = np.empty_like(pts, dtype=np.float32)
        res[..., 0] = self.cx + c * u - n * v
        res[..., 1] = self.cy + n * u + c * v
        if pts.shape[-1] > 2:
            res[..., 2:] = pts[..., 2:] * s
        return res

    def crop(self, image: np.ndarray, out: int) -> np.ndarray:
        return cv2.warpAffine(image, self.crop_to_image(out), (out, out),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)


def roi_from_detection(det: Detection) -> Roi:
    """The crop MediaPipe's mesh expects for a fresh detection: box centre, eyes level, 1.5x the box."""
    right_eye, left_eye = det.keypoints[0], det.keypoints[1]
    angle = math.atan2(float(left_eye[1] - right_eye[1]), float(left_eye[0] - right_eye[0]))
    cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
    size = max(det.box[2] - det.box[0], det.box[3] - det.box[1]) * ROI_SCALE
    return Roi(float(cx), float(cy), float(size), angle)


def roi_from_landmarks(points: np.ndarray) -> Roi:
    """The crop for the next frame, from this frame's landmarks (the tracking path, no detector).

    The extent is measured in the face's own rotated frame so a tilted head gets the same tight crop
    as an upright one.
    """
    xy = points[:, :2]
    d = xy[LEFT_EYE_OUTER] - xy[RIGHT_EYE_OUTER]
    angle = math.atan2(float(d[1]), float(d[0]))
    c, s = math.cos(angle), math.sin(angle)
    local = xy @ np.array([[c, -s], [s, c]])             # rotate by -angle
    lo, hi = local.min(axis=0), local.max(axis=0)
    centre_local = (lo + hi) / 2
    cx = c * centre_local[0] - s * centre_local[1]
    cy = s * centre_local[0] + c * centre_local[1]
    size = float(max(hi - lo)) * ROI_SCALE
    return Roi(float(cx), float(cy), size, angle)


@dataclass(frozen=True)
class MeshResult:
    points: np.ndarray      # (478, 3) or (468, 3), image pixels; z in pixels, negative = nearer
    presence: float         # probability that the crop holds a face
    roi: Roi


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 60.0), -60.0)))


class Landmarker:
    """Runs the face mesh on a Roi. ``kind="attention"`` gives 478 points with irises."""

    def __init__(self, kind: MeshKind = "attention", threads: int = 1) -> None:
        if kind not in ("attention", "mesh"):
            raise ValueError(f"mesh kind must be 'attention' or 'mesh', not {kind!r}")
        self.kind = kind
        name = "face_landmark_with_attention" if kind == "attention" else "face_landmark"
        self._runner = ModelRunner.load(name, threads)
        if kind == "attention":
            topology = load_data_file("mesh_topology.npz")
            self._refine = [(topology[key].astype(np.int64)) for key in
                            ("lips", "left_eye", "right_eye")]
            self._iris_depth = [topology["left_iris_depth"].astype(np.int64),
                                topology["right_iris_depth"].astype(np.int64)]
            # Irises go to 468..472 (subject's right) and 473..477 (subject's left); the model's
            # "left" heads look at the image's left, i.e. the subject's right eye.
            self._iris_order = (1, 0) if bool(topology["right_eye_is_subject_right"]) else (0, 1)

    @staticmethod
    def preprocess(image: np.ndarray, roi: Roi) -> np.ndarray:
        crop = roi.crop(image, CROP_SIZE)
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)[None] * (1.0 / 255.0)

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        """The raw model outputs for a preprocessed crop."""
        return self._runner(tensor)

    def __call__(self, image: np.ndarray, roi: Roi) -> MeshResult:
        outputs = self._runner(self.preprocess(image, roi))
        points = self.assemble(outputs)
        return MeshResult(roi.points_to_image(points, CROP_SIZE), _sigmoid(float(outputs[-1].ravel()[0])), roi)

    def assemble(self, outputs: list[np.ndarray]) -> np.ndarray:
        """Model outputs -> (N, 3) crop coordinates; the attention heads refine lips, eyes and add irises."""
        mesh = outputs[0].reshape(468, 3)
        if self.kind == "mesh":
            return mesh
        lips, left_eye, right_eye, left_iris, right_iris = (o.reshape(-1, 2) for o in outputs[1:6])
        points = np.empty((478, 3), np.float32)
        points[:468] = mesh
        for idx, refined in zip(self._refine, (lips, left_eye, right_eye)):
            points[idx, :2] = refined
        irises = (left_iris, right_iris)
        for k, head in enumerate(self._iris_order):
            iris, depth_idx = irises[head], self._iris_depth[head]
            rows = slice(468 + 5 * k, 473 + 5 * k)
            points[rows, :2] = iris
            points[rows, 2] = mesh[depth_idx, 2].mean()
        return points
