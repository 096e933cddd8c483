"""Convenience views of an OpenSeeFace record that are easy to get wrong by hand.

Landmark order
--------------
OpenSeeFace's 66 landmarks are the iBUG 68-point markup without the two inner mouth corners
(iBUG 60 and 64), but the mouth is stored in its own order. Derived from the reference capture
(the extreme-x mouth points, upper/lower lip, lip loops) and matching the layout of
OpenSeeFace's 3D face model, OpenSeeFace index ``i`` holds iBUG index ``OSF_TO_IBUG68[i]``:

====================  ==========================================================
OpenSeeFace 0..47     iBUG 0..47 (jaw, brows, nose, eyes: unchanged)
OpenSeeFace 48..52    iBUG 49..53  upper outer lip, image left to right
OpenSeeFace 53..57    iBUG 55..59  lower outer lip, image right to left
OpenSeeFace 58        iBUG 48      outer mouth corner on the image left (subject's right)
OpenSeeFace 59..61    iBUG 61..63  upper inner lip, image left to right
OpenSeeFace 62        iBUG 54      outer mouth corner on the image right (subject's left)
OpenSeeFace 63..65    iBUG 65..67  lower inner lip, image right to left
====================  ==========================================================

Wire indices 66 and 67 are the right and left pupil; 3D indices 68 and 69 the eyeball centres.

Frames and angles
-----------------
Everything here uses one right-handed *head frame*: x towards the subject's right, y up, z out
of the back of the head (the head is "an OpenGL camera": it looks along -z). The *camera frame*
is the head frame of a face squarely facing the camera on its optical axis: x = image left,
y = image up, z = away from the camera, along the optical axis. A head rotation maps head-frame
vectors to camera-frame vectors, and ``head_angles`` are its intrinsic yaw-pitch-roll
(``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)``, each a right-hand rotation about the positive axis), in
degrees:

* yaw > 0: the head turns to the subject's left (the nose moves to the image right);
* pitch > 0: the head tilts up (chin up);
* roll > 0: the head tilts towards the subject's left shoulder (clockwise in the image).

These signs were checked on the reference capture against landmark geometry: yaw against the
nose tip's offset from the eye centre, roll against the slope of the eye line.

How OpenSeeFace's raw pose relates to that
------------------------------------------
OpenSeeFace fits a left-handed face model (x = subject's right, y = up, z = out of the face) to
its landmarks with ``cv2.solvePnP`` on (row, column) coordinates, with the camera matrix's
principal point at (width/2, height/2) in that (row, column) order, and lands on the
depth-mirrored solution behind the camera (translation z < 0). The wire's ``quaternion`` is the
conjugate of that PnP rotation ``R`` (it encodes ``R.T``), and ``euler`` is
``cv2.RQDecomp3x3(R)``, i.e. ``R = Rz(ez) @ Ry(ey) @ Rx(ex)``. As a result:

1. a face squarely facing the camera reads ``R = R_FRONTAL = [[0,1,0],[1,0,0],[0,0,-1]]``
   (Euler (180, 0, 90)); we take the rotation relative to it;
2. the wrong principal point makes OpenSeeFace believe it sees the face along another line of
   sight; we rotate the result by the difference between the two lines of sight;
3. the depth-mirrored fit reverses perspective parallax, so a face off the optical axis picks up
   about twice its viewing angle as spurious rotation; we remove twice the viewing angle.

Steps 2 and 3 were established by simulating OpenSeeFace's fit (its face model and camera
matrix, ``cv2.solvePnP``) on an average human face (the mean of the AFLW2000-3D landmark fits in
``shared/data``) placed at many image positions: uncorrected, a frontal face read yaw from -29
to +51 degrees depending on where it was in the image; corrected, within a few degrees of a
constant. On the reference capture the correction also makes roll follow the eye-line slope
(slope 0.96 instead of 0.54). What remains is a person-dependent offset of up to ~10 degrees
(OpenSeeFace's generic face model does not fit everyone, and it adapts the model over time), so
applications should calibrate a neutral pose, e.g. ``neutral.T @ head_rotation(rec)``.

The very first frames of a track can carry OpenSeeFace's placeholder pose, the identity
quaternion with a large ``pnp_error``; :func:`has_pose` is False for those and the pose
functions raise :class:`PoseUnavailableError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .protocol import OpenSeeFaceRecord

__all__ = [
    "GazeVectors",
    "HeadAngles",
    "INNER_CORNER_OUTER_WEIGHT",
    "OSF_TO_IBUG68",
    "angles_from_rotation",
    "PoseUnavailableError",
    "R_FRONTAL",
    "from_ibug68",
    "gaze_vectors",
    "has_pose",
    "head_angles",
    "head_rotation",
    "head_rotation_to_osf",
    "osf_euler",
    "osf_quaternion",
    "osf_rotation_matrix",
    "rotation_from_angles",
    "to_ibug68",
]

#: OpenSeeFace landmark index -> iBUG 68 index (see the module docstring).
OSF_TO_IBUG68: tuple[int, ...] = (
    *range(48),
    49, 50, 51, 52, 53,
    55, 56, 57, 58, 59,
    48,
    61, 62, 63,
    54,
    65, 66, 67,
)

#: Weight of the outer corner when filling an inner mouth corner in :func:`to_ibug68`. Measured
#: on the human-labelled 68-point annotations in ``shared/data/images``: the inner corner lies a
#: median 12% of the way from the outer corner to the midpoint of its two inner-lip neighbours.
INNER_CORNER_OUTER_WEIGHT = 0.875


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


#: OpenSeeFace's PnP rotation for a face squarely facing the camera on its optical axis.
R_FRONTAL = _read_only(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]))

# Head-frame <-> OpenCV-camera-axes conversion (x and y flip); its own inverse.
_FLIP_XY = _read_only(np.diag([-1.0, -1.0, 1.0]))
_OPTICAL_AXIS = _read_only(np.array([0.0, 0.0, 1.0]))
# Flips the y axis of OpenSeeFace's 3D points (x right, y down, z back) into the head frame.
_POINTS3D_TO_HEAD = _read_only(np.array([1.0, -1.0, 1.0]))


class PoseUnavailableError(ValueError):
    """The record carries no usable head pose (failed fit, placeholder pose or no image size)."""


@dataclass(frozen=True)
class HeadAngles:
    """Head yaw, pitch and roll in degrees, in the convention of the module docstring."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class GazeVectors:
    """Unit gaze direction of each eye (read-only arrays of shape (3,))."""

    right: np.ndarray
    left: np.ndarray


