"""The one immutable per-frame result every output reads.

The loop tracks a frame once and builds one ``FrameResult``; each output (OpenSeeFace, VMC,
iFacialMocap, msgpack, ZeroMQ) encodes what it needs from it. Nothing downstream recomputes tracking,
so all formats agree on a frame, and a new format never touches the loop.

Conventions (the README's):

* image points are zero-based pixels (x right, y down); mesh z is in the same pixel scale, nearer < 0;
* ``pose`` is ours (``tracker/pose.py``): yaw > 0 turns the face to the subject's left, pitch > 0 lifts
  the chin, roll > 0 tilts the head towards the subject's left shoulder; the quaternion (x, y, z, w)
  is of the rotation taking head coordinates (x to the subject's left, y down, z to the back of the
  head) to OpenCV camera coordinates (x right, y down, z away from the camera); translation is the
  point between the eyes in the camera frame, millimetres;
* ``gaze`` is a unit vector per eye in that head frame: looking straight ahead is (0, 0, -1);
* "left" and "right" are always the subject's own sides.

Expensive fields are optional: ``pose``, ``mesh`` and ``blendshapes`` are None unless an output or a log
asked for them (``Output.needs``), so a plain OpenSeeFace run pays for none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from facewire.client.arkit import ARKIT_NAMES
from facewire.client.protocol import FEATURE_NAMES, OpenSeeFaceRecord
from facewire.client.views import PoseUnavailableError, gaze_vectors

from .ibug68 import Ibug68Mapping, default_mapping
from .pose import HeadPose
from .tracking import TrackedFace

__all__ = ["FaceResult", "FrameResult", "Pose", "ResultBuilder", "NEEDS"]

#: The optional pieces of work an output can ask for: our head pose (about 0.26 ms a face; the
#: OpenSeeFace record has its own), the 52 blendshapes, and a copy of the mesh.
NEEDS = frozenset({"pose", "blendshapes", "mesh"})

# OpenSeeFace's head frame (views: x subject's right, y up) -> ours (x subject's left, y down).
_OSF_HEAD_TO_OURS = np.array([-1.0, -1.0, 1.0])
_STRAIGHT_AHEAD = np.array([0.0, 0.0, -1.0])


def _frozen(array: np.ndarray, dtype=np.float32) -> np.ndarray:
    out = np.array(array, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Pose:
    """Head pose in the conventions of the module docstring."""

    yaw: float
    pitch: float
    roll: float
    quaternion: np.ndarray      # (4,) x, y, z, w, w >= 0
    translation: np.ndarray     # (3,) mm, camera frame

    @classmethod
    def from_head_pose(cls, pose: HeadPose) -> "Pose":
        return cls(float(pose.yaw), float(pose.pitch), float(pose.roll),
                   _frozen(pose.quaternion, np.float64), _frozen(pose.translation, np.float64))


@dataclass(frozen=True, eq=False)
class FaceResult:
    """One face in one frame: everything any output sends about it."""

    slot: int                          # OpenSeeFace's face id: the slot 0..faces-1 (+ --face-id-offset)
    id: int                            # stable track id, never reused (+ --face-id-offset)
    box: np.ndarray                    # (4,) x0, y0, x1, y1 of the landmarks, pixels
    confidence: float                  # the mesh's face probability, 0..1
    points68: np.ndarray               # (68, 2) iBUG 68-point markup, pixels
    pose: Pose | None                  # None unless asked for
    gaze_right: np.ndarray             # (3,) unit vector, head frame
    gaze_left: np.ndarray
    eye_open_right: float              # 0 closed .. 1 open (OpenSeeFace's, per-user normalised)
    eye_open_left: float
    features: np.ndarray               # (14,) OpenSeeFace's expression features, FEATURE_NAMES order
    mesh: np.ndarray | None = None     # (478, 3) or (468, 3) pixels; None unless asked for
    blendshapes: np.ndarray | None = None   # (52,) float32 in ARKIT_NAMES order, 0..1; None unless computed
    osf: OpenSeeFaceRecord | None = None    # the OpenSeeFace record (its own quirky pose and points)

    def feature(self, name: str) -> float:
        """One OpenSeeFace feature by its wire name (``mouth_open``, ...)."""
        return float(self.features[FEATURE_NAMES.index(name)])

    @property
    def feature_map(self) -> Mapping[str, float]:
        return dict(zip(FEATURE_NAMES, self.features.tolist()))

    def blendshape(self, name: str) -> float:
        """One ARKit blendshape by Apple's name; raises LookupError when none were computed."""
        if self.blendshapes is None:
            raise LookupError(f"face {self.id} carries no blendshapes (no output asked for them)")
        return float(self.blendshapes[ARKIT_NAMES.index(name)])


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One processed frame. ``faces`` is empty when no face is tracked (outputs still send that)."""

    frame: int                 # frame number from the start of the run, 1-based
    capture_time: float        # wall clock (time.time()) when the frame was read
    capture_monotonic: float   # time.perf_counter() when the frame was read (latency on this machine)
    send_time: float           # wall clock when the result was built, just before the outputs run
    width: int
    height: int
    faces: tuple[FaceResult, ...] = ()

    def face(self, face_id: int) -> FaceResult | None:
        return next((f for f in self.faces if f.id == face_id), None)


def gaze_from_record(record: OpenSeeFaceRecord) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) unit gaze vectors in our head frame from the record's eyeball and pupil points.

    Falls back to straight ahead when the record has no 3D eye points (first frames of a track).
    """
    try:
        gaze = gaze_vectors(record, "head")
    except PoseUnavailableError:
        return _frozen(_STRAIGHT_AHEAD), _frozen(_STRAIGHT_AHEAD)
    return _frozen(gaze.right * _OSF_HEAD_TO_OURS), _frozen(gaze.left * _OSF_HEAD_TO_OURS)


