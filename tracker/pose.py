"""Head pose: the head's rotation and position in the camera frame, from the face mesh.

Reference face
    ``models/reference_face.npz``, made by ``scripts/build_reference_face.py`` from the mesh model's
    own 3D output on frontal video frames (its docstring has the details): mesh vertices in
    millimetres (63 mm between the iris centres), per-vertex outward normals, mirror pairs, and the
    64 most rigid vertices, which are the ones the pose is fitted on.

Frames
    Camera frame: OpenCV's, x right, y down, z away from the camera, millimetres. A pinhole camera
    with focal length ``focal_px`` (default: the image width, a horizontal field of view of about 53
    degrees, typical of webcams) and the principal point at the image centre ((w-1)/2, (h-1)/2) in
    zero-based pixel coordinates.
    Head frame: origin between the eyes (midpoint of the four eye corners); x towards the subject's
    left, y down, z towards the back of the head, so it lines up with the camera frame for a face
    looking into the camera. ``rotation`` maps head coordinates to camera coordinates:
    ``p_camera = rotation @ p_head + translation``; ``translation`` is where the point between the
    eyes is, in mm.

Angles (degrees), the same convention as ``facewire.client.views.head_angles``
    rotation = Rx(-pitch) @ Ry(-yaw) @ Rz(roll) about the camera's axes (x right, y down, z forward):
    yaw > 0 turns the face to the subject's left (towards the image's right), pitch > 0 lifts the
    chin, roll > 0 tilts the head towards the subject's left shoulder (clockwise on screen). In a
    head frame with y up and z towards the back of the head these are right-handed turns about y, x
    and z. All three are 0 when the face looks straight into the camera.

AFLW2000-3D convention (worked out on ``headpose_aflw2000.csv``)
    AFLW's Pose_Para angles (pitch, yaw, roll) fit R = Rx(-pitch) @ Ry(yaw) @ Rz(roll) in camera
    axes: its pitch and roll are ours, its yaw has the opposite sign (positive = turned to the
    subject's right). Tried against
    our rotations on the 31 in-range photos, every other sign choice is at least twice as far off
    (mean geodesic error 13.7 degrees or more against 6.4) and the next best axis order 1.3 times.
    AFLW's frontal head is pitched against ours by a constant turn about the head's x axis (our
    "frontal" comes from people looking at a webcam, AFLW's from its 3D morphable model):
    ``AFLW_PITCH_OFFSET_DEG``, the median over those photos. As it was measured on the test photos,
    an honest score re-estimates it leaving each photo out: ``aflw_angles_leave_one_out``.
    AFLW2000-3D fitted its poses with a scaled orthographic camera, so evaluate it with
    ``weak_perspective=True``.

Methods
    ``"align"`` (default): a similarity (rotation, scale, shift) from the reference's pose vertices
    to the mesh points including the mesh's own z, a weak-perspective fit along the ray through the
    face, then turned onto that ray; depth follows from the scale and the focal length. ``"pnp"``:
    OpenCV's iterative PnP on the x, y of the pose vertices through the pinhole camera, started from
    the alignment or from the previous frame's pose. On the AFLW2000 photos ``align`` is clearly the
    more accurate (mean absolute error about 3.2 against 4.1 degrees: PnP trusts the reference's
    depth, ``align`` the mesh's own, which fits the face at hand), and it is the faster.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import cv2
import numpy as np

from facewire.client.views import rot_x, rot_y, rot_z  # one definition of the elementary rotations

from .runtime import ModelError, load_data_file

PoseMethod = Literal["align", "pnp"]

REFERENCE_FILE = "reference_face.npz"
MESH_VERTICES = 468
# Head-side pitch (degrees) taking our head frame to AFLW2000-3D's: the median over the 31 in-range
# AFLW2000 photos in ../shared/data/images, method "align" with weak_perspective=True (6.95; 6.0 with
# the perspective default). See the module docstring.
AFLW_PITCH_OFFSET_DEG = 6.95
# With weak_perspective, PnP stands in for a camera at infinity with this many times the focal length.
WEAK_PERSPECTIVE_FOCAL_SCALE = 1000.0
# Visibility ramps from 0 to 1 as the cosine between a vertex's outward normal and the direction to
# the camera goes from VISIBLE_FROM to VISIBLE_AT (slightly behind the silhouette to ~17 deg inside it).
VISIBLE_FROM, VISIBLE_AT = -0.1, 0.3


class PoseError(ValueError):
    """The landmarks or camera given to the pose estimator are unusable."""


@dataclass(frozen=True)
class ReferenceFace:
    vertices: np.ndarray       # (N, 3) mm, head frame
    normals: np.ndarray        # (N, 3) unit, outward
    mirror: np.ndarray         # (N,) index of each vertex's mirror partner
    pose_vertices: np.ndarray  # indices the pose is fitted on
    ipd_mm: float

    @classmethod
    def load(cls, name: str = REFERENCE_FILE) -> "ReferenceFace":
        """The reference shipped in models/ (checked for presence by ``load_data_file``)."""
        return cls.from_arrays(load_data_file(name))

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray]) -> "ReferenceFace":
        missing = {"vertices", "normals", "mirror", "pose_vertices", "ipd_mm"} - set(data)
        if missing:
            raise ModelError(f"the reference face lacks {', '.join(sorted(missing))}; rebuild it with "
                             f"scripts/build_reference_face.py")
        return cls(data["vertices"].astype(np.float64), data["normals"].astype(np.float64),
                   data["mirror"].astype(np.int64), data["pose_vertices"].astype(np.int64),
                   float(data["ipd_mm"]))


@dataclass(frozen=True)
class HeadPose:
    """Head rotation and position in the camera frame (conventions in the module docstring)."""

    rotation: np.ndarray        # (3, 3) head -> camera
    quaternion: np.ndarray      # (4,) x, y, z, w of the same rotation, w >= 0
    yaw: float                  # degrees
    pitch: float
    roll: float
    translation: np.ndarray     # (3,) mm, the point between the eyes in the camera frame
    reprojection_error: float   # RMS pixels over the pose vertices, through the pinhole camera

    @classmethod
    def from_rotation(cls, rotation: np.ndarray, translation: np.ndarray,
                      reprojection_error: float) -> "HeadPose":
        yaw, pitch, roll = euler_from_rotation(rotation)
        return cls(rotation, quaternion_from_rotation(rotation), yaw, pitch, roll,
                   np.asarray(translation, np.float64), float(reprojection_error))


# --- rotations -------------------------------------------------------------------------------------

def _rotation_onto(direction: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the z axis onto ``direction``."""
    d = direction / np.linalg.norm(direction)
    axis = np.array([-d[1], d[0], 0.0])          # z x d
    s, c = float(np.linalg.norm(axis)), float(d[2])
    if s < 1e-12:
        return np.eye(3)
    axis /= s
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + s * cross + (1.0 - c) * cross @ cross


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rx(-pitch) @ Ry(-yaw) @ Rz(roll), angles in degrees (see the module's convention)."""
    return rot_x(-math.radians(pitch)) @ rot_y(-math.radians(yaw)) @ rot_z(math.radians(roll))


def euler_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees with R = Rx(-pitch) @ Ry(-yaw) @ Rz(roll); yaw in [-90, 90]."""
    r = rotation
    yaw = -math.asin(max(-1.0, min(1.0, float(r[0, 2]))))
    pitch = -math.atan2(-float(r[1, 2]), float(r[2, 2]))
    roll = math.atan2(-float(r[0, 1]), float(r[0, 0]))
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def quaternion_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a rotation matrix (largest-component method)."""
    r = rotation
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
    elif r[0, 0] >= r[1, 1] and r[0, 0] >= r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] >= r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s]
    q = np.array(q, dtype=np.float64)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def rotation_from_quaternion(q: Sequence[float]) -> np.ndarray:
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


