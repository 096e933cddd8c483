"""OpenSeeFace (OSF) record conventions: point order, head model, pose values and 3D point encoding.

Facts from OSF's public source (tracker.py / facetracker.py) and checked value for value against a
captured OSF run (``shared/data/openseeface_reference``, see tests/test_openseeface_conventions.py).

Point order
    OSF sends 66 landmarks plus two pupils. Its 66 are the iBUG 68 markup without the inner mouth corners
    (iBUG 60 and 64), with the mouth in OSF's own order; see ``OSF66_FROM_IBUG68``. The pupils follow as
    point 66 = the subject's right eye (image-left for a frontal face, iBUG 36-41) and 67 = the left one.
    2D points go on the wire as (x, y) image pixels.

Confidence
    Per point, OSF sends the peak value of the landmark model's heat map (about 0..1; it can slightly exceed
    1 - up to 1.08 in the reference run). The pupils' confidence is the gaze model's heat-map peak.

OSF's pose fit (why its angles read near (180, 0, 90) for a frontal face)
    OSF runs ``cv2.solvePnP`` (iterative, starting from the previous frame's pose) with its 3D head model
    ``OSF_FACE_MODEL`` (x = subject's right, y = up, z = out of the face, nose tip at the origin) on
    14 landmarks ``OSF_CONTOUR_POINTS`` given as (row, column) - x and y swapped - with the camera
    ``osf_camera_matrix`` = [[w, 0, w/2], [0, w, h/2], [0, 0, 1]]. The swap is a mirror and the model is
    left-handed, so the fit describes a depth-inverted ("hollow") face, behind the camera (translation z < 0),
    seen through a camera whose principal point is (h/2, w/2) in (x, y) pixels. From the fitted ``rvec``:
    ``R' = Rodrigues(rvec)``, quaternion = ``osf_quaternion(R')`` (the xyzw quaternion of R' transposed) and
    Euler = ``cv2.RQDecomp3x3(R')[0]`` in degrees; translation = ``tvec``.

Our pose convention (input of ``osf_pose_from_rotation``)
    Camera frame: OpenCV (x right, y down, z forward along the optical axis), pixels ``K @ X``.
    Head frame: origin at the nose tip (iBUG 30), x towards the subject's left (image-right for a frontal
    face), y towards the chin, z into the head (away from the camera for a frontal face); right-handed.
    ``X_cam = R_cam @ X_head + t_cam``; a face looking straight into the camera has ``R_cam = I``.
    Lengths are in OSF head-model units (OSF_FACE_MODEL expressed in this frame is ``-OSF_FACE_MODEL``;
    its outer eye corners are 0.632 units apart).
    With S = swap of x and y and D = diag(1, 1, -1) (depth mirror):
    ``R' = S @ D @ R_cam`` and ``t' = -S @ t_cam`` hold exactly under weak perspective for a face on the
    optical axis (``emulate_osf_camera=False``). OSF's real numbers also carry perspective effects of its
    hollow fit and of its misplaced principal point (about 17 degrees for an off-centre face), so by default
    ``osf_pose_from_rotation`` emulates them (steps in its docstring); on the reference run this predicts
    OSF's rotation within 2.9 degrees on average (4.3 max) and its translation within 0.03 (median) of ~8.5.
    Note that RQDecomp3x3 is discontinuous around OSF's frontal pose: (+-180, 0, 90) and (0, +-180, -90) are
    the same rotation. OSF has the same jumps; the quaternion is continuous.

3D points (70 x 3, wire convention)
    OSF back-projects each 2D landmark to the depth its posed model point has, takes it back into the model
    frame, then de-rotates (nose bridge 30->27 made vertical) and rescales (nose height, face and eye widths
    made equal to the model's) the points; points 66/67 are the pupils lifted the same way, 68/69 the eyeball
    centres (midpoint of the eye corners pushed 0.385 x corner distance into the head). On the wire each
    point is (x, -y, -z): x = subject's right, y = down, z = into the head, nose tip at x = y = 0.
    On frames where ``osf_updates_features`` is false OSF sends the lifted points without that alignment.

Features and eye openness
    The 14 features are computed from these aligned points (``features.FeatureExtractor``), not from the 2D
    landmarks. OSF only updates them when the face confidence is >= 0.4 and the PnP error <= 300
    (``osf_updates_features``); otherwise it resends the last values (zeros, and eyes open = 1, while a
    face has none yet). The "eye open" fields are derived from the features:
    open = 1 - clip(-eye_feature, 0, 1) (``osf_eye_open``), right eye first.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os

import cv2
import numpy as np

from facewire.client.views import OSF_TO_IBUG68, osf_euler, osf_quaternion

from .features import Features

logger = logging.getLogger(__name__)

# OpenSeeFace's 66-point order is defined once, in the client: osf66 = ibug68[OSF66_FROM_IBUG68].
OSF66_FROM_IBUG68: np.ndarray = np.asarray(OSF_TO_IBUG68, dtype=np.intp)

OSF_CONTOUR_POINTS: tuple[int, ...] = (0, 1, 8, 15, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35)
"""OSF points used for its PnP fit."""

OSF_MIN_FEATURE_CONFIDENCE = 0.4
OSF_MAX_FEATURE_PNP_ERROR = 300.0
OSF_EYEBALL_DEPTH_FACTOR = 0.385
"""Eyeball centre depth behind the eye-corner midpoint, relative to the eye-corner distance."""

# OSF's head model, stored as its subject's-right half (x >= 0) plus the midline; the other half is the
# mirror image (x negated). Row i of the full model is OSF point i; 66/67 = pupils, 68/69 = eyeball centres.
_MODEL_HALF: dict[int, tuple[float, float, float]] = {
    0: (0.4551769692672, 0.300895790030204, -0.764429433974752),
    1: (0.448998827123556, 0.166995837790733, -0.765143004071253),
    2: (0.437431554952677, 0.022655479179981, -0.739267175112735),
    3: (0.415033422928434, -0.088941454648772, -0.747947437846473),
    4: (0.389123587370091, -0.232380029794684, -0.704788385327458),
    5: (0.334630113904382, -0.361265387599081, -0.615587579236862),
    6: (0.263725112132858, -0.460009725616771, -0.491479221041573),
    7: (0.16241621322721, -0.558037146073869, -0.339445180872282),
    8: (0.0, -0.621079019321682, -0.287294770748887),
    17: (0.385529968662985, 0.402800553948697, -0.310031082540741),
    18: (0.322196658344302, 0.464439136821772, -0.250558059367669),
    19: (0.25409760441282, 0.46420381416882, -0.208177722146526),
    20: (0.186875436782135, 0.44706071961879, -0.145299823706503),
    21: (0.120880983543622, 0.423566314072968, -0.110757158774771),
    27: (0.0, 0.293332603215811, -0.137582088779393),
    28: (0.0, 0.194828701837823, -0.069158109325951),
    29: (0.0, 0.103844017393155, -0.009151819844964),
    30: (0.0, 0.0, 0.0),
    31: (0.080626352317973, -0.041276068128093, -0.134161035564826),
    32: (0.046439347377934, -0.057675223874769, -0.102990627164664),
    33: (0.0, -0.068753126205604, -0.090545348482397),
    36: (0.315905195966084, 0.298337502555443, -0.285107407636464),
    37: (0.275252345439353, 0.312721904921771, -0.244558251170671),
    38: (0.176394511553111, 0.311907184376107, -0.219205360345231),
    39: (0.131229723798772, 0.284447361805627, -0.234239149487417),
    40: (0.184124948330084, 0.260179585304867, -0.226590776513707),
    41: (0.279433549294448, 0.267363071770222, -0.248441437111633),
    48: (0.121155252430729, -0.208988660580347, -0.160606287940521),
    49: (0.041356305910044, -0.194484199722098, -0.096159882202821),
    50: (0.0, -0.205180167345702, -0.083299217789729),
    55: (0.0, -0.343742581679188, -0.113925986025684),
    56: (0.064137791831655, -0.325377847425684, -0.158924039726607),
    57: (0.132325402795928, -0.290857984604968, -0.187067868218105),
    58: (0.181481567104525, -0.243239316141725, -0.231284988892766),
    59: (0.083999507750469, -0.239717753728704, -0.155256465640701),
    60: (0.0, -0.256058040176369, -0.0950619498899),
    64: (0.0, -0.264945854681568, -0.112349967428413),
    65: (0.074036069749345, -0.250689938345682, -0.177346470406188),
    66: (0.257990002632141, 0.276080012321472, -0.219998998939991),
    68: (0.257990002632141, 0.276080012321472, -0.324570998549461),
}
# (subject's-right point, its mirror on the subject's left)
_MODEL_MIRRORS: tuple[tuple[int, int], ...] = (
    (0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9),
    (17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (31, 35), (32, 34),
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
    (48, 52), (49, 51), (57, 53), (56, 54), (58, 62), (59, 61), (65, 63), (66, 67), (68, 69),
)  # fmt: skip


def _build_face_model() -> np.ndarray:
    model = np.full((70, 3), np.nan)
    for index, xyz in _MODEL_HALF.items():
        model[index] = xyz
    for right, left in _MODEL_MIRRORS:
        model[left] = model[right] * np.array([-1.0, 1.0, 1.0])
    if np.isnan(model).any():
        raise RuntimeError("OSF face model table is incomplete")
    model = model.astype(np.float32)
    model.setflags(write=False)
    return model


OSF_FACE_MODEL: np.ndarray = _build_face_model()
"""OSF's 70-point head model (float32, OSF frame: x = subject's right, y = up, z = out of the face)."""


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


# Per-frame constants, computed once (the record path runs at camera rate and numpy's per-call overhead
# dominates its small arrays).
_CONTOUR_INDEX = _read_only(np.array(OSF_CONTOUR_POINTS, np.intp))
_CONTOUR_MODEL = _read_only(OSF_FACE_MODEL[_CONTOUR_INDEX])
_FACE_MODEL_64 = _read_only(OSF_FACE_MODEL.astype(np.float64))
_NO_DISTORTION = _read_only(np.zeros((4, 1)))

_SWAP_XY = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
_DEPTH_MIRROR = np.diag([1.0, 1.0, -1.0])


class OsfConventionError(ValueError):
    """Input that cannot be expressed in OSF's conventions (wrong shape, face behind the camera, ...)."""


