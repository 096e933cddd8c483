"""Landmark order, head pose and gaze views, checked on OpenSeeFace's own output."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from facewire.client.protocol import FEATURE_NAMES, OpenSeeFaceRecord, decode_datagram
from facewire.client.views import (
    OSF_TO_IBUG68,
    R_FRONTAL,
    HeadAngles,
    PoseUnavailableError,
    angles_from_rotation,
    from_ibug68,
    gaze_vectors,
    has_pose,
    head_angles,
    head_rotation,
    head_rotation_to_osf,
    osf_euler,
    osf_quaternion,
    osf_rotation_matrix,
    rotation_from_angles,
    to_ibug68,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REFERENCE = DATA / "openseeface_reference"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found at {path.resolve()}")
    return path


def _record_from_csv_row(row: list[str]) -> tuple[OpenSeeFaceRecord, np.ndarray]:
    """A record from one CSV row (read by position; see facewire.client.protocol), plus its RVec."""
    v = [float(c == "True") if c in ("True", "False") else float(c) for c in row]
    landmarks = np.array(v[25:229]).reshape(68, 3)
    rec = OpenSeeFaceRecord(
        time=v[1], id=int(v[6]), width=v[2], height=v[3], eye_right=v[7], eye_left=v[8],
        success=bool(v[10]), pnp_error=v[11], quaternion=v[12:16], euler=v[16:19], translation=v[22:25],
        confidence=landmarks[:, 2], points=landmarks[:, :2], points3d=np.array(v[229:439]).reshape(70, 3),
        features=dict(zip(FEATURE_NAMES, v[439:453])),
    )
    return rec, np.array(v[19:22])


@pytest.fixture(scope="module")
def hamilton() -> list[tuple[int, OpenSeeFaceRecord, np.ndarray]]:
    """(0-based frame, record, Rodrigues vector) for every row of OpenSeeFace's CSV log."""
    with open(_need(REFERENCE / "hamilton_m0_log.csv"), newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return [(int(row[0]) - 1, *_record_from_csv_row(row)) for row in rows]


def _geometry(rec: OpenSeeFaceRecord) -> dict[str, float]:
    """Pose cues read straight off the 2D landmarks, independent of OpenSeeFace's 3D fit."""
    p = rec.points.astype(np.float64)
    right_eye, left_eye = p[36:42].mean(0), p[42:48].mean(0)
    iod = float(np.linalg.norm(left_eye - right_eye))
    eye_line = left_eye - right_eye
    return {
        # > 0 when the nose tip sits towards the image right of the eyes: head turned to its left.
        "nose_x": float(p[30, 0] - (right_eye[0] + left_eye[0]) / 2) / iod,
        # Image slope of the eye line in degrees, > 0 when the subject's left eye is lower.
        "eye_roll": float(np.degrees(np.arctan2(eye_line[1], eye_line[0]))),
        # Eyes-to-nose over nose-to-chin height: shrinks when the chin comes up.
        "nose_ratio": float((p[30, 1] - (right_eye[1] + left_eye[1]) / 2) / (p[8, 1] - p[30, 1])),
    }


# --- landmark order -------------------------------------------------------------------------


def test_osf_order_is_ibug_without_the_inner_mouth_corners() -> None:
    assert len(OSF_TO_IBUG68) == 66
    assert sorted(OSF_TO_IBUG68) == [i for i in range(68) if i not in (60, 64)]
    assert OSF_TO_IBUG68[58] == 48 and OSF_TO_IBUG68[62] == 54  # the outer corners


def test_to_and_from_ibug68_round_trip() -> None:
    rng = np.random.default_rng(0)
    points66 = rng.normal(size=(66, 2))
    np.testing.assert_array_equal(from_ibug68(to_ibug68(points66)), points66)
    points68 = rng.normal(size=(68, 3))
    back = to_ibug68(from_ibug68(points68))
    keep = [i for i in range(68) if i not in (60, 64)]
    np.testing.assert_array_equal(back[keep], points68[keep])
    confidences = rng.random(66)  # 1-D per-point values work too
    assert to_ibug68(confidences).shape == (68,)
    with pytest.raises(ValueError, match=r"rec.points\[:66\]"):
        to_ibug68(rng.normal(size=(68, 2)))
    with pytest.raises(ValueError, match="68 points"):
        from_ibug68(points66)


def test_inner_corner_fill_matches_human_annotations() -> None:
    """Fill the inner corners from the other 66 points of human 68-point labels; compare."""
    files = sorted(_need(DATA / "images").glob("*.pts"))
    filled_err, copy_err = [], []
    for path in files:
        lines = path.read_text().split("{")[1].split("}")[0].split()
        truth = np.array(lines, dtype=np.float64).reshape(-1, 2)
        if len(truth) != 68:
            continue
        view = to_ibug68(from_ibug68(truth))
        width = np.linalg.norm(truth[54] - truth[48])
        for inner, outer in ((60, 48), (64, 54)):
            filled_err.append(np.linalg.norm(view[inner] - truth[inner]) / width)
            copy_err.append(np.linalg.norm(truth[outer] - truth[inner]) / width)
    assert len(filled_err) >= 40
    assert np.median(filled_err) < np.median(copy_err)
    assert np.median(filled_err) < 0.05


def test_mouth_order_on_openseeface_output(hamilton) -> None:
    frontal = 0
    for _, rec, _ in hamilton:
        p = to_ibug68(rec.points[:66])
        # Upper lip above lower lip, outer and inner, in every frame.
        for upper, lower in ((50, 58), (51, 57), (52, 56)):
            assert p[upper, 1] < p[lower, 1]
        for upper, lower in ((61, 67), (62, 66), (63, 65)):
            assert p[upper, 1] <= p[lower, 1] + 1.0
        if abs(_geometry(rec)["nose_x"]) < 0.2:
            frontal += 1
            mouth_x = p[48:68, 0]
            assert np.argmin(mouth_x) + 48 == 48 and np.argmax(mouth_x) + 48 == 54
            assert (np.diff(p[3:14, 0]) > 0).all()  # the lower jaw runs left to right
            assert p[0, 0] < p[8, 0] < p[16, 0]
    assert frontal >= 50


# --- OpenSeeFace's raw rotation -------------------------------------------------------------


def _rodrigues(rvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rvec / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def test_quaternion_is_the_conjugate_of_the_pnp_rotation(hamilton) -> None:
    posed = [(rec, rvec) for _, rec, rvec in hamilton if has_pose(rec)]
    assert len(posed) > 150
    for rec, rvec in posed:
        np.testing.assert_allclose(osf_rotation_matrix(rec), _rodrigues(rvec), atol=2e-6)


def test_quaternion_and_euler_are_reproduced_from_the_rotation(hamilton) -> None:
    for _, rec, _ in hamilton:
        if not has_pose(rec):
            continue
        rotation = osf_rotation_matrix(rec)
        np.testing.assert_allclose(osf_quaternion(rotation), rec.quaternion, atol=2e-6)
        np.testing.assert_allclose(osf_euler(rotation), rec.euler, atol=1e-3)
    np.testing.assert_allclose(osf_euler(R_FRONTAL), [180.0, 0.0, 90.0], atol=1e-12)


def test_placeholder_poses_are_refused(hamilton) -> None:
    (_, first, _) = hamilton[0]
    assert first.success and first.quaternion.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert not has_pose(first)
    with pytest.raises(PoseUnavailableError, match="has_pose"):
        head_angles(first)
    (rec,) = decode_datagram(_need(REFERENCE / "hamilton_m0_pkt0000.bin").read_bytes())
    assert not has_pose(rec)


# --- head pose ------------------------------------------------------------------------------


def test_frontal_frames_read_near_zero(hamilton) -> None:
    frontal = [rec for _, rec, _ in hamilton if has_pose(rec) and abs(_geometry(rec)["nose_x"]) < 0.08]
    assert len(frontal) >= 20
    sight = np.array([[a.yaw, a.pitch, a.roll] for a in (head_angles(r, "line_of_sight") for r in frontal)])
    camera = np.array([[a.yaw, a.pitch, a.roll] for a in (head_angles(r) for r in frontal)])
    roll_vs_eyes = camera[:, 2] - np.array([_geometry(r)["eye_roll"] for r in frontal])
    assert abs(np.median(sight[:, 0])) < 10 and abs(np.median(sight[:, 1])) < 10
    assert abs(np.median(camera[:, 0])) < 15 and abs(np.median(camera[:, 1])) < 10
    assert np.median(np.abs(roll_vs_eyes)) < 5
    # The raw OpenSeeFace Euler angles of the same frames are nowhere near zero.
    assert np.median([r.euler[0] for r in frontal]) > 140


def test_angle_signs_follow_the_landmarks(hamilton) -> None:
    posed = [rec for frame, rec, _ in hamilton if has_pose(rec) and frame < 214]  # frame 214: scene cut
    geometry = [_geometry(rec) for rec in posed]
    angles = [head_angles(rec, "line_of_sight") for rec in posed]
    yaw = np.array([a.yaw for a in angles])
    pitch = np.array([a.pitch for a in angles])
    roll = np.array([head_angles(rec).roll for rec in posed])
    assert np.corrcoef(yaw, [g["nose_x"] for g in geometry])[0, 1] > 0.9  # nose right = turned left = yaw > 0
    assert np.corrcoef(roll, [g["eye_roll"] for g in geometry])[0, 1] > 0.75  # left eye lower = roll > 0
    assert np.corrcoef(pitch, [g["nose_ratio"] for g in geometry])[0, 1] < -0.6  # chin up = pitch > 0
    slope = np.polyfit([g["eye_roll"] for g in geometry], roll, 1)[0]
    assert 0.7 < slope < 1.3


def test_head_rotation_inverts_back_to_the_wire(hamilton) -> None:
    for _, rec, _ in hamilton:
        if not has_pose(rec):
            continue
        rotation = head_rotation(rec)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        back = head_rotation_to_osf(rotation, rec.points[30], (rec.width, rec.height))
        np.testing.assert_allclose(back, osf_rotation_matrix(rec), atol=1e-9)


@pytest.mark.parametrize(
    "angles", [HeadAngles(20, 0, 0), HeadAngles(0, -15, 0), HeadAngles(0, 0, 10), HeadAngles(-35, 12, -7)]
)
def test_encoding_a_known_pose_reads_it_back(angles: HeadAngles) -> None:
    rotation = rotation_from_angles(angles)
    got = angles_from_rotation(rotation)
    expected = [angles.yaw, angles.pitch, angles.roll]
    np.testing.assert_allclose([got.yaw, got.pitch, got.roll], expected, atol=1e-9)
    nose = np.array([250.0, 300.0])
    osf = head_rotation_to_osf(rotation, nose, (640.0, 480.0))
    points = np.zeros((68, 2))
    points[30] = nose
    rec = OpenSeeFaceRecord(
        time=0.0, id=0, width=640, height=480, eye_right=1, eye_left=1, success=True, pnp_error=1,
        quaternion=osf_quaternion(osf), euler=osf_euler(osf), translation=[0, 0, -8],
        confidence=np.ones(68), points=points, points3d=np.zeros((70, 3)),
    )
    read = head_angles(rec)
    np.testing.assert_allclose([read.yaw, read.pitch, read.roll], expected, atol=1e-3)


# --- gaze -----------------------------------------------------------------------------------


def test_gaze_vectors_are_unit_and_look_towards_the_camera(hamilton) -> None:
    to_camera_angles = []
    for frame, rec, _ in hamilton:
        if not has_pose(rec) or frame >= 214:
            continue
        head = gaze_vectors(rec)
        camera = gaze_vectors(rec, "camera")
        for vector in (head.right, head.left, camera.right, camera.left):
            assert np.linalg.norm(vector) == pytest.approx(1.0)
            assert not vector.flags.writeable
        assert head.right[2] < -0.7 and head.left[2] < -0.7  # forward, out of the face
        if abs(head_angles(rec, "line_of_sight").yaw) < 20:
            # Direction from the face to the camera, in the camera frame (x = image left, y = up).
            x, y = rec.points[30]
            to_camera = -np.array([-(x - rec.width / 2), -(y - rec.height / 2), rec.width])
            to_camera /= np.linalg.norm(to_camera)
            to_camera_angles += [np.degrees(np.arccos(v @ to_camera)) for v in (camera.right, camera.left)]
    assert len(to_camera_angles) >= 100
    assert max(to_camera_angles) < 45 and np.median(to_camera_angles) < 30
