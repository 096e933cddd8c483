"""Dense face landmarks: the 478-point attention mesh (or the plain 468-point mesh) on a rotated crop.

A face is cut out of the image as a square ``Roi`` turned so the eyes lie level, scaled to the model's
192x192 input, and the model's points are mapped back to image pixels. ``kind="v2"`` runs FaceMesh V2
(MediaPipe's Face Landmarker model) instead: the same crop at 256x256, 478 points with irises, and a
tongue-out score. Coordinates everywhere are
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
from .runtime import BoundRunner, ModelRunner, load_data_file

MeshKind = Literal["attention", "mesh", "v2"]

CROP_SIZE = 192
V2_CROP_SIZE = 256       # FaceMesh V2 reads the same crop at 256x256
_MODEL_FOR_KIND = {"attention": "face_landmark_with_attention", "mesh": "face_landmark", "v2": "face_landmarks_v2"}
ROI_SCALE = 1.5          # crop side = 1.5 x the face's extent, as the models were trained
# Mesh vertices at the outer eye corners: 33 on the image's left (subject's right eye), 263 on the right.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263
_BYTE_TO_UNIT = np.float32(1.0 / 255.0)


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
        h = 0.5 - out / 2          # crop pixel index of the crop's centre, relative to pixel 0, negated
        return np.array([[c, -n, self.cx + (c * h - n * h)], [n, c, self.cy + (n * h + c * h)]])

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
        """The (out, out) crop, bilinear, black outside the image (``RgbCropper`` does the same faster)."""
        return cv2.warpAffine(image, self.crop_to_image(out), (out, out),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)


class RgbCropper:
    """Cuts RGB crops out of BGR frames: ``Roi.crop`` then a BGR to RGB swap, in about two thirds of the time.

    OpenCV's bilinear warp is about twice as fast on four-channel images as on three-channel ones. So the
    frame pixels a crop reads (its bounding box) are converted to RGBA, into a frame-sized buffer kept
    between calls, and that buffer is warped. The crop holds exactly the pixels of the plain warp: the warp
    reads nothing outside the box, and the buffer's size keeps OpenCV's border handling the same. Not for
    use from several threads at once (one buffer).
    """

    def __init__(self) -> None:
        self._rgba = np.empty((0, 0, 4), np.uint8)

    def __call__(self, image: np.ndarray, roi: Roi, out: int) -> np.ndarray:
        """(out, out, 3) RGB crop of a BGR (or BGRA) image, of the image's dtype."""
        height, width = image.shape[:2]
        if self._rgba.shape[:2] != (height, width) or self._rgba.dtype != image.dtype:
            self._rgba = np.empty((height, width, 4), image.dtype)
        m = roi.crop_to_image(out)
        # The crop's corners in the image, widened by the bilinear taps (and OpenCV's coordinate rounding).
        (a, b, x), (c, d, y) = m.tolist()
        far = out - 1
        x_lo, x_hi = x + far * (min(a, 0.0) + min(b, 0.0)), x + far * (max(a, 0.0) + max(b, 0.0))
        y_lo, y_hi = y + far * (min(c, 0.0) + min(d, 0.0)), y + far * (max(c, 0.0) + max(d, 0.0))
        x0, x1 = max(math.floor(x_lo) - 1, 0), min(math.floor(x_hi) + 3, width)
        y0, y1 = max(math.floor(y_lo) - 1, 0), min(math.floor(y_hi) + 3, height)
        if x0 < x1 and y0 < y1:
            cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2RGBA, dst=self._rgba[y0:y1, x0:x1])
        crop = cv2.warpAffine(self._rgba, m, (out, out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT)
        return cv2.cvtColor(crop, cv2.COLOR_RGBA2RGB)


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
    x, y = points[:, 0], points[:, 1]
    angle = math.atan2(float(y[LEFT_EYE_OUTER] - y[RIGHT_EYE_OUTER]), float(x[LEFT_EYE_OUTER] - x[RIGHT_EYE_OUTER]))
    c, s = math.cos(angle), math.sin(angle)
    # Rotate by -angle; one row per axis, so the extents are fast contiguous reductions.
    local = np.array([[c, s], [-s, c]]) @ points[:, :2].T
    lo, hi = local.min(axis=1), local.max(axis=1)
    centre_u, centre_v = ((lo + hi) / 2).tolist()
    size = float((hi - lo).max()) * ROI_SCALE
    return Roi(c * centre_u - s * centre_v, s * centre_u + c * centre_v, size, angle)


@dataclass(frozen=True)
class MeshResult:
    points: np.ndarray      # (478, 3) or (468, 3), image pixels; z in pixels, negative = nearer
    presence: float         # probability that the crop holds a face
    roi: Roi
    tongue_out: float | None = None   # FaceMesh V2's tongue-out score, 0..1; None from the other meshes


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 60.0), -60.0)))