@dataclasses.dataclass(frozen=True)
class OsfPose:
    """A head pose as OSF reports it.

    ``rvec``/``tvec``: OSF's PnP result (camera with swapped axes, see the module docstring);
    ``quaternion`` (x, y, z, w), ``euler`` (degrees) and ``translation`` are the record's fields.
    """

    rvec: tuple[float, float, float]
    tvec: tuple[float, float, float]
    quaternion: tuple[float, float, float, float]
    euler: tuple[float, float, float]

    @property
    def translation(self) -> tuple[float, float, float]:
        return self.tvec

    @property
    def rotation_matrix(self) -> np.ndarray:
        """``Rodrigues(rvec)`` as a new (writable) 3x3 array."""
        return self._rotation.copy()

    # The pose is immutable, so values derived from it are computed once (on first use) and cached on the
    # instance: a frame's PnP error and 3D points both need them.

    @functools.cached_property
    def _rotation(self) -> np.ndarray:
        return _read_only(cv2.Rodrigues(np.array(self.rvec, np.float64).reshape(3, 1))[0])

    @functools.cached_property
    def _translation(self) -> np.ndarray:
        return _read_only(np.array(self.tvec, np.float64))

    def _model_projection(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """``_project_model`` for this pose (read-only), cached for the last image size asked for."""
        cached = self.__dict__.get("_projection")
        if cached is None or cached[0] != (width, height):
            cached = ((width, height), _project_model(self, width, height))
            self.__dict__["_projection"] = cached  # bypasses the frozen __setattr__, like cached_property
        return cached[1]


def ibug68_to_osf66(points68: np.ndarray) -> np.ndarray:
    """Reorder (68, ...) iBUG landmarks (or per-point values) into OSF's 66-point order."""
    arr = np.asarray(points68)
    if arr.shape[:1] != (68,):
        raise OsfConventionError(f"expected 68 iBUG points along the first axis, got shape {arr.shape}")
    return arr[OSF66_FROM_IBUG68]


def osf_camera_matrix(width: int, height: int) -> np.ndarray:
    """OSF's camera matrix (float32). OSF applies it to (row, column) points, not (x, y)."""
    return np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float32)


