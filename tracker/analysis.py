"""Single-image face analysis: detection, 478 landmarks, the 68-point view, irises and head pose.

``FaceAnalyzer(config).analyze(image)`` is the one call most users of the library need; the real-time
tracker reuses the same stages but feeds each frame's crop from the previous frame's landmarks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .detection import Detection, DetectorKind, FaceDetector
from .ibug68 import to_ibug68
from .landmarks import Landmarker, MeshKind, MeshResult, roi_from_detection, roi_from_landmarks
from .pose import HeadPose, PoseEstimator

# Mesh indices of the irises (attention mesh only): centre, then four points on the iris outline.
RIGHT_IRIS = slice(468, 473)   # subject's right eye, on the image's left
LEFT_IRIS = slice(473, 478)


class ImageError(ValueError):
    """An input image is missing or cannot be decoded."""


@dataclass(frozen=True)
class Iris:
    centre: np.ndarray   # (2,) image pixels
    radius: float        # pixels


@dataclass(frozen=True)
class Face:
    """Everything the analysis knows about one face, in zero-based image pixels."""

    box: np.ndarray              # (4,) x0, y0, x1, y1 of the detection
    detection_score: float
    landmarks: np.ndarray        # (478, 3) attention mesh (or (468, 3) plain mesh); z in pixels, nearer < 0
    confidence: np.ndarray       # per landmark: presence x visibility from the head pose, 0..1
    presence: float              # the mesh model's probability that the crop holds a face
    ibug68: np.ndarray           # (68, 2) the iBUG 68-point markup
    right_iris: Iris | None      # subject's right (image left when not mirrored); None with the plain mesh
    left_iris: Iris | None
    pose: HeadPose


@dataclass(frozen=True)
class AnalyzerConfig:
    detector: DetectorKind = "auto"
    detection_threshold: float = 0.5
    mesh: MeshKind = "attention"
    refine: bool = True          # run the mesh a second time on the crop its own landmarks give
    max_faces: int | None = None
    threads: int = 1
    # Focal length in pixels for head pose. Photos come from unknown cameras, so by default the pose
    # uses a weak-perspective (scaled orthographic) camera, which measured better on AFLW2000.
    focal_px: float | None = None


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR, with an error that names the file when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} does not exist" if not path.exists() else f"{path} is not a file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"cannot decode {path} as an image (unsupported format or damaged file)")
    return image


def iris_from_points(points: np.ndarray) -> Iris:
    centre = points[0, :2]
    radius = float(np.linalg.norm(points[1:5, :2] - centre, axis=1).mean())
    return Iris(centre.astype(np.float32), radius)


class FaceAnalyzer:
    """Turns a BGR image into ``Face`` results, best detection first."""

    def __init__(self, config: AnalyzerConfig | None = None) -> None:
        self.config = config or AnalyzerConfig()
        self.detector = FaceDetector(self.config.detector, self.config.detection_threshold,
                                     threads=self.config.threads)
        self.landmarker = Landmarker(self.config.mesh, threads=self.config.threads)
        self.pose_estimator = PoseEstimator(weak_perspective=self.config.focal_px is None)

    def analyze(self, image: np.ndarray) -> list[Face]:
        if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError("expected a BGR uint8 image of shape (height, width, 3)")
        return [self.face_from_detection(image, det) for det in self.detector.detect(image, self.config.max_faces)]

    def face_from_detection(self, image: np.ndarray, det: Detection) -> Face:
        mesh = self.landmarker(image, roi_from_detection(det))
        if self.config.refine:
            mesh = self.landmarker(image, roi_from_landmarks(mesh.points))
        return self.face_from_mesh(image, mesh, det.box, det.score)

    def face_from_mesh(self, image: np.ndarray, mesh: MeshResult, box: np.ndarray, score: float) -> Face:
        h, w = image.shape[:2]
        pose = self.pose_estimator.estimate(mesh.points, (w, h), focal_px=self.config.focal_px)
        confidence = mesh.presence * self.pose_estimator.visibility(pose.rotation, len(mesh.points))
        has_iris = len(mesh.points) == 478
        return Face(
            box=np.asarray(box, np.float32),
            detection_score=float(score),
            landmarks=mesh.points,
            confidence=confidence.astype(np.float32),
            presence=mesh.presence,
            ibug68=to_ibug68(mesh.points),
            right_iris=iris_from_points(mesh.points[RIGHT_IRIS]) if has_iris else None,
            left_iris=iris_from_points(mesh.points[LEFT_IRIS]) if has_iris else None,
            pose=pose,
        )