# --- landmark order -------------------------------------------------------------------------


def from_ibug68(points68: np.ndarray) -> np.ndarray:
    """OpenSeeFace's 66 landmarks from an iBUG 68-point array of shape (68, ...).

    Drops the inner mouth corners (iBUG 60 and 64) and reorders the mouth; trailing dimensions
    (x/y, x/y/z, or none for per-point confidences) are kept.
    """
    points68 = np.asarray(points68)
    if points68.ndim < 1 or points68.shape[0] != 68:
        raise ValueError(f"from_ibug68 expects 68 points along the first axis, got shape {points68.shape}")
    return points68[list(OSF_TO_IBUG68)].copy()


def to_ibug68(points66: np.ndarray) -> np.ndarray:
    """The iBUG 68-point view of OpenSeeFace's 66 landmarks, shape (66, ...) -> (68, ...).

    OpenSeeFace has no inner mouth corners; each is filled as 7/8 of the outer corner plus 1/16
    of each of its two inner-lip neighbours (iBUG 60 from 48, 61, 67; 64 from 54, 63, 65), where
    human annotators typically put it. Pass ``rec.points[:66]``: the wire's 68 points end with
    the two pupils, which are not part of the iBUG markup.
    """
    points66 = np.asarray(points66)
    if points66.ndim < 1 or points66.shape[0] != 66:
        hint = ""
        if points66.shape[:1] == (68,):
            hint = " (pass rec.points[:66]; wire rows 66 and 67 are the pupils)"
        raise ValueError(
            f"to_ibug68 expects 66 points along the first axis, got shape {points66.shape}{hint}"
        )
    dtype = np.result_type(points66.dtype, np.float32)
    out = np.empty((68, *points66.shape[1:]), dtype=dtype)
    out[list(OSF_TO_IBUG68)] = points66
    side = (1.0 - INNER_CORNER_OUTER_WEIGHT) / 2.0
    out[60] = INNER_CORNER_OUTER_WEIGHT * out[48] + side * (out[61] + out[67])
    out[64] = INNER_CORNER_OUTER_WEIGHT * out[54] + side * (out[63] + out[65])
    return out


# --- OpenSeeFace's raw rotation ---------------------------------------------------------------


