"""OSF record conventions (point order, head model, pose values, 3D points), checked on a real OSF run."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from facewire.tracker.features import Features
from facewire.tracker.ibug68 import default_mapping, to_ibug68
from facewire.tracker.openseeface import (
    OSF66_FROM_IBUG68,
    OSF_CONTOUR_POINTS,
    OSF_FACE_MODEL,
    OsfConventionError,
    OsfLog,
    OsfLogFormatError,
    OsfPose,
    ibug68_to_osf66,
    osf_assumed_camera,
    osf_eye_open,
    osf_pnp_error,
    osf_points3d,
    osf_pose_from_rotation,
    osf_pose_from_rvec,
    osf_quaternion,
    osf_updates_features,
    read_osf_log,
    solve_osf_pose,
    standard_pose_from_osf,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LOG = DATA / "openseeface_reference" / "hamilton_m0_log.csv"
IMAGES = DATA / "images"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data missing: {path} (expected the shared data folder next to the repo)")
    return path


@pytest.fixture(scope="module")
def log() -> OsfLog:
    return read_osf_log(_need(LOG))


@pytest.fixture(scope="module")
def size(log: OsfLog) -> tuple[int, int]:
    return int(log.width[0]), int(log.height[0])


def _fitted_rows(log: OsfLog) -> range:
    # The first 5 rows are OSF's degenerate start-up fits (zero pose, PnP error > 300).
    assert np.all(log.pnp_error[:5] > 300) and np.all(log.pnp_error[5:] < 300)
    return range(5, len(log))


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip((np.trace(a.T @ b) - 1.0) / 2.0, -1.0, 1.0)))


def test_head_model_camera_and_point_swap_reproduce_osf_pnp_error(log: OsfLog, size: tuple[int, int]) -> None:
    for i in _fitted_rows(log):
        pose = osf_pose_from_rvec(log.rvec[i], log.tvec[i])
        assert osf_pnp_error(log.points[i, :66], pose, size) == pytest.approx(log.pnp_error[i], rel=1e-5)


def test_quaternion_and_euler_follow_from_rvec(log: OsfLog) -> None:
    for i in range(len(log)):
        pose = osf_pose_from_rvec(log.rvec[i], log.tvec[i])
        np.testing.assert_allclose(pose.quaternion, log.quaternion[i], atol=2e-7)
        np.testing.assert_allclose(pose.euler, log.euler[i], atol=1e-4)
        np.testing.assert_allclose(pose.translation, log.tvec[i], atol=0)
    # Frontal-ish face: OSF's angles sit around (180, 0, 90) and its fit lies behind the camera.
    assert np.all(log.euler[5:, 0] > 120) and np.all(np.abs(log.euler[5:, 2] - 90) < 25)
    assert np.all(log.tvec[5:, 2] < 0)


def test_osf_quaternion_is_the_quaternion_of_the_transpose(log: OsfLog) -> None:
    for i in _fitted_rows(log):
        rvec = log.rvec[i]
        angle = float(np.linalg.norm(rvec))
        axis = rvec / angle
        of_transpose = np.r_[-axis * math.sin(angle / 2), math.cos(angle / 2)]
        q = np.array(osf_quaternion(cv2.Rodrigues(rvec)[0]))
        assert min(np.abs(q - of_transpose).max(), np.abs(q + of_transpose).max()) < 1e-6


def test_solve_osf_pose_reproduces_osf_fit_from_previous_frame(log: OsfLog, size: tuple[int, int]) -> None:
    checked = 0
    for i in range(6, len(log)):
        if log.frame[i] - log.frame[i - 1] != 1:
            continue
        previous = osf_pose_from_rvec(log.rvec[i - 1], log.tvec[i - 1])
        pose = solve_osf_pose(log.points[i, :66], size, initial=previous)
        np.testing.assert_allclose(pose.rvec, log.rvec[i], atol=2e-4)
        np.testing.assert_allclose(pose.tvec, log.tvec[i], atol=2e-4)
        checked += 1
    assert checked > 180


def test_points3d_match_osf_log(log: OsfLog, size: tuple[int, int]) -> None:
    for i in range(len(log)):
        pose = osf_pose_from_rvec(log.rvec[i], log.tvec[i])
        aligned = osf_updates_features(log.confidence[i], log.pnp_error[i])
        ours = osf_points3d(log.points[i, :66], log.points[i, 66:68], pose, size, normalize=aligned)
        assert ours.dtype == np.float32 and ours.shape == (70, 3)
        np.testing.assert_allclose(ours, log.points3d[i], atol=1e-5)
    # Wire convention: nose tip at x = y = 0 (its z is the lifted depth, near 0), y down (eyes above the
    # nose: negative), z into the head.
    p = log.points3d[50]
    assert np.abs(p[30, :2]).max() < 1e-6 and abs(p[30, 2]) < 0.05
    assert p[36, 1] < 0 and p[8, 1] > 0 and p[0, 2] > p[30, 2]
    assert p[36, 0] > 0 > p[45, 0]  # x towards the subject's right (image-left eye 36-41)
    assert p[68, 2] > p[66, 2]  # eyeball centre behind the pupil


def _osf_lift_reference(
    points66: np.ndarray, pupils: np.ndarray, rvec: np.ndarray, tvec: np.ndarray, size: tuple[int, int], normalize: bool
) -> tuple[float, np.ndarray]:
    """OSF's PnP error and 3D points written plainly with numpy (the reference for the optimised code)."""
    width, height = size
    rotation = cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))[0]
    translation = np.asarray(tvec, np.float64)
    camera = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float32).astype(np.float64)
    homogeneous = (OSF_FACE_MODEL.astype(np.float64) @ rotation.T + translation) @ camera.T
    depth = np.where(homogeneous[:, 2] == 0, 1e-6, homogeneous[:, 2])
    residual = points66[:, ::-1] - homogeneous[:66, :2] / depth[:66, None]
    error = math.sqrt(float(np.sum(residual[0:17] ** 2) + np.sum(residual[30] ** 2)) / 28.0)

    rows_cols = np.concatenate([points66, pupils])[:, ::-1]
    inv_camera = np.linalg.inv(camera)

    def lift(row_col: np.ndarray, z: np.ndarray) -> np.ndarray:
        rays = np.column_stack([row_col, np.ones(len(row_col))]) * z[:, None]
        return (rays @ inv_camera.T - translation) @ rotation

    out = np.zeros((70, 3), np.float32)
    out[0:66] = lift(rows_cols[0:66], depth[0:66])
    for k, (outer, inner) in enumerate(((36, 39), (42, 45))):
        d_outer = np.linalg.norm(rows_cols[66 + k] - rows_cols[outer])
        d_inner = np.linalg.norm(rows_cols[66 + k] - rows_cols[inner])
        anchor = (out[outer] * d_outer + out[inner] * d_inner) / (d_outer + d_inner)
        out[66 + k] = lift(rows_cols[66 + k : 67 + k], np.array([(rotation @ anchor + translation)[2]]))[0]
    for k, (outer, inner) in enumerate(((36, 39), (42, 45))):
        centre = (out[outer] + out[inner]) / 2.0
        out[68 + k] = (centre[0], centre[1], centre[2] - 0.385 * np.linalg.norm(out[outer] - out[inner]))
    out[~np.isfinite(out).all(axis=1)] = 0.0
    if normalize:
        model = OSF_FACE_MODEL
        out[:, 0:2] -= out[30, 0:2]
        bridge = out[27, 0:2] - out[30, 0:2]
        alpha = (math.atan2(float(bridge[1]), float(bridge[0])) % (2.0 * math.pi)) - math.pi / 2.0
        c, s = math.cos(alpha), math.sin(alpha)
        out[:, 0:2] = out[:, 0:2] @ np.array([[c, -s], [s, c]])
        out[:, 1] /= np.mean((out[27:30, 1] - out[28:31, 1]) / (model[27:30, 1] - model[28:31, 1]))
        widths = np.abs(model[[0, 36, 42], 0] - model[[16, 39, 45], 0])
        out[:, 0] /= np.mean(np.abs(out[[0, 36, 42], 0] - out[[16, 39, 45], 0]) / widths)
    out[:, 1:3] *= -1.0
    return error, out


