"""Facewire's self-describing stream: one msgpack map per frame (schema in ``client/PROTOCOL.md``).

Sent over UDP (port 11574) and over ZeroMQ PUB (port 5555). Header values are doubles (wall-clock
time needs them); face values are float32 and landmark arrays are raw little-endian float32 bytes
(msgpack ``bin``), which keeps a face at about 1 KB, 6.8 KB with the 478-point mesh.

A frame whose encoding would exceed one UDP datagram (65507 bytes: about nine faces with the mesh, or
fifty without) is sent as several datagrams, each a complete frame map holding some of the faces,
numbered by ``part`` = [index, count]. A frame with no face is sent too, with ``faces`` empty.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import msgpack
import numpy as np

from .arkit import ARKIT_NAMES
from .protocol import FEATURE_NAMES, DatagramError

__all__ = ["DEFAULT_PORT", "MAX_DATAGRAM", "SCHEMA_VERSION", "FaceValues", "MsgpackFace", "MsgpackFrame",
           "decode_frame", "encode_face", "encode_frame"]

SCHEMA_VERSION = 1
DEFAULT_PORT = 11574
MAX_DATAGRAM = 65507

_FACE_PACKER = msgpack.Packer(use_single_float=True, use_bin_type=True, autoreset=True)
_LE_F32 = np.dtype("<f4")
_HEADER_KEYS = ("v", "frame", "time", "mono", "sent", "size", "part")


@dataclass(frozen=True)
class FaceValues:
    """What the encoder takes for one face: plain values (the tracker fills it from its result)."""

    slot: int
    id: int
    box: Sequence[float]
    confidence: float
    points68: np.ndarray                   # (68, 2)
    yaw: float
    pitch: float
    roll: float
    quaternion: Sequence[float]
    translation: Sequence[float]
    gaze_right: Sequence[float]
    gaze_left: Sequence[float]
    eye_open_right: float
    eye_open_left: float
    features: np.ndarray                   # (14,) FEATURE_NAMES order
    blendshapes: np.ndarray | None = None  # (52,) ARKIT_NAMES order
    mesh: np.ndarray | None = None         # (N, 3)


def _bin(array: np.ndarray | None) -> bytes | None:
    return None if array is None else np.ascontiguousarray(array, _LE_F32).tobytes()


def _floats(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values]


def encode_face(face: FaceValues) -> bytes:
    """One face map, packed (frames are assembled from packed faces, so they can be split by size)."""
    body: dict[str, Any] = {
        "slot": int(face.slot), "id": int(face.id), "box": _floats(face.box), "conf": float(face.confidence),
        "ypr": [float(face.yaw), float(face.pitch), float(face.roll)], "quat": _floats(face.quaternion),
        "trans": _floats(face.translation), "gaze": [_floats(face.gaze_right), _floats(face.gaze_left)],
        "eyes": [float(face.eye_open_right), float(face.eye_open_left)],
        "pts68": _bin(face.points68), "feat": _bin(face.features), "blend": _bin(face.blendshapes),
    }
    if face.mesh is not None:
        body["mesh"] = _bin(face.mesh)
    return _FACE_PACKER.pack(body)


def _array_header(count: int) -> bytes:
    return bytes([0x90 | count]) if count < 16 else b"\xdc" + count.to_bytes(2, "big")


def encode_frame(frame: int, capture_time: float, capture_monotonic: float, send_time: float,
                 size: tuple[int, int], faces: Sequence[bytes], max_size: int | None = MAX_DATAGRAM) -> list[bytes]:
    """The frame's datagrams (usually one): faces from ``encode_face``, split so each stays under ``max_size``.

    A single face larger than ``max_size`` (impossible with the fields above) raises ValueError.
    """
    def header(part: int, count: int) -> bytes:
        head = {"v": SCHEMA_VERSION, "frame": int(frame), "time": float(capture_time),
                "mono": float(capture_monotonic), "sent": float(send_time), "size": [int(size[0]), int(size[1])],
                "part": [part, count]}
        return msgpack.packb(head | {"faces": None}, use_bin_type=True)[:-1]     # drop the nil: faces follow

    def fits(group: list[bytes], extra: int) -> bool:
        return max_size is None or 64 + 3 + sum(map(len, group)) + extra <= max_size

    groups: list[list[bytes]] = [[]]
    for face in faces:
        if not fits([], len(face)):
            raise ValueError(f"one face takes {len(face)} bytes, more than a datagram of {max_size}")
        if not fits(groups[-1], len(face)):
            groups.append([])
        groups[-1].append(face)
    return [header(k, len(groups)) + _array_header(len(g)) + b"".join(g) for k, g in enumerate(groups)]


# --- decoding ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class MsgpackFace:
    """One face as received, with its frame's number and times (so one record says when it was seen)."""

    frame: int
    time: float                  # capture wall-clock time of the frame
    slot: int
    id: int
    box: np.ndarray              # (4,)
    confidence: float
    points68: np.ndarray         # (68, 2)
    yaw: float
    pitch: float
    roll: float
    quaternion: np.ndarray       # (4,) x, y, z, w
    translation: np.ndarray      # (3,) mm
    gaze_right: np.ndarray       # (3,) head frame
    gaze_left: np.ndarray
    eye_open_right: float
    eye_open_left: float
    features: Mapping[str, float]
    blendshapes: Mapping[str, float] | None
    mesh: np.ndarray | None      # (N, 3) or None