# --- AFLW2000-3D's angles ------------------------------------------------------------------------------

def aflw_angles(rotation: np.ndarray,
                pitch_offset_deg: float = AFLW_PITCH_OFFSET_DEG) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees as AFLW2000-3D's Pose_Para reports them for this head rotation."""
    yaw, pitch, roll = euler_from_rotation(rotation @ rot_x(-math.radians(pitch_offset_deg)))
    return pitch, -yaw, roll


def rotation_from_aflw(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """The rotation AFLW2000-3D angles (degrees) describe, in AFLW's own head frame."""
    return rot_x(-math.radians(pitch)) @ rot_y(math.radians(yaw)) @ rot_z(math.radians(roll))


def aflw_pitch_offsets(rotations: Sequence[np.ndarray], truth: np.ndarray) -> np.ndarray:
    """Per photo, the head-side turn about x (degrees) from AFLW's head frame to ours.

    ``truth`` is (n, 3) AFLW (pitch, yaw, roll). Each value is the x part of the rotation vector of
    ``M_aflw^T @ R``, which is a pure turn about x when the only difference is the frames' pitch.
    """
    out = []
    for rotation, (pitch, yaw, roll) in zip(rotations, np.asarray(truth, np.float64)):
        rvec, _ = cv2.Rodrigues(rotation_from_aflw(pitch, yaw, roll).T @ rotation)
        out.append(math.degrees(float(rvec[0, 0])))
    return np.array(out)


def aflw_angles_leave_one_out(rotations: Sequence[np.ndarray], truth: np.ndarray) -> np.ndarray:
    """(n, 3) AFLW (pitch, yaw, roll) per photo, each converted with the frame offset estimated
    (median) from all the other photos: the honest way to score with a data-fitted offset."""
    offsets = aflw_pitch_offsets(rotations, truth)
    return np.array([aflw_angles(r, float(np.median(np.delete(offsets, i)))) for i, r in enumerate(rotations)])


# --- the estimator ---------------------------------------------------------------------------------------

def camera_matrix(image_size: tuple[int, int], focal_px: float | None = None) -> np.ndarray:
    w, h = image_size
    if w <= 0 or h <= 0:
        raise PoseError(f"image size must be positive, got {image_size}")
    f = float(focal_px) if focal_px is not None else float(w)
    if f <= 0:
        raise PoseError(f"focal length must be positive, got {focal_px}")
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


class PoseEstimator:
    """Turns mesh landmarks (image pixels, z in pixel scale) into a ``HeadPose``."""

    def __init__(self, method: PoseMethod = "align", reference: ReferenceFace | None = None,
                 weak_perspective: bool = False) -> None:
        if method not in ("align", "pnp"):
            raise ValueError(f"pose method must be 'align' or 'pnp', not {method!r}")
        self.method = method
        self.weak_perspective = weak_perspective
        self.reference = reference or ReferenceFace.load()
        self._index = self.reference.pose_vertices
        self._object = np.ascontiguousarray(self.reference.vertices[self._index])
        self._object_mean = self._object.mean(axis=0)
        self._object_centred = self._object - self._object_mean
        self._object_var = float((self._object_centred ** 2).sum())

    def estimate(self, points: np.ndarray, image_size: tuple[int, int], focal_px: float | None = None,
                 previous: HeadPose | None = None) -> HeadPose:
        """Pose of the face whose mesh points (N >= 468, x y z in pixels) are given.

        ``previous`` (this face's pose in the last frame) warm-starts PnP; ``align`` ignores it.
        """
        if points.ndim != 2 or points.shape[0] < MESH_VERTICES or points.shape[1] != 3:
            raise PoseError(f"expected mesh points of shape (468 or 478, 3), got {points.shape}")
        k = camera_matrix(image_size, focal_px)
        if self.weak_perspective and self.method == "pnp":
            k[0, 0] = k[1, 1] = k[0, 0] * WEAK_PERSPECTIVE_FOCAL_SCALE
        target = points[self._index].astype(np.float64)
        if self.method == "pnp" and previous is not None:
            rotation, translation = previous.rotation, previous.translation
        else:
            rotation, translation = self._align(target, k)
        if self.method == "pnp":
            rotation, translation = self._pnp(target[:, :2], k, rotation, translation)
        return HeadPose.from_rotation(rotation, translation, self._reprojection_error(target, k, rotation,
                                                                                         translation))

    def _align(self, target: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Similarity fit (Umeyama) of the reference to the 3D points, then turned onto the ray.

        The mesh model sees only a crop, so its 3D shape is the face as seen along the ray through
        the crop: a head facing the camera's axis but off to the side comes out turned towards the
        image centre. Turning the fitted rotation by the rotation that takes the optical axis onto
        the ray through the face undoes that. Depth follows from the fitted scale (pixels per mm).
        """
        mean = target.mean(axis=0)
        u, sig, vt = np.linalg.svd((target - mean).T @ self._object_centred)
        d = 1.0 if np.linalg.det(u @ vt) > 0 else -1.0
        rotation = u @ np.diag([1.0, 1.0, d]) @ vt
        scale = (sig[0] + sig[1] + d * sig[2]) / self._object_var     # pixels per mm at the face
        f, cx, cy = k[0, 0], k[0, 2], k[1, 2]
        ray = np.array([(mean[0] - cx) / f, (mean[1] - cy) / f, 1.0])
        if not self.weak_perspective:
            rotation = _rotation_onto(ray) @ rotation
        depth = f / scale
        centre = ray * (depth / np.linalg.norm(ray))
        return rotation, centre - rotation @ self._object_mean

    def _pnp(self, image_points: np.ndarray, k: np.ndarray, rotation: np.ndarray,
             translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rvec, _ = cv2.Rodrigues(rotation)
        tvec = translation.reshape(3, 1).astype(np.float64)
        ok, rvec, tvec = cv2.solvePnP(self._object, np.ascontiguousarray(image_points), k, None, rvec, tvec,
                                      useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            raise PoseError("PnP did not converge on these landmarks")
        return cv2.Rodrigues(rvec)[0], tvec.ravel()

    def _reprojection_error(self, target: np.ndarray, k: np.ndarray, rotation: np.ndarray,
                            translation: np.ndarray) -> float:
        cam = self._object @ rotation.T + translation
        z = np.maximum(cam[:, 2], 1e-6)
        u = k[0, 0] * cam[:, 0] / z + k[0, 2]
        v = k[1, 1] * cam[:, 1] / z + k[1, 2]
        return float(np.sqrt(((u - target[:, 0]) ** 2 + (v - target[:, 1]) ** 2).mean()))

    def visibility(self, rotation: np.ndarray, count: int | None = None) -> np.ndarray:
        """Per-vertex visibility 0..1 for a head rotation: how squarely each vertex's outward normal
        faces the camera (weak perspective: the camera looks along +z)."""
        facing = -(self.reference.normals[:count] @ rotation[2])
        return np.clip((facing - VISIBLE_FROM) / (VISIBLE_AT - VISIBLE_FROM), 0.0, 1.0)