class ResultBuilder:
    """Builds ``FaceResult``s from what the loop already has: the tracked face, its OpenSeeFace record
    and our head pose. Holds only the 68-point mapping (read once), no per-face state.

    ``face_id_offset`` (``--face-id-offset``) is added to the track id, as the record adds it to the slot."""

    def __init__(self, mapping: Ibug68Mapping | None = None, face_id_offset: int = 0) -> None:
        self._ibug68 = mapping or default_mapping()
        self._face_id_offset = int(face_id_offset)

    def face(self, slot: int, face: TrackedFace, record: OpenSeeFaceRecord, pose: HeadPose | None = None,
             blendshapes: np.ndarray | None = None, with_mesh: bool = False) -> FaceResult:
        """``slot``: the face id OpenSeeFace sends (the record's id); ``pose`` (``PoseEstimator.estimate`` of
        the face's mesh) and ``blendshapes`` (52 values in ARKIT_NAMES order) are None when no output asked
        for them."""
        if blendshapes is not None:
            blendshapes = np.clip(np.asarray(blendshapes, np.float32), 0.0, 1.0)
            if blendshapes.shape != (len(ARKIT_NAMES),):
                raise ValueError(f"blendshapes must have shape ({len(ARKIT_NAMES)},), got {blendshapes.shape}")
            blendshapes.setflags(write=False)
        gaze_right, gaze_left = gaze_from_record(record)
        features = np.fromiter((record.features[n] for n in FEATURE_NAMES), np.float32, len(FEATURE_NAMES))
        features.setflags(write=False)
        return FaceResult(
            slot=slot, id=int(face.track_id) + self._face_id_offset, box=_frozen(face.box), confidence=float(face.mesh.presence),
            points68=_frozen(self._ibug68.apply(face.mesh.points)),
            pose=None if pose is None else Pose.from_head_pose(pose), gaze_right=gaze_right, gaze_left=gaze_left,
            eye_open_right=float(record.eye_right), eye_open_left=float(record.eye_left), features=features,
            mesh=_frozen(face.mesh.points) if with_mesh else None, blendshapes=blendshapes, osf=record)

    @staticmethod
    def frame(number: int, capture_time: float, capture_monotonic: float, send_time: float,
              image_size: tuple[int, int], faces: list[FaceResult] | tuple[FaceResult, ...]) -> FrameResult:
        width, height = image_size
        return FrameResult(int(number), float(capture_time), float(capture_monotonic), float(send_time),
                           int(width), int(height), tuple(faces))
