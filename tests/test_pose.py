"""Head pose: the derived reference face, the pose solvers, the angle conventions, and accuracy on AFLW2000."""
from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facewire.tracker.pose import (
    AFLW_PITCH_OFFSET_DEG,
    PoseError,
    PoseEstimator,
    ReferenceFace,
    aflw_angles,
    aflw_angles_leave_one_out,
    euler_from_rotation,
    quaternion_from_rotation,
    rotation_from_aflw,
    rotation_from_euler,
    rotation_from_quaternion,
)
from facewire.tracker.runtime import ModelError, load_data_file

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
IMAGES = DATA / "images"
TRUTH = IMAGES / "headpose_aflw2000.csv"

TARGET_MAE_DEG = 3.0          # the target for the mean over yaw, pitch and roll


@pytest.fixture(scope="module")
def reference() -> ReferenceFace:
    return ReferenceFace.load()


@pytest.fixture(scope="module")
def raw_reference() -> dict[str, np.ndarray]:
    return load_data_file("reference_face.npz")


def random_rotations(n: int, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [cv2.Rodrigues(rng.normal(size=3) * 0.8)[0] for _ in range(n)]


# --- the reference face ---------------------------------------------------------------------------

def test_reference_is_scaled_to_the_documented_interpupillary_distance(reference, raw_reference):
    v = reference.vertices
    assert len(v) == 478 and str(raw_reference["kind"]) == "attention"
    assert reference.ipd_mm == pytest.approx(63.0)
    assert np.linalg.norm(v[473] - v[468]) == pytest.approx(63.0, abs=1e-3)
    # Anthropometric sanity (adult means, Farkas): outer eye corners ~88-91 mm apart, face ~130-140 wide.
    assert 80 < np.linalg.norm(v[263] - v[33]) < 100
    assert 120 < np.ptp(v[:, 0]) < 150


def test_reference_is_left_right_symmetric_under_its_mirror_pairs(reference):
    v, mirror = reference.vertices, reference.mirror
    assert np.array_equal(mirror[mirror], np.arange(len(v)))            # a pairing
    assert np.allclose(v[mirror] * [-1, 1, 1], v, atol=1e-4)
    midline = mirror == np.arange(len(v))
    assert np.allclose(v[midline, 0], 0, atol=1e-4)
    assert 20 <= midline.sum() <= 40                                    # nose ridge, lips, chin...


def test_mirror_pairs_agree_with_the_attention_models_eye_order(reference):
    # Independent evidence: the attention model's eye heads list both eyes in mirror order.
    topology = load_data_file("mesh_topology.npz")
    assert np.array_equal(reference.mirror[topology["left_eye"]], topology["right_eye"])
    assert reference.mirror[468] == 473                                 # iris centres
    for a, b in ((61, 291), (234, 454), (133, 362), (78, 308)):         # mouth/face/eye corners
        assert reference.mirror[a] == b


def test_reference_head_frame(reference):
    v = reference.vertices
    assert np.allclose(v[[33, 133, 263, 362]].mean(axis=0), 0, atol=1e-3)   # origin between the eyes
    assert v[263, 0] > 30 and v[33, 0] < -30          # x: subject's left eye on the image's right
    assert v[152, 1] > 80 and v[10, 1] < -40          # y down: chin below, forehead above
    assert v[1, 2] < -30 and v[234, 2] > 30           # z away: nose tip nearest, face edge behind


def test_reference_normals_point_out_of_the_head(reference):
    n = reference.normals
    assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    assert n[1, 2] < -0.8                             # nose tip faces the camera
    assert n[234, 0] < -0.5 and n[454, 0] > 0.5       # face edges face sideways, outwards
    assert np.allclose(n[reference.mirror] * [-1, 1, 1], n, atol=1e-4)


def test_pose_vertices_are_a_symmetric_rigid_set(reference, raw_reference):
    idx = reference.pose_vertices
    assert len(idx) == 64 and idx.max() < 468
    assert set(reference.mirror[idx]) == set(idx)
    rig = raw_reference["rigidity_mm"]
    assert rig[idx].max() <= np.sort(rig[:468])[len(idx) + 1]
    assert rig[idx].mean() < 0.7 * np.median(rig[:468])


# --- rotations and conventions ---------------------------------------------------------------------

def test_quaternion_and_matrix_agree():
    for r in random_rotations(50):
        q = quaternion_from_rotation(r)
        assert q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        assert np.allclose(rotation_from_quaternion(q), r, atol=1e-12)
        rvec = cv2.Rodrigues(r)[0].ravel()
        angle = np.linalg.norm(rvec)
        expected = np.append(np.sin(angle / 2) * rvec / angle, np.cos(angle / 2))
        assert np.allclose(q, expected if expected[3] >= 0 else -expected, atol=1e-12)
    for r in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):   # 180-degree turns
        assert np.allclose(rotation_from_quaternion(quaternion_from_rotation(r)), r, atol=1e-12)