@dataclasses.dataclass(frozen=True)
class _OsfCamera:
    """``osf_camera_matrix`` in the forms the per-frame functions need (read-only arrays)."""

    matrix: np.ndarray  # float32, as OSF passes it to solvePnP
    matrix64: np.ndarray  # the same in float64
    inverse: np.ndarray  # float64 inverse, for back-projection


@functools.lru_cache(maxsize=8)
def _osf_camera(width: int, height: int) -> _OsfCamera:
    """Cached per image size: building and inverting the matrix every frame costs more than the PnP setup."""
    matrix = osf_camera_matrix(width, height)
    matrix64 = matrix.astype(np.float64)
    return _OsfCamera(_read_only(matrix), _read_only(matrix64), _read_only(np.linalg.inv(matrix64)))


def osf_assumed_camera(width: int, height: int) -> np.ndarray:
    """The (x, y) pinhole camera OSF's numbers imply for the real scene: focal = width, centred.

    Use it as ``camera_matrix`` when our own pose was estimated without calibration.
    """
    return np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float64)


def _osf_effective_camera(width: int, height: int) -> np.ndarray:
    """OSF's camera expressed on (x, y) pixels: focal = width, principal point (h/2, w/2)."""
    return np.array([[width, 0, height / 2], [0, width, width / 2], [0, 0, 1]], np.float64)