def _quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of the unit quaternion (x, y, z, w), column-vector convention."""
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def has_pose(rec: OpenSeeFaceRecord) -> bool:
    """Whether ``rec`` carries a real head pose rather than a failed fit or a placeholder."""
    q = rec.quaternion.astype(np.float64)
    if not rec.success or not 0.5 < float(np.linalg.norm(q)) < 1.5:
        return False
    # OpenSeeFace's identity placeholder would mean a face seen from behind; never a real fit.
    if np.allclose(np.abs(q), (0.0, 0.0, 0.0, 1.0), atol=1e-6):
        return False
    return rec.width > 0 and rec.height > 0


def _require_pose(rec: OpenSeeFaceRecord) -> None:
    if not has_pose(rec):
        raise PoseUnavailableError(
            f"face {rec.id} at time {rec.time:.3f} has no usable pose (success={rec.success}, "
            f"quaternion={rec.quaternion.tolist()}, image {rec.width}x{rec.height}); "
            "check has_pose(rec) and skip such records"
        )


def osf_rotation_matrix(rec: OpenSeeFaceRecord) -> np.ndarray:
    """OpenSeeFace's PnP rotation ``R`` (the wire quaternion encodes its transpose)."""
    q = rec.quaternion.astype(np.float64)
    norm = float(np.linalg.norm(q))
    if norm == 0.0:
        raise PoseUnavailableError(f"face {rec.id} has an all-zero quaternion (failed 3D fit)")
    return _quaternion_to_matrix(q / norm).T


def osf_quaternion(rotation: np.ndarray) -> np.ndarray:
    """The wire quaternion (x, y, z, w) OpenSeeFace writes for PnP rotation ``rotation``.

    It is the quaternion of ``rotation.T``, with the sign chosen by the branch test of
    M. Day's matrix-to-quaternion method, as OpenSeeFace does. (Plain floats: the tracker calls
    this every frame, and nine numpy scalar reads cost more than the arithmetic.)
    """
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = np.asarray(rotation, dtype=np.float64).tolist()
    if m22 < 0:
        if m00 > m11:
            t = 1 + m00 - m11 - m22
            q = [t, m01 + m10, m20 + m02, m12 - m21]
        else:
            t = 1 - m00 + m11 - m22
            q = [m01 + m10, t, m12 + m21, m20 - m02]
    elif m00 < -m11:
        t = 1 - m00 - m11 + m22
        q = [m20 + m02, m12 + m21, t, m01 - m10]
    else:
        t = 1 + m00 + m11 + m22
        q = [m12 - m21, m20 - m02, m01 - m10, t]
    scale = 0.5 / math.sqrt(t)
    return np.array([v * scale for v in q])


def osf_euler(rotation: np.ndarray) -> np.ndarray:
    """The wire Euler angles (degrees) for PnP rotation ``rotation``: ``R = Rz(z) @ Ry(y) @ Rx(x)``.

    Same values as OpenCV's ``RQDecomp3x3`` for a rotation matrix (y in [-90, 90]).
    """
    (m00, _, _), (m10, _, _), (m20, m21, m22) = np.asarray(rotation, dtype=np.float64).tolist()
    ey = -math.asin(min(max(m20, -1.0), 1.0))
    ex = math.atan2(m21, m22)
    ez = math.atan2(m10, m00)
    return np.array([math.degrees(ex), math.degrees(ey), math.degrees(ez)])


# --- head pose -------------------------------------------------------------------------------