class Landmarker:
    """Runs the face mesh on a Roi. ``kind="attention"`` gives 478 points with irises; ``kind="v2"``
    (FaceMesh V2, about twice as slow) too, better on turned faces, with a tongue-out score.

    Not for use from several threads at once: the crop and model input buffers are reused every frame.
    """

    def __init__(self, kind: MeshKind = "attention", threads: int = 1) -> None:
        if kind not in _MODEL_FOR_KIND:
            raise ValueError(f"mesh kind must be 'attention', 'mesh' or 'v2', not {kind!r}")
        self.kind = kind
        self.crop_size = V2_CROP_SIZE if kind == "v2" else CROP_SIZE
        self._runner = ModelRunner.load(_MODEL_FOR_KIND[kind], threads)
        self._cropper = RgbCropper()
        # Reused: a fresh 442 kB array per frame can cost more in page faults than filling it.
        self._input = np.empty((1, self.crop_size, self.crop_size, 3), np.float32)
        self._bound = BoundRunner(self._runner, self._input)
        if kind == "attention":
            topology = load_data_file("mesh_topology.npz")
            self._refine = [(topology[key].astype(np.int64)) for key in
                            ("lips", "left_eye", "right_eye")]
            self._iris_depth = [topology["left_iris_depth"].astype(np.int64),
                                topology["right_iris_depth"].astype(np.int64)]
            # Irises go to 468..472 (subject's right) and 473..477 (subject's left); the model's
            # "left" heads look at the image's left, i.e. the subject's right eye.
            self._iris_order = (1, 0) if bool(topology["right_eye_is_subject_right"]) else (0, 1)
            # The same, flattened for one assignment each: rows the lips and eye heads overwrite (in
            # head order), and the vertices whose mean depth each iris takes (in output order).
            self._refined_rows = np.concatenate(self._refine)
            self._iris_depth_rows = np.stack([self._iris_depth[head] for head in self._iris_order])

    @staticmethod
    def preprocess(image: np.ndarray, roi: Roi, size: int = CROP_SIZE) -> np.ndarray:
        """The model's input for a crop of a BGR image: a new (1, size, size, 3) float32 RGB array in 0..1
        (192 for the attention and plain meshes, 256 for V2)."""
        rgb = cv2.cvtColor(roi.crop(image, size), cv2.COLOR_BGR2RGB)
        return np.multiply(rgb[None], _BYTE_TO_UNIT, dtype=np.float32)

    def prepare(self, image: np.ndarray, roi: Roi) -> np.ndarray:
        """``preprocess``'s values, faster, in the landmarker's own buffer (overwritten by the next call)."""
        return np.multiply(self._cropper(image, roi, self.crop_size), _BYTE_TO_UNIT, out=self._input)

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        """The raw model outputs (new arrays) for a preprocessed crop.

        Given ``prepare``'s own buffer, it takes the tracker's path (the bound run) and copies the outputs.
        """
        if tensor is self._input:
            return [output.copy() for output in self._bound()]
        return self._runner(tensor)

    def __call__(self, image: np.ndarray, roi: Roi) -> MeshResult:
        self.prepare(image, roi)
        outputs = self._bound()
        points = self.assemble(outputs)
        if self.kind == "v2":   # outputs: points, presence logit, tongue-out score
            return MeshResult(roi.points_to_image(points, V2_CROP_SIZE), _sigmoid(float(outputs[1].ravel()[0])), roi,
                              float(min(max(outputs[2].ravel()[0], 0.0), 1.0)))
        return MeshResult(roi.points_to_image(points, CROP_SIZE), _sigmoid(float(outputs[-1].ravel()[0])), roi)

    def assemble(self, outputs: list[np.ndarray]) -> np.ndarray:
        """Model outputs -> (N, 3) crop coordinates; the attention heads refine lips, eyes and add irises.

        Outputs in model order: mesh, lips, left eye, right eye, left iris, right iris (the model's
        "left" is the image's left). Iris points take the mean depth of the mesh around their eye.
        """
        if self.kind == "v2":   # all 478 points, irises included, from one output
            return outputs[0].reshape(478, 3)
        mesh = outputs[0].reshape(468, 3)
        if self.kind == "mesh":
            return mesh
        points = np.empty((478, 3), np.float32)
        points[:468] = mesh
        points[self._refined_rows, :2] = np.concatenate([o.reshape(-1, 2) for o in outputs[1:4]])
        irises = outputs[4:6]
        points[468:, :2] = np.concatenate([irises[head].reshape(5, 2) for head in self._iris_order])
        depth = np.add.reduce(mesh[self._iris_depth_rows, 2], axis=1) / np.float32(self._iris_depth_rows.shape[1])
        points[468:, 2] = np.repeat(depth, 5)
        return points