def osf_pose_from_rvec(rvec: np.ndarray, tvec: np.ndarray) -> OsfPose:
    """Fill OSF's pose fields from its PnP result."""
    r = np.asarray(rvec, np.float64).reshape(3)
    t = np.asarray(tvec, np.float64).reshape(3)
    rotation = cv2.Rodrigues(r.reshape(3, 1))[0]
    pose = OsfPose(
        rvec=tuple(r.tolist()),
        tvec=tuple(t.tolist()),
        quaternion=tuple(osf_quaternion(rotation).astype(np.float32).tolist()),
        euler=tuple(osf_euler(rotation).tolist()),
    )
    # Prime OsfPose's caches: Rodrigues(rvec) is at hand, and so is the translation.
    pose.__dict__["_rotation"] = _read_only(rotation)
    pose.__dict__["_translation"] = _read_only(t.copy())
    return pose


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction a to direction b."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    c = float(a @ b)
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def _hollow_pivot() -> np.ndarray:
    """Head-frame point through which the depth mirror passes (our head frame, see module docstring).

    The fit's image scale is set mostly by the contour points far from its centre, so the mirror plane is
    put at their depth: contour centroid in x/y, depth weighted by squared distance from that centroid.
    """
    head = -OSF_FACE_MODEL[list(OSF_CONTOUR_POINTS)].astype(np.float64)
    centre = head[:, :2].mean(axis=0)
    weights = np.sum((head[:, :2] - centre) ** 2, axis=1)
    return np.array([centre[0], centre[1], float(weights @ head[:, 2] / weights.sum())])


_HOLLOW_PIVOT = _hollow_pivot()


def _check_pose_inputs(rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rotation, np.float64)
    t = np.asarray(translation, np.float64).reshape(-1)
    if r.shape != (3, 3) or t.shape != (3,):
        raise OsfConventionError(f"expected a 3x3 rotation and a 3-vector, got {r.shape} and {t.shape}")
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-5) or np.linalg.det(r) < 0:
        raise OsfConventionError("rotation is not a proper rotation matrix (orthonormal with det +1)")
    return r, t


def _camera_or_default(camera_matrix: np.ndarray | None, width: int, height: int) -> np.ndarray:
    if camera_matrix is None:
        return osf_assumed_camera(width, height)
    k = np.asarray(camera_matrix, np.float64)
    if k.shape != (3, 3):
        raise OsfConventionError(f"camera_matrix must be 3x3, got shape {k.shape}")
    return k