@dataclass(frozen=True, eq=False)
class MsgpackFrame:
    version: int
    frame: int
    capture_time: float
    capture_monotonic: float
    send_time: float
    width: int
    height: int
    part: int
    parts: int
    faces: tuple[MsgpackFace, ...]


def _fail(message: str, reason: str = "schema") -> DatagramError:
    return DatagramError(message, reason)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(f"{what} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise _fail(f"{what} is {value}", "non_finite")
    return float(value)


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{what} must be an integer, got {type(value).__name__}")
    return value


def _vector(value: Any, length: int, what: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise _fail(f"{what} must be a list of {length} numbers")
    out = np.array([_number(v, what) for v in value], np.float64)
    out.setflags(write=False)
    return out


def _array(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    count = int(np.prod(shape))
    if not isinstance(value, bytes) or len(value) != 4 * count:
        raise _fail(f"{what} must be {4 * count} bytes of float32")
    out = np.frombuffer(value, _LE_F32).reshape(shape)
    if not np.isfinite(out).all():
        raise _fail(f"{what} holds NaN or inf", "non_finite")
    return out


def _face(body: Any, frame: int, time: float) -> MsgpackFace:
    if not isinstance(body, dict):
        raise _fail("each face must be a map")
    missing = {"slot", "id", "box", "conf", "ypr", "quat", "trans", "gaze", "eyes", "pts68", "feat"} - set(body)
    if missing:
        raise _fail(f"a face lacks {', '.join(sorted(missing))}")
    gaze = body["gaze"]
    if not isinstance(gaze, (list, tuple)) or len(gaze) != 2:
        raise _fail("gaze must be [right, left]")
    yaw, pitch, roll = _vector(body["ypr"], 3, "ypr")
    eyes = _vector(body["eyes"], 2, "eyes")
    blend = body.get("blend")
    mesh = body.get("mesh")
    if mesh is not None and (not isinstance(mesh, bytes) or len(mesh) not in (468 * 12, 478 * 12)):
        raise _fail("mesh must be 468 or 478 points of 3 float32")
    features = _array(body["feat"], (len(FEATURE_NAMES),), "feat")
    return MsgpackFace(
        frame=frame, time=time, slot=_integer(body["slot"], "slot"), id=_integer(body["id"], "id"),
        box=_vector(body["box"], 4, "box"), confidence=_number(body["conf"], "conf"),
        points68=_array(body["pts68"], (68, 2), "pts68"), yaw=float(yaw), pitch=float(pitch), roll=float(roll),
        quaternion=_vector(body["quat"], 4, "quat"), translation=_vector(body["trans"], 3, "trans"),
        gaze_right=_vector(gaze[0], 3, "gaze right"), gaze_left=_vector(gaze[1], 3, "gaze left"),
        eye_open_right=float(eyes[0]), eye_open_left=float(eyes[1]),
        features=dict(zip(FEATURE_NAMES, features.tolist())),
        blendshapes=None if blend is None else dict(zip(ARKIT_NAMES,
                                                        _array(blend, (len(ARKIT_NAMES),), "blend").tolist())),
        mesh=None if mesh is None else _array(mesh, (len(mesh) // 12, 3), "mesh"))


def decode_frame(data: bytes | bytearray | memoryview) -> MsgpackFrame:
    """Decode and validate one datagram; raises DatagramError (with a ``reason`` tag) when it is not a
    valid frame of this schema version."""
    try:
        body = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as exc:          # msgpack raises several unrelated types for bad input
        raise _fail(f"not a msgpack value: {exc}", "msgpack") from None
    if not isinstance(body, dict):
        raise _fail("a frame must be a msgpack map")
    if body.get("v") != SCHEMA_VERSION:
        raise _fail(f"schema version {body.get('v')!r} is not {SCHEMA_VERSION}", "version")
    missing = set(_HEADER_KEYS + ("faces",)) - set(body)
    if missing:
        raise _fail(f"the frame lacks {', '.join(sorted(missing))}")
    number, time = _integer(body["frame"], "frame"), _number(body["time"], "time")
    width, height = (int(v) for v in _vector(body["size"], 2, "size"))
    part, parts = (int(v) for v in _vector(body["part"], 2, "part"))
    if not 0 <= part < parts:
        raise _fail(f"part {part} of {parts} is impossible")
    if not isinstance(body["faces"], list):
        raise _fail("faces must be a list")
    faces = tuple(_face(face, number, time) for face in body["faces"])
    return MsgpackFrame(SCHEMA_VERSION, number, time, _number(body["mono"], "mono"), _number(body["sent"], "sent"),
                        width, height, part, parts, faces)
