"""Turning tracked faces into OpenSeeFace records (the wire format itself lives in facewire.client).

OpenSeeFace's consumers correct exactly the values OpenSeeFace sends, quirks included, so the record
is filled the way OpenSeeFace fills it (see ``openseeface.py``): its 66-point order, its PnP fit of its
own 3D face model to (row, column) points, warm-started from the face's previous frame, its 3D points
and its per-user normalised expression features. Only the landmarks themselves are ours.
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from facewire.client.protocol import FEATURE_NAMES, OpenSeeFaceRecord

from .features import FeatureConfig, FeatureExtractor, Features
from .ibug68 import default_mapping
from .openseeface import (OSF66_FROM_IBUG68, OsfPose, osf_eye_open, osf_pnp_error, osf_points3d, osf_pose_from_rvec,
                          osf_updates_features, solve_osf_pose)
from .tracking import TrackedFace

log = logging.getLogger(__name__)

RIGHT_PUPIL, LEFT_PUPIL = 468, 473       # attention-mesh iris centres (subject's right, left)
RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS = (33, 133), (362, 263)


@dataclass
class FaceState:
    """What OpenSeeFace carries from frame to frame for one face.

    Kept per track (``TrackedFace.track_id``), not per slot: when a slot goes to another person, the new
    track starts with fresh features and a fresh pose instead of inheriting the previous person's.
    """

    extractor: FeatureExtractor
    pose: OsfPose | None = None
    features: Features = field(default_factory=Features.zeros)


@dataclass(frozen=True)
class RecordOptions:
    gaze: bool = True                 # --gaze-tracking: pupils and blink detection
    face_id_offset: int = 0
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)


_PUPILS = np.array([RIGHT_PUPIL, LEFT_PUPIL], np.intp)


def pupils_of(points: np.ndarray, gaze: bool) -> np.ndarray:
    """(2, 2) image points of the subject's right and left pupil (eye centres without irises)."""
    if gaze and len(points) >= 478:
        return points[_PUPILS, :2].astype(np.float64)
    return np.stack([points[list(RIGHT_EYE_CORNERS), :2].mean(axis=0),
                     points[list(LEFT_EYE_CORNERS), :2].mean(axis=0)]).astype(np.float64)


# OpenSeeFace's fit of its left-handed model to (row, column) points settles on a depth-inverted face
# behind the camera; for a frontal face its rotation is a half turn about (1, 1, 0) (x and y swapped,
# z flipped). Starting new faces there makes the iterative fit land on that same solution.
_FRONTAL_OSF_RVEC = np.array([1.0, 1.0, 0.0]) * (np.pi / np.sqrt(2.0))
_OSF_EYE_CORNER_DISTANCE = 0.632     # model units between OpenSeeFace's outer eye corners (36, 45)


def initial_osf_pose(points66: np.ndarray, image_size: tuple[int, int]) -> OsfPose:
    """A starting pose for a face's first frame, on the branch of solutions OpenSeeFace's consumers expect.

    OpenSeeFace itself starts from zeros and needs a few frames to settle; we start from its frontal
    rotation at the depth the eye-corner distance implies, then refine with its own fit.
    """
    width, height = image_size
    eye_px = float(np.linalg.norm(points66[36] - points66[45]))
    depth = -width * _OSF_EYE_CORNER_DISTANCE / max(eye_px, 1.0)
    row, col = points66[:, 1].mean(), points66[:, 0].mean()
    # OpenSeeFace's camera: focal = width, principal point (width/2, height/2) applied to (row, column).
    tvec = np.array([(row - width / 2) * depth / width, (col - height / 2) * depth / width, depth])
    start = osf_pose_from_rvec(_FRONTAL_OSF_RVEC, tvec)
    return solve_osf_pose(points66, image_size, solve_osf_pose(points66, image_size, start))


