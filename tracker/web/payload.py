"""What the page receives: one frame's faces, the run's statistics and the control state, as JSON.

Encoded once per published frame and shared by every page. Coordinates are image pixels of the full frame
(the page scales them onto its reduced image): the mesh as base64 float32 pairs, the rest rounded to
0.1 px; angles in degrees in the README's
convention; the head axes and gaze rays are already projected to 2D here, so the page only draws lines.
A frame with a camera image travels as one binary message: a 4-byte big-endian length, that JSON, then
the JPEG, so the overlay always belongs to the image under it.
"""
from __future__ import annotations

import base64
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from facewire.client.arkit import ARKIT_NAMES
from facewire.client.protocol import FEATURE_NAMES

from ..outputs.base import OutputStats
from ..pose import rotation_from_quaternion
from ..result import FaceResult, FrameResult
from .controls import SIGNAL_GROUPS, Applied, ControlState

__all__ = ["DashboardStats", "face_payload", "frame_message", "hello_message", "pack_image_message"]

_IRIS_RIGHT, _IRIS_LEFT = slice(468, 473), slice(473, 478)   # subject's right, left (centre first)
_NOSE_TIP = 1


@dataclass(frozen=True)
class DashboardStats:
    """The loop's figures at publish time: what the page shows under "tracker" and "outputs"."""

    fps: float = 0.0                 # frames processed per second, recent
    processing_ms: float = 0.0       # tracking + result + outputs, recent median
    latency_ms: float = 0.0          # capture to send, recent median
    dropped_frames: int = 0          # camera frames never processed (the loop was busy)
    outputs: Mapping[str, OutputStats] = field(default_factory=dict)   # OutputGroup.stats()
    failed_outputs: tuple[str, ...] = ()                               # switched off after an error

    def as_dict(self) -> dict[str, Any]:
        return {"fps": _r(self.fps, 1), "processing_ms": _r(self.processing_ms, 2),
                "latency_ms": _r(self.latency_ms, 2), "dropped_frames": int(self.dropped_frames),
                "outputs": [{"name": name, "frames": s.frames, "datagrams": s.datagrams, "bytes": s.bytes,
                             "errors": s.errors, "running": name not in self.failed_outputs}
                            for name, s in self.outputs.items()]}


def _r(value: float, digits: int) -> float | None:
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _xy(points: np.ndarray) -> list[float]:
    """(N, >=2) -> flat [x0, y0, x1, y1, ...] rounded to 0.1 px."""
    return np.round(np.asarray(points, np.float64)[:, :2], 1).ravel().tolist()


def _packed_xy(points: np.ndarray) -> str:
    """Many points as base64 of little-endian float32 x, y pairs: a tenth of the encoding time of a JSON
    list (this runs on the server thread, which shares the interpreter with the loop)."""
    return base64.b64encode(np.ascontiguousarray(points[:, :2], "<f4").tobytes()).decode("ascii")


def _values(values: np.ndarray, digits: int = 3) -> list[float | None]:
    out = np.round(np.asarray(values, np.float64), digits)
    if np.isfinite(out).all():
        return out.tolist()
    return [v if math.isfinite(v) else None for v in out.tolist()]


def _gaze_angles(gaze: np.ndarray) -> list[float]:
    """[right, up] degrees of a head-frame unit vector (x subject's left, y down, straight ahead -z):
    positive = towards the subject's left / upwards."""
    x, y, z = (float(v) for v in gaze)
    return [_r(math.degrees(math.atan2(x, -z)), 1), _r(math.degrees(math.atan2(-y, -z)), 1)]


def _irises(mesh: np.ndarray | None) -> list[list[float]]:
    """[cx, cy, radius] per eye (subject's right, left) from the attention mesh's iris points."""
    if mesh is None or len(mesh) < 478:
        return []
    out = []
    for rows in (_IRIS_RIGHT, _IRIS_LEFT):
        ring = mesh[rows, :2]
        radius = float(np.mean(np.linalg.norm(ring[1:] - ring[0], axis=1)))
        out.append([_r(ring[0, 0], 1), _r(ring[0, 1], 1), _r(radius, 2)])
    return out


def face_payload(face: FaceResult) -> dict[str, Any]:
    """Everything the page shows about one face."""
    box = face.box
    width = float(box[2] - box[0])
    payload: dict[str, Any] = {
        "id": face.id, "slot": face.slot, "conf": _r(face.confidence, 3), "box": [_r(v, 1) for v in box],
        "eyes": [_r(face.eye_open_left, 3), _r(face.eye_open_right, 3)],            # subject's left, right
        "gaze": [_gaze_angles(face.gaze_left), _gaze_angles(face.gaze_right)],
        "features": _values(face.features),
        "blend": None if face.blendshapes is None else _values(face.blendshapes),
        "ypr": None, "axes": None, "rays": None,
    }
    points = face.mesh if face.mesh is not None else face.points68
    payload["points"] = _packed_xy(points)
    origin = points[_NOSE_TIP if face.mesh is not None else 30, :2]
    payload["irises"] = _irises(face.mesh)
    if face.pose is not None:
        pose = face.pose
        payload["ypr"] = [_r(pose.yaw, 1), _r(pose.pitch, 1), _r(pose.roll, 1)]
        rotation = rotation_from_quaternion(pose.quaternion)
        # head axes seen from the camera, half a face long: the subject's left, down, and forward (-z: out
        # of the face, so a frontal face shows it as a short stub that grows as the head turns)
        tips = origin + (rotation[:2, :] * np.array([1.0, 1.0, -1.0])).T * (0.5 * width)
        payload["axes"] = {"origin": _xy(origin[None]), "tips": _xy(tips)}
        if payload["irises"]:
            rays = []
            for iris, gaze in zip(payload["irises"], (face.gaze_right, face.gaze_left)):
                direction = rotation @ np.asarray(gaze, np.float64)
                start = np.array(iris[:2])
                rays.extend(_xy(np.stack([start, start + direction[:2] * 0.4 * width])))
            payload["rays"] = rays
    return payload


def frame_message(frame: FrameResult, stats: DashboardStats | None, controls: ControlState | None,
                  applied: Applied | None) -> dict[str, Any]:
    return {
        "type": "frame", "frame": frame.frame, "time": frame.capture_time, "size": [frame.width, frame.height],
        "faces": [face_payload(f) for f in frame.faces],
        "stats": None if stats is None else stats.as_dict(),
        "controls": None if controls is None else controls.as_dict(),
        "applied": None if applied is None else {"version": applied.version, "frame": applied.frame},
    }


def hello_message(level: str, reason: str | None, controls: ControlState | None, images: bool) -> dict[str, Any]:
    """The first message on a connection: what this page may do, and the names for the bars."""
    return {"type": "hello", "access": level, "reason": reason, "images": images,
            "blendshape_names": list(ARKIT_NAMES), "feature_names": list(FEATURE_NAMES),
            "groups": list(SIGNAL_GROUPS), "controls": None if controls is None else controls.as_dict()}


def encode(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def pack_image_message(text: str, jpeg: bytes) -> bytes:
    data = text.encode()
    return struct.pack(">I", len(data)) + data + jpeg