def test_pnp_error_and_points3d_equal_the_plain_numpy_formulas_bit_for_bit(log: OsfLog, size: tuple[int, int]) -> None:
    # The optimised code batches and caches work but must not change a single bit of what is sent.
    rng = np.random.default_rng(4)
    cases = [(log.points[i], log.rvec[i], log.tvec[i]) for i in _fitted_rows(log)]
    cases += [(p + rng.normal(0, 3, p.shape), r + rng.normal(0, 0.05, 3), t) for p, r, t in cases[::5]]
    # A pupil on top of both corners of its eye cannot be lifted (0 / 0): OSF zeroes such points.
    degenerate = cases[0][0].copy()
    degenerate[[36, 39, 66]] = degenerate[66]
    cases.append((degenerate, cases[0][1], cases[0][2]))
    with np.errstate(invalid="ignore"):  # the 0 / 0 above
        for points, rvec, tvec in cases:
            pose = osf_pose_from_rvec(rvec, tvec)
            for normalize in (True, False):
                error, points3d = _osf_lift_reference(points[:66], points[66:68], rvec, tvec, size, normalize)
                assert osf_pnp_error(points[:66], pose, size) == error
                np.testing.assert_array_equal(osf_points3d(points[:66], points[66:68], pose, size, normalize), points3d)
        lifted = osf_points3d(degenerate[:66], degenerate[66:68], osf_pose_from_rvec(*cases[0][1:]), size, False)
    assert not lifted[66].any() and lifted[67].all()