class RecordBuilder:
    """Keeps per-face state and builds one ``OpenSeeFaceRecord`` per tracked face and frame."""

    def __init__(self, options: RecordOptions | None = None) -> None:
        self.options = options or RecordOptions()
        self._states: dict[int, FaceState] = {}
        # OSF's 66 points straight from the mesh: the iBUG-68 view's rows in OSF's order.
        self._osf66_view = default_mapping().rows(OSF66_FROM_IBUG68)

    def forget_except(self, track_ids: set[int]) -> None:
        """Drop the state of tracks the tracker has discarded (``FaceTracker.track_ids()``)."""
        for track_id in list(self._states):
            if track_id not in track_ids:
                del self._states[track_id]

    def pose_of(self, track_id: int) -> OsfPose | None:
        """The OpenSeeFace pose last fitted for a track (its rvec goes into the log)."""
        state = self._states.get(track_id)
        return None if state is None else state.pose

    def build(self, face: TrackedFace, image_size: tuple[int, int], timestamp: float,
              now: float) -> OpenSeeFaceRecord:
        state = self._states.get(face.track_id)
        if state is None:
            state = self._states[face.track_id] = FaceState(FeatureExtractor(self.options.feature_config))
        points = face.mesh.points
        points66 = self._osf66_view.apply(points).astype(np.float64)
        pupils = pupils_of(points, self.options.gaze)

        if state.pose is None or face.new:
            pose = initial_osf_pose(points66, image_size)     # already refined by OpenSeeFace's own fit
        else:
            pose = solve_osf_pose(points66, image_size, state.pose)
        state.pose = pose
        error = osf_pnp_error(points66, pose, image_size)
        confidence = face.mesh.presence
        if osf_updates_features(confidence, error):
            points3d = osf_points3d(points66, pupils, pose, image_size, normalize=True)
            state.features = state.extractor.update(points3d, now)
        else:
            points3d = osf_points3d(points66, pupils, pose, image_size, normalize=False)
        eye_right, eye_left = osf_eye_open(state.features) if self.options.gaze else (1.0, 1.0)
        width, height = image_size
        # The id is the OpenSeeFace slot (face.id), as OpenSeeFace sends it, not the track id.
        # The values already have the record's shapes: the trusted constructor skips the public one's
        # validation and copies (still rejecting NaN/inf) and makes encoding a copy of the record's bytes.
        return OpenSeeFaceRecord.from_trusted_values(
            time=timestamp, id=face.id + self.options.face_id_offset, width=width, height=height,
            eye_right=eye_right, eye_left=eye_left, success=True, pnp_error=error,
            quaternion=pose.quaternion, euler=pose.euler, translation=pose.translation, confidence=confidence,
            points=np.concatenate([points66, pupils]), points3d=points3d, features=state.features.values())


class OsfLogWriter:
    """``--log-data``: OpenSeeFace's CSV, one row per face and frame, with its exact columns and CRLF lines."""

    def __init__(self, stream: TextIO, fps: float) -> None:
        self._stream = stream
        self._fps = fps
        head = ["Frame", "Time", "Width", "Height", "FPS", "Face", "FaceID", "RightOpen", "LeftOpen",
                "AverageConfidence", "Success3D", "PnPError", "RotationQuat.X", "RotationQuat.Y", "RotationQuat.Z",
                "RotationQuat.W", "Euler.X", "Euler.Y", "Euler.Z", "RVec.X", "RVec.Y", "RVec.Z", "TVec.X",
                "TVec.Y", "TVec.Z"]
        # OpenSeeFace's header names 66 landmarks and 66 3D points, though rows carry 68 and 70.
        head += [f"Landmark[{i}].{c}" for i in range(66) for c in ("X", "Y", "Confidence")]
        head += [f"Point3D[{i}].{c}" for i in range(66) for c in ("X", "Y", "Z")]
        head += list(FEATURE_NAMES)
        self._write(head)

    def _write(self, cells: list) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerow(cells)
        self._stream.write(buffer.getvalue())

    def write(self, frame_number: int, face_index: int, record: OpenSeeFaceRecord, rvec: np.ndarray) -> None:
        cells: list = [frame_number, repr(record.time), int(record.width), int(record.height), self._fps, face_index,
                       record.id, record.eye_right, record.eye_left, float(np.mean(record.confidence[:66])),
                       record.success, record.pnp_error, *record.quaternion.tolist(), *record.euler.tolist(),
                       *np.ravel(rvec).tolist(), *record.translation.tolist()]
        for (x, y), c in zip(record.points.tolist(), record.confidence.tolist()):
            cells += [x, y, c]
        cells += record.points3d.ravel().tolist()
        cells += [record.features[name] for name in FEATURE_NAMES]
        self._write(cells)
        self._stream.flush()