def test_euler_angles_round_trip_and_mean_what_the_docstring_says():
    for yaw, pitch, roll in ((10, 20, 30), (-70, 5, -40), (0, -60, 170)):
        assert np.allclose(euler_from_rotation(rotation_from_euler(yaw, pitch, roll)), (yaw, pitch, roll))
    nose = np.array([0.0, 30.0, -45.0])             # head frame: below the eyes, in front
    assert (rotation_from_euler(0, 20, 0) @ nose)[1] < nose[1]       # pitch > 0: chin up, nose goes up
    assert (rotation_from_euler(20, 0, 0) @ nose)[0] > 0             # yaw > 0: subject's left = image right
    left_eye = np.array([32.0, 0.0, 0.0])
    assert (rotation_from_euler(0, 0, 20) @ left_eye)[1] > 0         # roll > 0: subject's left eye drops


def test_aflw_angles_invert_the_aflw_rotation():
    for pitch, yaw, roll in ((-10.6, 50.5, -13.6), (16.4, 13.0, 21.5), (3.3, -6.3, -2.5)):
        r = rotation_from_aflw(pitch, yaw, roll)
        assert np.allclose(aflw_angles(r, 0.0), (pitch, yaw, roll), atol=1e-9)
        offset = rotation_from_euler(0, -AFLW_PITCH_OFFSET_DEG, 0)
        assert np.allclose(aflw_angles(r @ offset), (pitch, yaw, roll), atol=1e-9)


# --- the solvers on synthetic faces -----------------------------------------------------------------

W, H, F = 640, 480, 600.0