def test_values_cached_on_a_pose_do_not_leak_between_sizes_or_callers(log: OsfLog, size: tuple[int, int]) -> None:
    points, pupils = log.points[60, :66], log.points[60, 66:68]
    primed = osf_pose_from_rvec(log.rvec[60], log.tvec[60])
    plain = OsfPose(rvec=primed.rvec, tvec=primed.tvec, quaternion=primed.quaternion, euler=primed.euler)
    assert primed == plain
    error, points3d = osf_pnp_error(points, plain, size), osf_points3d(points, pupils, plain, size)
    half = (size[0] // 2, size[1] // 2)
    assert osf_pnp_error(points, primed, half) != error  # another image size really gives other numbers
    primed.rotation_matrix[:] = 0.0  # a copy: the pose's own rotation is unaffected
    assert osf_pnp_error(points, primed, size) == error
    np.testing.assert_array_equal(osf_points3d(points, pupils, primed, size), points3d)
    np.testing.assert_array_equal(primed.rotation_matrix, cv2.Rodrigues(np.asarray(log.rvec[60]))[0])


def test_eye_open_fields_derive_from_eye_features(log: OsfLog) -> None:
    for i in _fitted_rows(log):
        features = Features(*log.features[i])
        right, left = osf_eye_open(features)
        assert right == pytest.approx(log.right_open[i], abs=1e-7)
        assert left == pytest.approx(log.left_open[i], abs=1e-7)
    assert log.right_open.min() < 0.01  # the clip has a blink, so the mapping is exercised


def test_point_confidence_scale(log: OsfLog) -> None:
    np.testing.assert_allclose(log.point_confidence[:, :66].mean(axis=1), log.confidence, atol=1e-6)
    assert 0.0 < log.point_confidence.min() and log.point_confidence.max() < 1.2


def test_pose_round_trip_through_our_convention(log: OsfLog, size: tuple[int, int]) -> None:
    for emulate in (True, False):
        for i in _fitted_rows(log):
            r_cam, t_cam = standard_pose_from_osf(log.rvec[i], log.tvec[i], size, emulate_osf_camera=emulate)
            np.testing.assert_allclose(r_cam @ r_cam.T, np.eye(3), atol=1e-9)
            assert np.linalg.det(r_cam) == pytest.approx(1.0) and t_cam[2] > 0
            pose = osf_pose_from_rotation(r_cam, t_cam, size, emulate_osf_camera=emulate)
            np.testing.assert_allclose(pose.quaternion, log.quaternion[i], atol=2e-7)
            np.testing.assert_allclose(pose.euler, log.euler[i], atol=1e-4)
            np.testing.assert_allclose(pose.translation, log.tvec[i], atol=1e-9)


def test_pose_conversion_matches_osf_fit_from_an_independent_real_pose(log: OsfLog, size: tuple[int, int]) -> None:
    """Fit a physically correct (nose towards the camera, z > 0) pose ourselves, convert, compare with OSF."""
    head = -OSF_FACE_MODEL.astype(np.float64)  # OSF's model in our head frame
    contour = list(OSF_CONTOUR_POINTS)
    camera = osf_assumed_camera(*size)
    angles, t_err = [], []
    for i in _fitted_rows(log):
        r0, t0 = standard_pose_from_osf(log.rvec[i], log.tvec[i], size, emulate_osf_camera=False)
        ok, rvec, tvec = cv2.solvePnP(
            head[contour],
            log.points[i, contour].astype(np.float64),
            camera,
            np.zeros(4),
            rvec=cv2.Rodrigues(r0)[0],
            tvec=t0.reshape(3, 1).copy(),
            useExtrinsicGuess=True,
        )
        assert ok and tvec[2, 0] > 0
        pose = osf_pose_from_rotation(cv2.Rodrigues(rvec)[0], tvec.ravel(), size)
        angles.append(_angle_deg(pose.rotation_matrix, cv2.Rodrigues(log.rvec[i])[0]))
        t_err.append(np.abs(np.array(pose.translation) - log.tvec[i]).max())
    # Observed: rotation 2.9 deg mean / 4.3 max, translation 0.03 median / 0.28 max (|t| ~ 8.5).
    assert np.mean(angles) < 4.0 and np.max(angles) < 6.0
    assert np.median(t_err) < 0.1 and np.max(t_err) < 0.4


def test_pose_conversion_predicts_osf_fit_on_synthetic_faces() -> None:
    """Project a real-handed face, let OSF's own solver fit it, compare with our direct conversion."""
    size = (640, 360)
    camera = osf_assumed_camera(*size)
    head = -OSF_FACE_MODEL[:66].astype(np.float64)
    rng = np.random.default_rng(0)
    angles, rel_t = [], []
    for _ in range(60):
        rotation = cv2.Rodrigues(np.deg2rad(rng.uniform([-20, -35, -20], [20, 35, 20])))[0]
        pixel = rng.uniform([100, 60], [540, 300])
        t = rng.uniform(5, 15) * (np.linalg.inv(camera) @ np.r_[pixel, 1.0])
        projected = (head @ rotation.T + t) @ camera.T
        points = projected[:, :2] / projected[:, 2:]
        converted = osf_pose_from_rotation(rotation, t, size)
        fitted = solve_osf_pose(points, size, initial=converted)
        angles.append(_angle_deg(converted.rotation_matrix, fitted.rotation_matrix))
        rel_t.append(np.abs(np.array(converted.translation) - fitted.translation).max() / t[2])
    # Observed: 2.9 deg mean / 6.8 max; translation 2.5 % mean / 7.6 % max of the distance.
    assert np.mean(angles) < 4.0 and np.max(angles) < 9.0
    assert np.mean(rel_t) < 0.04 and np.max(rel_t) < 0.1


def test_plain_axis_convention_for_a_frontal_face() -> None:
    pose = osf_pose_from_rotation(np.eye(3), np.array([0.0, 0.0, 8.0]), (640, 360), emulate_osf_camera=False)
    np.testing.assert_allclose(pose.rotation_matrix, [[0, 1, 0], [1, 0, 0], [0, 0, -1]], atol=1e-12)
    np.testing.assert_allclose(pose.translation, [0, 0, -8.0], atol=1e-12)
    with pytest.raises(OsfConventionError, match="in front"):
        osf_pose_from_rotation(np.eye(3), np.array([0.0, 0.0, -1.0]), (640, 360))


def _read_pts(path: Path) -> np.ndarray:
    body = path.read_text().split("{")[1].split("}")[0]
    return np.array(body.split(), float).reshape(-1, 2)


def _procrustes_residual(target: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Per-point distance after the best similarity transform of source onto target."""
    t0, s0 = target - target.mean(0), source - source.mean(0)
    u, s, vt = np.linalg.svd(s0.T @ t0)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, d]) @ vt
    scale = (s[0] + d * s[1]) / (s0**2).sum()
    return np.linalg.norm(s0 @ rotation * scale - t0, axis=1)


def test_osf66_order_fits_osf_model_on_human_ibug_annotations() -> None:
    """OSF's model (frontal view) must match human iBUG-68 annotations reordered with OSF66_FROM_IBUG68."""
    files = sorted(_need(IMAGES).glob("*.pts"))
    if not files:
        pytest.skip(f"no .pts annotations in {IMAGES}")
    model_2d = np.stack([-OSF_FACE_MODEL[:66, 0], -OSF_FACE_MODEL[:66, 1]], axis=1)  # image x right, y down
    naive = np.array([i for i in range(68) if i not in (60, 64)])
    ratios = []
    for path in files:
        pts = _read_pts(path)
        iod = np.linalg.norm(pts[36:42].mean(0) - pts[42:48].mean(0))
        ours = _procrustes_residual(pts[OSF66_FROM_IBUG68], model_2d)[48:66].mean() / iod
        plain = _procrustes_residual(pts[naive], model_2d)[48:66].mean() / iod
        ratios.append(ours / plain)
    ratios = np.array(ratios)
    # Observed: the OSF order fits the mouth better on 40 of 41 faces, residual about halved (median 0.51).
    assert (ratios < 1).mean() > 0.9 and np.median(ratios) < 0.65


def test_osf66_index_structure() -> None:
    assert OSF66_FROM_IBUG68.shape == (66,) and len(set(OSF66_FROM_IBUG68.tolist())) == 66
    assert set(range(68)) - set(OSF66_FROM_IBUG68.tolist()) == {60, 64}
    ibug = np.arange(68 * 2).reshape(68, 2)
    osf = ibug68_to_osf66(ibug)
    assert osf[58, 0] == 48 * 2 and osf[62, 0] == 54 * 2  # OSF's mouth corners
    with pytest.raises(OsfConventionError):
        ibug68_to_osf66(np.zeros((66, 2)))


def test_osf66_rows_of_the_ibug68_view_equal_the_reordered_view() -> None:
    # The record builder maps the mesh straight to OSF's 66 points with the view's rows in OSF order.
    mesh = np.random.default_rng(5).uniform(0, 640, (478, 3)).astype(np.float32)
    osf66_view = default_mapping().rows(OSF66_FROM_IBUG68)
    np.testing.assert_array_equal(osf66_view.apply(mesh), ibug68_to_osf66(to_ibug68(mesh)))


def test_face_model_is_left_right_symmetric() -> None:
    pairs = [(0, 16), (36, 45), (48, 52), (58, 62), (65, 63), (66, 67), (68, 69)]
    for right, left in pairs:
        np.testing.assert_array_equal(OSF_FACE_MODEL[left], OSF_FACE_MODEL[right] * np.float32([-1, 1, 1]))
    assert OSF_FACE_MODEL[0, 0] > 0 and OSF_FACE_MODEL[8, 1] < 0 and np.all(OSF_FACE_MODEL[30] == 0)


def test_read_osf_log_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(OsfLogFormatError, match="header"):
        read_osf_log(bad)
    short = tmp_path / "y.csv"
    short.write_text("Frame,Time,Width,Height\r\n1,2,3\r\n")
    with pytest.raises(OsfLogFormatError, match="expected 453"):
        read_osf_log(short)
