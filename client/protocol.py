"""OpenSeeFace's UDP wire format: the one place where its byte layout is defined.

A datagram is one or more 1785-byte records concatenated, one per tracked face, with no header
and no padding. Everything is little-endian; the floats after the one-byte success flag are
unaligned, so the layout is a *packed* numpy structured dtype rather than per-field struct calls.

===========  ===========  =====================================================================
offset       type         field
===========  ===========  =====================================================================
0            f64          ``time``: wall-clock seconds since the epoch when the frame was read
8            i32          ``id``: face id (stable while the face is tracked)
12           f32 x2       ``width``, ``height`` of the camera image in pixels
20           f32 x2       ``eye_right``, ``eye_left``: eye openness, 0..1
28           u8           ``success``: the 3D fit succeeded
29           f32          ``pnp_error``: RMS reprojection error of the 3D fit, pixels
33           f32 x4       ``quaternion`` (x, y, z, w), see :mod:`facewire.client.views`
49           f32 x3       ``euler``, degrees, see :mod:`facewire.client.views`
61           f32 x3       ``translation``
73           f32 x68      ``confidence``: 66 landmarks, then right pupil, left pupil
345          f32 x68x2    ``points``: the same 68 points in image pixels
889          f32 x70x3    ``points3d``: 66 landmarks, 2 pupils, 2 eyeball centres
1729         f32 x14      ``features`` in :data:`FEATURE_NAMES` order
===========  ===========  =====================================================================

Points are ``(x, y)`` = (column, row) image pixels, x to the right, y down. OpenSeeFace keeps its
landmarks internally as (row, column) and writes them swapped, so the wire really holds (x, y):
checked on the reference capture, where the first coordinate reaches 570 in a 640x360 image.
The 66 landmarks are *not* in iBUG 68 order around the mouth; see
:func:`facewire.client.views.to_ibug68`.

OpenSeeFace's ``--log-data`` CSV (``shared/data/openseeface_reference/hamilton_m0_log.csv``) holds
the same values (the wire holds them rounded to float32). Its header is 18 names short: it
labels 66 landmarks and 66 3D points, but every row carries 68 landmark triplets and 70 3D
points, so it must be read by position. Columns in order, with the record field they feed:
Frame (1-based frame counter, not sent), Time -> time, Width -> width, Height -> height, FPS (not
sent), Face (index within the frame, not sent), FaceID -> id, RightOpen -> eye_right, LeftOpen ->
eye_left, AverageConfidence (not sent), Success3D -> success, PnPError -> pnp_error,
RotationQuat.X/Y/Z/W -> quaternion, Euler.X/Y/Z -> euler, RVec.X/Y/Z (Rodrigues vector of the same
rotation, not sent), TVec.X/Y/Z -> translation, 68 x (X, Y, Confidence) -> points[i] and
confidence[i], 70 x (X, Y, Z) -> points3d, then the 14 features -> features.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = [
    "DatagramError",
    "FEATURE_NAMES",
    "NUM_POINTS",
    "NUM_POINTS_3D",
    "OpenSeeFaceRecord",
    "RECORD_DTYPE",
    "RECORD_SIZE",
    "RecordError",
    "decode_array",
    "decode_datagram",
    "encode_datagram",
    "encode_record",
]

#: Landmarks on the wire: 66 face landmarks, then the right and left pupil.
NUM_POINTS = 68
#: 3D points on the wire: the 68 above, then the right and left eyeball centre.
NUM_POINTS_3D = 70

#: Feature names in wire order.
FEATURE_NAMES: tuple[str, ...] = (
    "eye_l",
    "eye_r",
    "eyebrow_steepness_l",
    "eyebrow_updown_l",
    "eyebrow_quirk_l",
    "eyebrow_steepness_r",
    "eyebrow_updown_r",
    "eyebrow_quirk_r",
    "mouth_corner_updown_l",
    "mouth_corner_inout_l",
    "mouth_corner_updown_r",
    "mouth_corner_inout_r",
    "mouth_open",
    "mouth_wide",
)

#: One record as a packed little-endian numpy structured dtype.
RECORD_DTYPE = np.dtype(
    [
        ("time", "<f8"),
        ("id", "<i4"),
        ("size", "<f4", (2,)),
        ("eyes", "<f4", (2,)),
        ("success", "u1"),
        ("pnp_error", "<f4"),
        ("quaternion", "<f4", (4,)),
        ("euler", "<f4", (3,)),
        ("translation", "<f4", (3,)),
        ("confidence", "<f4", (NUM_POINTS,)),
        ("points", "<f4", (NUM_POINTS, 2)),
        ("points3d", "<f4", (NUM_POINTS_3D, 3)),
        ("features", "<f4", (len(FEATURE_NAMES),)),
    ],
    align=False,
)

#: Bytes per record.
RECORD_SIZE = 1785
if RECORD_DTYPE.itemsize != RECORD_SIZE:  # pragma: no cover - guards edits to the dtype above
    raise RuntimeError(f"RECORD_DTYPE is {RECORD_DTYPE.itemsize} bytes, the wire needs {RECORD_SIZE}")

_FLOAT_FIELDS = tuple(name for name in RECORD_DTYPE.names if RECORD_DTYPE[name].base.kind == "f")

# Every float of a record in three runs (time; width..eye_left; pnp_error..features), so one
# datagram is checked for NaN/inf with three vectorised calls instead of one per field.
_SIZE_OFFSET = RECORD_DTYPE.fields["size"][1]
_PNP_OFFSET = RECORD_DTYPE.fields["pnp_error"][1]
_FINITE_CHECK_DTYPE = np.dtype(
    {
        "names": ["time", "head", "body"],
        "formats": ["<f8", ("<f4", (4,)), ("<f4", ((RECORD_SIZE - _PNP_OFFSET) // 4,))],
        "offsets": [0, _SIZE_OFFSET, _PNP_OFFSET],
        "itemsize": RECORD_SIZE,
    }
)
_I32 = np.iinfo(np.int32)

# The scalar runs of a record as struct formats, for the tracker's fast path (from_trusted_values):
# time .. pnp_error, then quaternion, euler and translation, then the features.
_HEADER = struct.Struct("<di4fBf")
_POSE_OFFSET = RECORD_DTYPE.fields["quaternion"][1]
_POSE = struct.Struct("<10f")
_FEATURES_OFFSET = RECORD_DTYPE.fields["features"][1]
_FEATURES = struct.Struct(f"<{len(FEATURE_NAMES)}f")
if (_HEADER.size, _POSE_OFFSET + _POSE.size) != (_POSE_OFFSET, RECORD_DTYPE.fields["confidence"][1]):
    raise RuntimeError("the struct formats above no longer match RECORD_DTYPE")  # pragma: no cover


_F4 = np.dtype("<f4")
_HEAD_FLOATS = (_SIZE_OFFSET, (RECORD_DTYPE.fields["success"][1] - _SIZE_OFFSET) // 4)  # (offset, count)
_BODY_FLOATS = (_PNP_OFFSET, (RECORD_SIZE - _PNP_OFFSET) // 4)


def _record_is_finite(wire: bytes) -> bool:
    """Whether every float of one record's bytes is finite, with two sums instead of per-field checks.

    The float32 values are summed in float64, which cannot overflow, so a sum is finite exactly when
    every value in it is.
    """
    head = np.frombuffer(wire, _F4, _HEAD_FLOATS[1], _HEAD_FLOATS[0]).sum(dtype=np.float64)
    body = np.frombuffer(wire, _F4, _BODY_FLOATS[1], _BODY_FLOATS[0]).sum(dtype=np.float64)
    return math.isfinite(struct.unpack_from("<d", wire)[0]) and math.isfinite(head + body)


def _first_non_finite(buffer: bytes) -> tuple[int, str] | None:
    """(record index, field name) of the first NaN/inf float in a buffer of whole records, or None."""
    check = np.frombuffer(buffer, dtype=_FINITE_CHECK_DTYPE)
    if all(np.isfinite(check[name]).all() for name in ("time", "head", "body")):
        return None
    rows = np.frombuffer(buffer, dtype=RECORD_DTYPE)
    for name in _FLOAT_FIELDS:
        finite = np.isfinite(rows[name]).reshape(len(rows), -1).all(axis=1)
        if not finite.all():
            return int(np.flatnonzero(~finite)[0]), name
    return None  # pragma: no cover - the vectorised check above found a non-finite float


class RecordError(ValueError):
    """A record cannot be built or encoded: a field has the wrong shape, range or a NaN/inf."""


class DatagramError(ValueError):
    """A datagram is not valid OpenSeeFace data.

    ``reason`` is a short machine-readable tag ("length" or "non_finite") that receivers use to
    count drops.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _frozen_array(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A read-only float32 copy of ``value``, which must have ``shape`` and be finite."""
    try:
        array = np.array(value, dtype=np.float32, copy=True)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{name} must be numeric with shape {shape}: {exc}") from exc
    if array.shape != shape:
        raise RecordError(f"{name} must have shape {shape}, got {array.shape}")
    if not np.isfinite(array).all():
        raise RecordError(f"{name} contains NaN or inf; consumers cannot handle non-finite values")
    array.setflags(write=False)
    return array


_F32 = struct.Struct("<f")


def _f32(value: Any, name: str) -> float:
    """``value`` rounded to float32 (the wire precision) as a finite Python float."""
    try:
        rounded = _F32.unpack(_F32.pack(value))[0]
    except OverflowError as exc:
        raise RecordError(f"{name} is {value!r}, which is not finite in float32") from exc
    except struct.error as exc:
        raise RecordError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(rounded):
        raise RecordError(f"{name} is {value!r}, which is not finite")
    return rounded


@dataclass(frozen=True, eq=False)
class OpenSeeFaceRecord:
    """One tracked face as OpenSeeFace sends it (field meanings: the table in the module docstring).

    ``points`` are (x, y) image pixels; ``quaternion`` is (x, y, z, w); ``features`` is a read-only
    mapping in :data:`FEATURE_NAMES` order. Construction normalises every float32 wire field to float32 precision and makes the arrays
    read-only copies, so a record always equals ``decode_datagram(encode_record(record))[0]``.
    """

    time: float
    id: int
    width: float
    height: float
    eye_right: float
    eye_left: float
    success: bool
    pnp_error: float
    quaternion: np.ndarray
    euler: np.ndarray
    translation: np.ndarray
    confidence: np.ndarray
    points: np.ndarray
    points3d: np.ndarray
    features: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(FEATURE_NAMES, 0.0))

    # The record's wire bytes when they are known to match its fields (set by ``from_trusted_values``), so
    # encoding is a copy. Not a dataclass field: never compared, replaced or printed.
    _wire = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        time_ = float(self.time)
        if not math.isfinite(time_):
            raise RecordError(f"time is {self.time!r}, which is not finite")
        set_(self, "time", time_)
        if isinstance(self.id, (bool, np.bool_)) or not isinstance(self.id, (int, np.integer)):
            raise RecordError(f"id must be an integer, got {self.id!r}")
        if not _I32.min <= int(self.id) <= _I32.max:
            raise RecordError(f"id {self.id} does not fit the wire's signed 32-bit field")
        set_(self, "id", int(self.id))
        for name in ("width", "height", "eye_right", "eye_left", "pnp_error"):
            set_(self, name, _f32(getattr(self, name), name))
        set_(self, "success", bool(self.success))
        set_(self, "quaternion", _frozen_array(self.quaternion, (4,), "quaternion"))
        set_(self, "euler", _frozen_array(self.euler, (3,), "euler"))
        set_(self, "translation", _frozen_array(self.translation, (3,), "translation"))
        set_(self, "confidence", _frozen_array(self.confidence, (NUM_POINTS,), "confidence"))
        set_(self, "points", _frozen_array(self.points, (NUM_POINTS, 2), "points"))
        set_(self, "points3d", _frozen_array(self.points3d, (NUM_POINTS_3D, 3), "points3d"))
        if not isinstance(self.features, Mapping):
            raise RecordError(f"features must be a mapping of {len(FEATURE_NAMES)} names to floats")
        unknown = set(self.features) - set(FEATURE_NAMES)
        missing = [name for name in FEATURE_NAMES if name not in self.features]
        if unknown or missing:
            raise RecordError(
                f"features must hold exactly {FEATURE_NAMES}; unknown {sorted(unknown)}, missing {missing}"
            )
        ordered = {name: _f32(self.features[name], f"features[{name!r}]") for name in FEATURE_NAMES}
        set_(self, "features", MappingProxyType(ordered))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OpenSeeFaceRecord):
            return NotImplemented
        return encode_record(self) == encode_record(other)

    __hash__ = None  # type: ignore[assignment]  # numpy fields make records unhashable

    def to_array(self) -> np.ndarray:
        """The record as a 0-d array of :data:`RECORD_DTYPE` (what goes on the wire)."""
        out = np.zeros((), dtype=RECORD_DTYPE)
        _fill(out, self)
        return out

    @classmethod
    def from_array(cls, row: np.void | np.ndarray) -> OpenSeeFaceRecord:
        """Build a record from one element of a :data:`RECORD_DTYPE` array (values must be finite)."""
        return cls(
            time=float(row["time"]),
            id=int(row["id"]),
            width=float(row["size"][0]),
            height=float(row["size"][1]),
            eye_right=float(row["eyes"][0]),
            eye_left=float(row["eyes"][1]),
            success=bool(row["success"]),
            pnp_error=float(row["pnp_error"]),
            quaternion=row["quaternion"],
            euler=row["euler"],
            translation=row["translation"],
            confidence=row["confidence"],
            points=row["points"],
            points3d=row["points3d"],
            features=dict(zip(FEATURE_NAMES, row["features"].tolist())),
        )

    @classmethod
    def from_trusted_values(
        cls,
        *,
        time: float,
        id: int,
        width: float,
        height: float,
        eye_right: float,
        eye_left: float,
        success: bool,
        pnp_error: float,
        quaternion: Sequence[float],
        euler: Sequence[float],
        translation: Sequence[float],
        confidence: float | np.ndarray,
        points: np.ndarray,
        points3d: np.ndarray,
        features: Sequence[float],
    ) -> OpenSeeFaceRecord:
        """Fast constructor for producers whose values already have the right types (the tracker).

        Same fields as the constructor, except ``features``: the 14 values in :data:`FEATURE_NAMES`
        order, and ``confidence``: one value for all points, or 68. Arrays must have their wire shapes.
        The values are written straight into the wire layout (rounding to float32 as the wire does)
        and checked only for what the layout cannot guarantee: finite floats, array shapes, ranges.
        The record equals the one the constructor builds from the same values, and encoding it is a
        copy of its bytes. Raises :class:`RecordError` like the constructor.
        """
        buffer = bytearray(RECORD_SIZE)
        try:
            _HEADER.pack_into(buffer, 0, time, id, width, height, eye_right, eye_left, bool(success), pnp_error)
            _POSE.pack_into(buffer, _POSE_OFFSET, *quaternion, *euler, *translation)
            _FEATURES.pack_into(buffer, _FEATURES_OFFSET, *features)
        except (struct.error, OverflowError, TypeError) as exc:
            raise RecordError(f"a scalar, quaternion/euler/translation or feature value does not fit the "
                              f"wire format: {exc}") from exc
        row = np.ndarray((), dtype=RECORD_DTYPE, buffer=buffer)
        for name, value in (("confidence", confidence), ("points", points), ("points3d", points3d)):
            shape = np.shape(value)
            if shape != RECORD_DTYPE[name].shape and not (name == "confidence" and shape == ()):
                raise RecordError(f"{name} must have shape {RECORD_DTYPE[name].shape}, got {shape}")
            row[name] = value
        wire = bytes(buffer)
        if not _record_is_finite(wire):
            bad = _first_non_finite(wire)
            raise RecordError(f"{bad[1] if bad else 'a value'} contains NaN or inf; consumers cannot handle "
                              f"non-finite values")
        return cls._from_wire(wire)

    @classmethod
    def _from_wire(cls, wire: bytes) -> OpenSeeFaceRecord:
        """The record held by one record's worth of checked, immutable wire bytes (arrays are views)."""
        rec = object.__new__(cls)
        set_ = object.__setattr__
        time_, id_, width, height, eye_right, eye_left, success, pnp_error = _HEADER.unpack_from(wire)
        for name, value in (("time", time_), ("id", id_), ("width", width), ("height", height),
                            ("eye_right", eye_right), ("eye_left", eye_left), ("success", success != 0),
                            ("pnp_error", pnp_error)):
            set_(rec, name, value)
        row = np.frombuffer(wire, dtype=RECORD_DTYPE).reshape(())  # fields of a 0-d array are cheap views
        for name in ("quaternion", "euler", "translation", "confidence", "points", "points3d"):
            set_(rec, name, row[name])
        features = _FEATURES.unpack_from(wire, _FEATURES_OFFSET)
        set_(rec, "features", MappingProxyType(dict(zip(FEATURE_NAMES, features))))
        set_(rec, "_wire", wire)
        return rec

    @classmethod
    def _from_valid_row(cls, row: np.void) -> OpenSeeFaceRecord:
        """Fast path for rows checked by :func:`decode_array`: shares its read-only memory.

        Skips the validation of ``__post_init__`` (shapes and float32 values hold by
        construction, finiteness was checked) but produces the same normalised fields.
        """
        rec = object.__new__(cls)
        set_ = object.__setattr__
        size, eyes = row["size"].tolist(), row["eyes"].tolist()
        set_(rec, "time", float(row["time"]))
        set_(rec, "id", int(row["id"]))
        set_(rec, "width", size[0])
        set_(rec, "height", size[1])
        set_(rec, "eye_right", eyes[0])
        set_(rec, "eye_left", eyes[1])
        set_(rec, "success", bool(row["success"]))
        set_(rec, "pnp_error", float(row["pnp_error"]))
        for name in ("quaternion", "euler", "translation", "confidence", "points", "points3d"):
            array = row[name]
            if array.flags.writeable:  # only when handed a writable array directly
                array = array.copy()
                array.setflags(write=False)
            set_(rec, name, array)
        set_(rec, "features", MappingProxyType(dict(zip(FEATURE_NAMES, row["features"].tolist()))))
        return rec


def _fill(target: np.ndarray, rec: OpenSeeFaceRecord) -> None:
    """Write ``rec`` into one element of a RECORD_DTYPE array."""
    target["time"] = rec.time
    target["id"] = rec.id
    target["size"] = (rec.width, rec.height)
    target["eyes"] = (rec.eye_right, rec.eye_left)
    target["success"] = 1 if rec.success else 0
    target["pnp_error"] = rec.pnp_error
    target["quaternion"] = rec.quaternion
    target["euler"] = rec.euler
    target["translation"] = rec.translation
    target["confidence"] = rec.confidence
    target["points"] = rec.points
    target["points3d"] = rec.points3d
    target["features"] = [rec.features[name] for name in FEATURE_NAMES]


def encode_record(rec: OpenSeeFaceRecord) -> bytes:
    """The 1785 wire bytes of one record."""
    if rec._wire is not None:
        return rec._wire
    return rec.to_array().tobytes()


def encode_datagram(records: Iterable[OpenSeeFaceRecord]) -> bytes:
    """One datagram holding ``records`` back to back.

    At least one record is needed: OpenSeeFace sends nothing when no face is tracked.
    """
    records = list(records)
    if not records:
        raise RecordError("a datagram needs at least one record; send nothing when no face is tracked")
    for i, rec in enumerate(records):
        if not isinstance(rec, OpenSeeFaceRecord):
            raise RecordError(f"records[{i}] is a {type(rec).__name__}, not an OpenSeeFaceRecord")
    if all(rec._wire is not None for rec in records):  # records from from_trusted_values (the tracker)
        return b"".join(rec._wire for rec in records)
    out = np.zeros(len(records), dtype=RECORD_DTYPE)
    for i, rec in enumerate(records):
        _fill(out[i], rec)
    return out.tobytes()


def decode_array(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Validate a datagram and view it as a read-only RECORD_DTYPE array (no per-record objects).

    Raises :class:`DatagramError` when the length is not a positive multiple of
    :data:`RECORD_SIZE` or when any float is NaN or infinite.
    """
    size = len(data)
    if size == 0 or size % RECORD_SIZE:
        raise DatagramError(
            f"datagram is {size} bytes; OpenSeeFace datagrams are a positive multiple of {RECORD_SIZE}",
            reason="length",
        )
    buffer = bytes(data)  # immutable, so the views handed out below can never change
    bad = _first_non_finite(buffer)
    if bad is not None:
        raise DatagramError(f"record {bad[0]} has a NaN or infinite {bad[1]!r}", reason="non_finite")
    return np.frombuffer(buffer, dtype=RECORD_DTYPE)


def decode_datagram(data: bytes | bytearray | memoryview) -> list[OpenSeeFaceRecord]:
    """Decode a datagram into one record per face, in wire order.

    Raises :class:`DatagramError` (a ``ValueError``) for a length that is not a positive
    multiple of 1785 bytes and for NaN/inf values; nothing else escapes for any input bytes.
    """
    return [OpenSeeFaceRecord._from_valid_row(row) for row in decode_array(data)]