def project(reference: ReferenceFace, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    cam = reference.vertices @ rotation.T + translation
    uv = F * cam[:, :2] / cam[:, 2:] + [(W - 1) / 2, (H - 1) / 2]
    return np.column_stack([uv, (cam[:, 2] - translation[2]) * F / translation[2]])


def along_ray(reference: ReferenceFace, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """What the mesh model reports: the face as a scaled orthographic view along the ray through it."""
    idx = reference.pose_vertices
    centre = rotation @ reference.vertices[idx].mean(axis=0) + translation
    ray = centre / np.linalg.norm(centre)
    axis = np.cross([0, 0, 1.0], ray)
    onto_ray = cv2.Rodrigues(axis / np.linalg.norm(axis) * math.acos(ray[2]))[0]
    seen = (reference.vertices - reference.vertices[idx].mean(axis=0)) @ (onto_ray.T @ rotation).T
    scale = F / np.linalg.norm(centre)
    uv_centre = F * centre[:2] / centre[2] + [(W - 1) / 2, (H - 1) / 2]
    return np.column_stack([uv_centre + scale * seen[:, :2], scale * seen[:, 2]])


POSES = [((0, 0, 0), (0, 0, 600)), ((25, -10, 5), (-150, 90, 550)), ((-40, 20, -15), (120, -60, 800)),
         ((60, 5, 10), (40, 30, 450))]


@pytest.mark.parametrize("angles,translation", POSES)
def test_pnp_recovers_a_projected_reference(reference, angles, translation):
    rotation, t = rotation_from_euler(*angles), np.array(translation, float)
    pose = PoseEstimator("pnp", reference).estimate(project(reference, rotation, t), (W, H), F)
    assert np.allclose([pose.yaw, pose.pitch, pose.roll], angles, atol=1e-3)
    assert np.allclose(pose.translation, t, atol=1e-2)
    assert pose.reprojection_error < 1e-3


@pytest.mark.parametrize("angles,translation", POSES)
def test_align_recovers_the_pose_from_a_view_along_the_ray(reference, angles, translation):
    rotation, t = rotation_from_euler(*angles), np.array(translation, float)
    pose = PoseEstimator("align", reference).estimate(along_ray(reference, rotation, t), (W, H), F)
    assert np.allclose(pose.rotation, rotation, atol=1e-9)
    assert np.allclose(pose.translation, t, atol=1e-6)
    assert np.allclose(pose.quaternion, quaternion_from_rotation(rotation))


def test_align_on_a_distant_perspective_face_is_nearly_exact(reference):
    rotation, t = rotation_from_euler(20, -10, 5), np.array([0.0, 0.0, 5000.0])
    pose = PoseEstimator("align", reference).estimate(project(reference, rotation, t), (W, H), F)
    assert np.allclose([pose.yaw, pose.pitch, pose.roll], (20, -10, 5), atol=0.2)
    assert pose.translation[2] == pytest.approx(5000, rel=0.01)


def test_pnp_warm_start_from_the_previous_frame(reference):
    first = rotation_from_euler(10, 5, 0), np.array([20.0, 10.0, 600.0])
    second = rotation_from_euler(13, 4, 1), np.array([25.0, 12.0, 590.0])
    estimator = PoseEstimator("pnp", reference)
    previous = estimator.estimate(project(reference, *first), (W, H), F)
    pose = estimator.estimate(project(reference, *second), (W, H), F, previous=previous)
    assert np.allclose([pose.yaw, pose.pitch, pose.roll], (13, 4, 1), atol=1e-3)


def test_visibility_follows_the_head_turn(reference):
    estimator = PoseEstimator("align", reference)
    frontal = estimator.visibility(np.eye(3), 478)
    assert frontal.shape == (478,) and frontal[1] == 1.0 and frontal.mean() > 0.9
    turned = estimator.visibility(rotation_from_euler(-80, 0, 0), 468)  # face turned to the image's left
    assert turned.shape == (468,)
    assert turned[234] == 0.0 and turned[454] == 1.0                   # subject's right edge hidden


def test_an_incomplete_reference_file_names_the_fix(reference):
    with pytest.raises(ModelError, match="build_reference_face"):
        ReferenceFace.from_arrays({"vertices": reference.vertices})


def test_bad_input_is_rejected(reference):
    estimator = PoseEstimator("align", reference)
    with pytest.raises(PoseError, match="shape"):
        estimator.estimate(np.zeros((68, 2)), (W, H))
    with pytest.raises(PoseError, match="image size"):
        estimator.estimate(np.zeros((478, 3)), (0, H))
    with pytest.raises(ValueError, match="method"):
        PoseEstimator("ransac", reference)


# --- the build script ----------------------------------------------------------------------------------

def test_build_script_fails_clearly_without_the_data(tmp_path, monkeypatch):
    path = REPO / "scripts" / "build_reference_face.py"
    spec = importlib.util.spec_from_file_location("build_reference_face", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    with pytest.raises(module.BuildError, match="--data"):
        module.build(tmp_path, "attention")
    assert module.main(["--data", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 1
    assert not (tmp_path / "x.npz").exists()


# --- accuracy on AFLW2000 ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def aflw_landmarks() -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """Names, AFLW (pitch, yaw, roll) truth and attention-mesh points of the in-range AFLW2000 photos.

    The face scored is the detection overlapping the .pts annotation most; its mesh comes from the
    detection crop and one refinement on the crop its own landmarks give (as the analyzer does).
    """
    if not TRUTH.is_file():
        pytest.skip(f"real face data not found at {TRUTH} (expected ../shared/data beside the repo)")
    from facewire.tracker.detection import FaceDetector, iou
    from facewire.tracker.ibug68 import read_pts
    from facewire.tracker.landmarks import Landmarker, roi_from_detection, roi_from_landmarks

    detector, landmarker = FaceDetector("auto"), Landmarker("attention")
    names, truth, points = [], [], []
    with open(TRUTH, newline="") as f:
        for row in csv.DictReader(f):
            if row["in_range_99deg"] == "0":
                continue
            image = cv2.imread(str(IMAGES / row["image"]))
            pts = read_pts(IMAGES / row["image"].replace(".jpg", ".pts"))
            box = np.concatenate([pts.min(axis=0), pts.max(axis=0)])
            faces = detector.detect(image)
            assert faces, f"no face found in {row['image']}"
            face = faces[int(np.argmax(iou(box, np.stack([d.box for d in faces]))))]
            mesh = landmarker(image, roi_from_detection(face))
            mesh = landmarker(image, roi_from_landmarks(mesh.points))
            names.append(row["image"])
            truth.append([float(row["pitch_deg"]), float(row["yaw_deg"]), float(row["roll_deg"])])
            points.append(mesh.points)
    return names, np.array(truth), points


def aflw_errors(aflw_landmarks, method: str) -> np.ndarray:
    names, truth, points = aflw_landmarks
    estimator = PoseEstimator(method, weak_perspective=True)   # AFLW2000-3D's poses are scaled-orthographic fits
    rotations = [estimator.estimate(p, (450, 450)).rotation for p in points]
    return np.abs(aflw_angles_leave_one_out(rotations, truth) - truth)


def test_aflw2000_pose_error_align(aflw_landmarks):
    names, truth, _ = aflw_landmarks
    assert len(names) == 31
    err = aflw_errors(aflw_landmarks, "align")
    pitch, yaw, roll = err.mean(axis=0)
    # Measured (leave-one-out frame offset): pitch 4.06, yaw 3.48, roll 2.19, mean 3.24 degrees. That
    # misses the 3.0 target: on the four photos turned 50-79 degrees the mesh model itself stops
    # near 50 degrees of yaw (its 3D shape, not the solver), and AFLW's pitch labels scatter.
    assert pitch < 4.5 and yaw < 3.8 and roll < 2.5
    assert err.mean() < 3.4
    below_45 = np.abs(truth[:, 1]) < 45
    assert below_45.sum() == 27
    assert err[below_45].mean() < 2.2 < TARGET_MAE_DEG                 # measured 1.94


def test_aflw2000_pose_error_pnp(aflw_landmarks):
    err = aflw_errors(aflw_landmarks, "pnp")
    # Measured: pitch 5.03, yaw 4.93, roll 2.36, mean 4.11: clearly worse than "align", hence the default.
    assert err.mean() < 4.4
    assert err.mean() > aflw_errors(aflw_landmarks, "align").mean()


def test_aflw2000_angle_convention_is_the_one_that_fits(aflw_landmarks):
    """The documented mapping beats every other sign choice for AFLW's pitch, yaw and roll."""
    _, truth, points = aflw_landmarks
    estimator = PoseEstimator("align", weak_perspective=True)
    rotations = [estimator.estimate(p, (450, 450)).rotation for p in points]

    def mean_geodesic(signs: tuple[int, int, int]) -> float:
        errors = []
        for r, (p, y, ro) in zip(rotations, truth):
            m = rotation_from_aflw(p * signs[0], y * signs[1], ro * signs[2]) @ rotation_from_euler(
                0, -AFLW_PITCH_OFFSET_DEG, 0)
            errors.append(math.degrees(np.linalg.norm(cv2.Rodrigues(m.T @ r)[0])))
        return float(np.mean(errors))

    documented = mean_geodesic((1, 1, 1))
    assert documented < 7.0
    for signs in ((-1, 1, 1), (1, -1, 1), (1, 1, -1)):
        assert mean_geodesic(signs) > 1.5 * documented