def _mirror_and_reaim(
    rotation: np.ndarray, t: np.ndarray, camera: np.ndarray, osf_camera: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a real pose: (line-of-sight mirror D_v, re-aim rotation Q, hollow nose-tip position)."""
    pivot = rotation @ _HOLLOW_PIVOT + t
    v = pivot / np.linalg.norm(pivot)
    mirror = np.eye(3) - 2.0 * np.outer(v, v)
    t_hollow = t + (np.eye(3) - mirror) @ rotation @ _HOLLOW_PIVOT
    reaim = _rotation_between(pivot, np.linalg.inv(osf_camera) @ (camera @ pivot))
    return mirror, reaim, t_hollow


def osf_pose_from_rotation(
    R_cam: np.ndarray,
    t_cam: np.ndarray,
    image_size: tuple[int, int],
    camera_matrix: np.ndarray | None = None,
    emulate_osf_camera: bool = True,
) -> OsfPose:
    """Convert a head pose in our convention (module docstring) into OSF's quaternion/Euler/translation.

    ``image_size`` is (width, height). ``camera_matrix`` is the (x, y) camera our pose refers to (default:
    ``osf_assumed_camera``). With ``emulate_osf_camera`` (default) the result approximates what OSF's own
    fit reports for the same face, perspective quirks included:

    1. depth mirror about the plane through the head's pivot (``_HOLLOW_PIVOT``) perpendicular to the line
       of sight v to it: ``R_h = D_v R_cam`` with ``D_v = I - 2 v v^T``, nose tip ``t_h = t + (I - D_v) R p``;
    2. re-aim: turn the pose by Q, the rotation from v to the ray OSF's camera assigns to the pivot's pixel
       (OSF's principal point is (h/2, w/2), focal = width), and put the nose tip on the ray of its own
       pixel at depth ``t_h,z * width / fx``;
    3. swap axes: ``R' = S Q R_h``, ``t' = -S t_osf``.

    Without emulation, the plain axis convention ``R' = S D R_cam``, ``t' = -S t_cam`` is used (exact under
    weak perspective for a face on the optical axis). ``standard_pose_from_osf`` inverts both variants.
    """
    rotation, t = _check_pose_inputs(R_cam, t_cam)
    if t[2] <= 0:
        raise OsfConventionError(f"the head must be in front of the camera (t_cam z > 0), got z = {t[2]}")
    width, height = image_size
    if emulate_osf_camera:
        camera = _camera_or_default(camera_matrix, width, height)
        osf_camera = _osf_effective_camera(width, height)
        mirror, reaim, t_hollow = _mirror_and_reaim(rotation, t, camera, osf_camera)
        pixel = camera @ t_hollow
        depth = t_hollow[2] * width / camera[0, 0]
        t_osf = depth * (np.linalg.inv(osf_camera) @ (pixel / pixel[2]))
        r_osf = reaim @ mirror @ rotation
    else:
        t_osf = t
        r_osf = _DEPTH_MIRROR @ rotation
    return osf_pose_from_rvec(cv2.Rodrigues(_SWAP_XY @ r_osf)[0], -_SWAP_XY @ t_osf)


def standard_pose_from_osf(
    rvec: np.ndarray,
    tvec: np.ndarray,
    image_size: tuple[int, int],
    camera_matrix: np.ndarray | None = None,
    emulate_osf_camera: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``osf_pose_from_rotation``: OSF's (rvec, tvec) -> (R_cam, t_cam) in our convention."""
    r_osf = _SWAP_XY @ cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))[0]
    t_osf = -_SWAP_XY @ np.asarray(tvec, np.float64).reshape(3)
    if t_osf[2] <= 0:
        raise OsfConventionError(f"OSF translation z must be negative (face fitted behind the camera), got {tvec}")
    if not emulate_osf_camera:
        return _DEPTH_MIRROR @ r_osf, t_osf
    width, height = image_size
    camera = _camera_or_default(camera_matrix, width, height)
    osf_camera = _osf_effective_camera(width, height)
    pixel = osf_camera @ t_osf
    t_hollow = (t_osf[2] * camera[0, 0] / width) * (np.linalg.inv(camera) @ (pixel / pixel[2]))
    # The mirror and re-aim depend (weakly) on the unknown real pose: solve by fixed-point iteration.
    rotation, t = _DEPTH_MIRROR @ r_osf, t_hollow
    for _ in range(100):
        mirror, reaim, _ = _mirror_and_reaim(rotation, t, camera, osf_camera)
        new_rotation = mirror @ reaim.T @ r_osf
        new_t = t_hollow - (np.eye(3) - mirror) @ new_rotation @ _HOLLOW_PIVOT
        change = np.abs(new_rotation - rotation).max() + np.abs(new_t - t).max()
        rotation, t = new_rotation, new_t
        if change < 1e-13:
            break
    else:
        logger.warning("standard_pose_from_osf: fixed-point iteration did not fully converge (change %.3g)", change)
    return rotation, t


def _check_points66(points66: np.ndarray) -> np.ndarray:
    pts = np.asarray(points66, np.float64)
    if pts.ndim != 2 or pts.shape[0] < 66 or pts.shape[1] < 2:
        raise OsfConventionError(
            f"expected (66, 2) image points in OSF order, got shape {pts.shape}; reorder iBUG-68 landmarks "
            "with ibug68_to_osf66"
        )
    return pts[:66, :2]