def _rotation_between(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Rotation about ``a x b`` by ``scale`` times the angle from ``a`` to ``b``."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    sin = float(np.linalg.norm(axis))
    if sin < 1e-12:
        return np.eye(3)
    axis /= sin
    angle = scale * np.arctan2(sin, float(a @ b))
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _lines_of_sight(nose_xy: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Directions (OpenCV camera axes) to the nose tip: as OpenSeeFace assumes it, and true.

    OpenSeeFace's focal length is the image width; its principal point, applied to (row, col),
    lands at image (x, y) = (height/2, width/2) instead of (width/2, height/2).
    """
    if not (width > 0 and height > 0):
        raise PoseUnavailableError(f"image size {width}x{height} is needed to interpret the pose")
    x, y = float(nose_xy[0]), float(nose_xy[1])
    assumed = np.array([(x - height / 2) / width, (y - width / 2) / width, 1.0])
    true = np.array([(x - width / 2) / width, (y - height / 2) / width, 1.0])
    return assumed, true


def _camera_corrections(nose_xy: np.ndarray, width: float, height: float) -> np.ndarray:
    """Rotation (OpenCV camera axes) undoing OpenSeeFace's principal point and parallax errors."""
    assumed, true = _lines_of_sight(nose_xy, width, height)
    return _rotation_between(_OPTICAL_AXIS, true, 2.0) @ _rotation_between(true, assumed)


#: What a head rotation is measured against: the optical axis, or the line from the camera to the nose tip.
Reference = Literal["camera", "line_of_sight"]


def _to_head_frame(rotation_cv: np.ndarray) -> np.ndarray:
    return _FLIP_XY @ rotation_cv @ _FLIP_XY


def head_rotation(rec: OpenSeeFaceRecord, relative_to: Reference = "camera") -> np.ndarray:
    """The head rotation (head frame -> camera frame, see the module docstring) of ``rec``.

    ``relative_to="line_of_sight"`` measures it against the line from the camera to the nose
    tip instead of the optical axis, so a face looking straight into the camera reads as the
    identity wherever it is in the image.
    """
    _require_pose(rec)
    nose = rec.points[30].astype(np.float64)
    rotation_cv = _camera_corrections(nose, rec.width, rec.height) @ R_FRONTAL.T @ osf_rotation_matrix(rec)
    if relative_to == "line_of_sight":
        _, true = _lines_of_sight(nose, rec.width, rec.height)
        rotation_cv = _rotation_between(true, _OPTICAL_AXIS) @ rotation_cv
    elif relative_to != "camera":
        raise ValueError(f"relative_to must be 'camera' or 'line_of_sight', got {relative_to!r}")
    return _to_head_frame(rotation_cv)


def head_rotation_to_osf(
    rotation: np.ndarray, nose_xy: np.ndarray, image_size: tuple[float, float]
) -> np.ndarray:
    """OpenSeeFace's PnP rotation for a head rotation (camera-relative), the inverse of :func:`head_rotation`.

    ``nose_xy`` is the nose tip (landmark 30) in image pixels and ``image_size`` is
    (width, height). Feed the result to :func:`osf_quaternion` and :func:`osf_euler` to fill a
    record the way OpenSeeFace would.
    """
    width, height = image_size
    rotation_cv = _to_head_frame(np.asarray(rotation, dtype=np.float64))
    correction = _camera_corrections(np.asarray(nose_xy, dtype=np.float64), width, height)
    return R_FRONTAL @ correction.T @ rotation_cv


def rot_x(a: float) -> np.ndarray:
    """Right-handed rotation by ``a`` radians about x (the tracker uses these too)."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_from_angles(angles: HeadAngles) -> np.ndarray:
    """The head rotation ``Ry(yaw) @ Rx(pitch) @ Rz(roll)`` for ``angles`` (degrees)."""
    yaw, pitch, roll = np.radians([angles.yaw, angles.pitch, angles.roll])
    return rot_y(yaw) @ rot_x(pitch) @ rot_z(roll)


def angles_from_rotation(rotation: np.ndarray) -> HeadAngles:
    """Yaw, pitch and roll (degrees) of a head rotation; pitch is in [-90, 90]."""
    m = np.asarray(rotation, dtype=np.float64)
    yaw = np.arctan2(m[0, 2], m[2, 2])
    pitch = np.arcsin(np.clip(-m[1, 2], -1.0, 1.0))
    roll = np.arctan2(m[1, 0], m[1, 1])
    return HeadAngles(*(float(v) for v in np.degrees([yaw, pitch, roll])))


def head_angles(rec: OpenSeeFaceRecord, relative_to: Reference = "camera") -> HeadAngles:
    """Yaw, pitch and roll of the head in degrees (signs in the module docstring)."""
    return angles_from_rotation(head_rotation(rec, relative_to))


def gaze_vectors(rec: OpenSeeFaceRecord, frame: Literal["head", "camera"] = "head") -> GazeVectors:
    """Unit vector per eye from the eyeball centre (3D points 68/69) through the pupil (66/67).

    ``frame="head"`` gives it in the head frame (looking straight ahead is (0, 0, -1));
    ``frame="camera"`` rotates it by :func:`head_rotation` into the camera frame, where looking
    into a camera on the optical axis is again about (0, 0, -1).
    """
    if frame not in ("head", "camera"):
        raise ValueError(f"frame must be 'head' or 'camera', got {frame!r}")
    pts = rec.points3d.astype(np.float64) * _POINTS3D_TO_HEAD
    rotation = head_rotation(rec) if frame == "camera" else np.eye(3)
    out = []
    for pupil, centre in ((66, 68), (67, 69)):
        direction = pts[pupil] - pts[centre]
        norm = float(np.linalg.norm(direction))
        if norm == 0.0:
            raise PoseUnavailableError(f"face {rec.id} has no 3D eye points (pupil equals eyeball centre)")
        out.append(_read_only(rotation @ (direction / norm)))
    return GazeVectors(right=out[0], left=out[1])