def solve_osf_pose(
    points66: np.ndarray, image_size: tuple[int, int], initial: OsfPose | None = None
) -> OsfPose:
    """Run OSF's own PnP fit on (66, 2) image points (x, y) in OSF order.

    ``initial`` is the starting pose: OSF uses the previous frame's result, and zeros for a new face (its
    first frames are then usually a poor fit; ``osf_pose_from_rotation`` of our own pose is a better start).
    """
    pts = _check_points66(points66)
    width, height = image_size
    rows_cols = np.ascontiguousarray(pts[_CONTOUR_INDEX, ::-1], np.float32)
    if initial is None:
        rvec0 = np.zeros((3, 1))
        tvec0 = np.zeros((3, 1))
    else:  # fresh arrays: solvePnP refines them in place
        rvec0 = np.array(initial.rvec, np.float64).reshape(3, 1)
        tvec0 = np.array(initial.tvec, np.float64).reshape(3, 1)
    ok, rvec, tvec = cv2.solvePnP(
        _CONTOUR_MODEL,
        rows_cols,
        _osf_camera(width, height).matrix,
        _NO_DISTORTION,
        rvec=rvec0,
        tvec=tvec0,
        useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        raise OsfConventionError("cv2.solvePnP failed on these points; OSF would send a zero pose here")
    return osf_pose_from_rvec(rvec, tvec)


def osf_model_points_image(pose: OsfPose, image_size: tuple[int, int]) -> np.ndarray:
    """OSF's 3D face model placed by ``pose``, projected to (x, y) image pixels: what ``-P`` draws."""
    homogeneous, depth = pose._model_projection(*image_size)
    return (homogeneous[:, :2] / depth[:, None])[:, ::-1]


def _project_model(pose: OsfPose, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """OSF's 70 model points in its swapped camera: (70, 3) homogeneous image coordinates (row, col and
    depth, each times the depth) and (70,) depths, where a zero depth is replaced by 1e-6 as OSF does.

    The (row, col) projection is ``homogeneous[:, :2] / depth[:, None]``. Use ``pose._model_projection``,
    which caches the result: the PnP error and the 3D points of a frame both need it.
    """
    cam = _FACE_MODEL_64 @ pose._rotation.T + pose._translation
    homogeneous = cam @ _osf_camera(width, height).matrix64.T
    depth = homogeneous[:, 2].copy()
    if 0.0 in depth:
        depth[depth == 0] = 1e-6
    return _read_only(homogeneous), _read_only(depth)


def osf_pnp_error(points66: np.ndarray, pose: OsfPose, image_size: tuple[int, int]) -> float:
    """OSF's "PnP error": RMS-like pixel residual of jaw points 0-16 and the nose tip.

    OSF sums the squared residuals of those 18 points but divides by 2 x 14 (its number of fitted points).
    """
    pts = _check_points66(points66)
    homogeneous, depth = pose._model_projection(*image_size)
    # Only points 0..30 are needed: the jaw (0-16) and the nose tip (30).
    residual = pts[:31, ::-1] - homogeneous[:31, :2] / depth[:31, None]
    total = float(np.add.reduce(residual[0:17] ** 2, axis=None) + np.add.reduce(residual[30] ** 2))
    if math.isnan(total):
        return 9999999.0
    return math.sqrt(total / (2.0 * len(OSF_CONTOUR_POINTS)))


def osf_updates_features(confidence: float, pnp_error: float) -> bool:
    """Whether OSF refreshes features, eye openness and 3D-point alignment for this frame."""
    return confidence >= OSF_MIN_FEATURE_CONFIDENCE and pnp_error <= OSF_MAX_FEATURE_PNP_ERROR


# The model's nose segments 27-28, 28-29, 29-30 and its face widths 0-16, 36-39 (right eye), 42-45 (left
# eye), as float32 scalars: OSF compares the lifted face with them in float32.
_MODEL_NOSE_HEIGHTS = tuple(OSF_FACE_MODEL[27:30, 1] - OSF_FACE_MODEL[28:31, 1])
_MODEL_WIDTHS = tuple(np.abs(OSF_FACE_MODEL[[0, 36, 42], 0] - OSF_FACE_MODEL[[16, 39, 45], 0]))
_WIDTH_POINTS = _read_only(np.array([0, 16, 36, 39, 42, 45], np.intp))


def _derotate(pts: np.ndarray) -> tuple[np.float32, np.float32]:
    """OSF's alignment of lifted points, first part: move the nose tip to the origin and make the nose
    bridge vertical (in place on a float32 (70, 3) array). Returns OSF's divisors for x and y.

    The divisors are means of three ratios to the model's face widths and nose heights, computed with
    numpy float32 scalars in the order np.mean adds them (the same numbers, with far fewer calls).
    """
    centred = pts[:, 0:2] - pts[30, 0:2]
    bridge_x, bridge_y = centred[27].tolist()
    alpha = (math.atan2(bridge_y, bridge_x) % (2.0 * math.pi)) - math.pi / 2.0
    c, s = math.cos(alpha), math.sin(alpha)
    pts[:, 0:2] = centred @ np.array([[c, -s], [s, c]])
    x0, x16, x36, x39, x42, x45 = pts[_WIDTH_POINTS, 0]
    w0, w1, w2 = _MODEL_WIDTHS
    y27, y28, y29, y30 = pts[27:31, 1]
    h0, h1, h2 = _MODEL_NOSE_HEIGHTS
    return (
        (abs(x0 - x16) / w0 + abs(x36 - x39) / w1 + abs(x42 - x45) / w2) / 3,
        ((y27 - y28) / h0 + (y28 - y29) / h1 + (y29 - y30) / h2) / 3,
    )


# Eye corners, subject's right eye first (the pupil order): outer, inner, outer, inner; and the pupil
# (point 66 or 67) of the eye each corner belongs to.
_EYE_CORNERS = _read_only(np.array([36, 39, 42, 45], np.intp))
_PUPIL_OF_CORNER = _read_only(np.array([66, 66, 67, 67], np.intp))


def _rays(rows_cols: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Homogeneous (row, col, 1) image points scaled by their depth: the input of back-projection."""
    rays = np.empty((len(rows_cols), 3))
    rays[:, 0:2] = rows_cols * depth[:, None]
    rays[:, 2] = depth
    return rays


def osf_points3d(
    points66: np.ndarray,
    pupils: np.ndarray,
    pose: OsfPose,
    image_size: tuple[int, int],
    normalize: bool = True,
) -> np.ndarray:
    """OSF's 70 3D points (float32, wire convention: x = subject's right, y = down, z = into the head).

    ``points66``: (66, 2) image points (x, y) in OSF order; ``pupils``: (2, 2) image points of the
    subject's right then left pupil; ``pose``: OSF's pose for this frame (``solve_osf_pose`` or
    ``osf_pose_from_rotation``). ``normalize=False`` reproduces what OSF sends on frames where
    ``osf_updates_features`` is false (lifted but not aligned). The result, when normalised, is the input of
    ``features.FeatureExtractor.update``.
    """
    pts = _check_points66(points66)
    eyes = np.asarray(pupils, np.float64)
    if eyes.shape != (2, 2):
        raise OsfConventionError(f"expected (2, 2) pupil points (right, left), got shape {eyes.shape}")
    width, height = image_size
    rows_cols = np.concatenate([pts, eyes])[:, ::-1]
    rotation = pose._rotation
    translation = pose._translation
    inv_camera_t = _osf_camera(width, height).inverse.T
    _, depth = pose._model_projection(width, height)

    # Lifting (back-projection) keeps OSF's array shapes: BLAS may compute a (1, 3) @ (3, 3) product
    # differently from the rows of a (2, 3) @ (3, 3) one (in the last bit), so each pupil stays a separate
    # product, and so do the vector norms. Only elementwise steps are batched.
    def lift(rays: np.ndarray) -> np.ndarray:
        return (rays @ inv_camera_t - translation) @ rotation  # rotation^-1 == rotation^T

    out = np.zeros((70, 3), np.float32)
    out[0:66] = lift(_rays(rows_cols[0:66], depth[0:66]))

    corners = out[_EYE_CORNERS]  # lifted (float32): right eye outer, inner, left eye outer, inner
    outer, inner = corners[0::2], corners[1::2]

    # Pupils: lifted to the depth of a point between the eye corners, weighted by the pupil's distance to
    # each corner (i.e. towards the farther corner), as OSF does. sqrt(v . v) is what np.linalg.norm
    # computes for a vector, without its overhead.
    to_corners = rows_cols[_PUPIL_OF_CORNER] - rows_cols[_EYE_CORNERS]
    distances = [math.sqrt(v.dot(v)) for v in to_corners]
    corner_xyz = corners.tolist()
    for k, (row, col) in enumerate(rows_cols[66:68].tolist()):
        d_outer, d_inner = distances[2 * k], distances[2 * k + 1]
        total = d_outer + d_inner  # 0 only for a pupil on both corners: 0 / 0, a point OSF cannot lift
        anchor = [(o * d_outer + i * d_inner) / total if total else math.nan
                  for o, i in zip(corner_xyz[2 * k], corner_xyz[2 * k + 1])]
        z = float((rotation @ np.array(anchor))[2]) + pose.tvec[2]
        out[66 + k] = lift(np.array([[row * z, col * z, z]]))[0]

    # Eyeball centres: the eye-corner midpoint pushed into the head (float32 arithmetic, as OSF's).
    widths = outer - inner
    centres = (outer + inner) / 2.0
    centres[:, 2] -= OSF_EYEBALL_DEPTH_FACTOR * np.sqrt(np.array([v.dot(v) for v in widths], np.float32))
    out[68:70] = centres

    # OSF zeroes points it could not lift. (A float64 sum of float32 values cannot overflow: it is finite
    # exactly when every value is.)
    if not math.isfinite(np.add.reduce(out, axis=None, dtype=np.float64)):
        out[~np.isfinite(out).all(axis=1)] = 0.0
    if normalize:
        # OSF's alignment, then the wire convention (y and z flipped), in one division: x / sx, -(y / sy)
        # and -z are the same numbers either way.
        scale_x, scale_y = _derotate(out)
        out /= np.array([scale_x, -scale_y, -1.0], np.float32)
    else:
        out[:, 1:3] *= -1.0
    return out


def osf_eye_open(features: Features) -> tuple[float, float]:
    """The record's (right eye open, left eye open) values, derived by OSF from the eye features."""
    right = 1.0 - min(max(0.0, -features.eye_r), 1.0)
    left = 1.0 - min(max(0.0, -features.eye_l), 1.0)
    return right, left


class OsfLogFormatError(ValueError):
    """A file that is not OSF's --log-data CSV (or a row with the wrong number of values)."""


@dataclasses.dataclass(frozen=True)
class OsfLog:
    """OSF's --log-data CSV as arrays, one row per logged face and frame.

    Note OSF's header names only 66 landmarks and 66 3D points, but each row holds 68 landmarks (with the
    two pupils) and 70 3D points (with the eyeball centres); columns are therefore read by position.
    ``frame`` counts from 1. ``points`` are image (x, y); ``points3d`` are in the wire convention.
    """

    frame: np.ndarray
    time: np.ndarray
    width: np.ndarray
    height: np.ndarray
    face_id: np.ndarray
    right_open: np.ndarray
    left_open: np.ndarray
    confidence: np.ndarray
    success: np.ndarray
    pnp_error: np.ndarray
    quaternion: np.ndarray
    euler: np.ndarray
    rvec: np.ndarray
    tvec: np.ndarray
    points: np.ndarray
    point_confidence: np.ndarray
    points3d: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)


_LOG_HEAD = 25
_LOG_COLUMNS = _LOG_HEAD + 68 * 3 + 70 * 3 + 14


def read_osf_log(path: str | os.PathLike[str]) -> OsfLog:
    """Read an OSF --log-data CSV (as written by facetracker.py with feature logging)."""
    with open(path, encoding="ascii", newline="") as handle:
        lines = [line.rstrip("\r\n") for line in handle]
    if not lines or not lines[0].startswith("Frame,Time,Width,Height"):
        raise OsfLogFormatError(f"{path}: not an OpenSeeFace --log-data CSV (unexpected header)")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split(",")
        if len(fields) != _LOG_COLUMNS:
            raise OsfLogFormatError(
                f"{path}:{number}: expected {_LOG_COLUMNS} values (68 landmarks, 70 3D points, 14 features), "
                f"got {len(fields)}"
            )
        fields[10] = "1" if fields[10] == "True" else "0" if fields[10] == "False" else fields[10]
        try:
            rows.append([float(value) for value in fields])
        except ValueError as exc:
            raise OsfLogFormatError(f"{path}:{number}: {exc}") from exc
    table = np.array(rows, np.float64).reshape(-1, _LOG_COLUMNS)
    landmarks = table[:, _LOG_HEAD : _LOG_HEAD + 204].reshape(-1, 68, 3)
    start3d = _LOG_HEAD + 204
    return OsfLog(
        frame=table[:, 0].astype(np.int64),
        time=table[:, 1],
        width=table[:, 2],
        height=table[:, 3],
        face_id=table[:, 6].astype(np.int64),
        right_open=table[:, 7],
        left_open=table[:, 8],
        confidence=table[:, 9],
        success=table[:, 10] != 0,
        pnp_error=table[:, 11],
        quaternion=table[:, 12:16],
        euler=table[:, 16:19],
        rvec=table[:, 19:22],
        tvec=table[:, 22:25],
        points=landmarks[:, :, :2],
        point_confidence=landmarks[:, :, 2],
        points3d=table[:, start3d : start3d + 210].reshape(-1, 70, 3),
        features=table[:, start3d + 210 :],
    )
