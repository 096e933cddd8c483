"""The OpenSeeFace wire format against real datagrams captured from OpenSeeFace itself."""

from __future__ import annotations

import csv
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from facewire.client.protocol import (
    FEATURE_NAMES,
    RECORD_DTYPE,
    RECORD_SIZE,
    DatagramError,
    OpenSeeFaceRecord,
    RecordError,
    decode_datagram,
    encode_datagram,
    encode_record,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REFERENCE = DATA / "openseeface_reference"


@pytest.fixture(scope="module")
def reference() -> Path:
    if not (REFERENCE / "README.md").is_file():
        pytest.skip(f"OpenSeeFace reference captures not found at {REFERENCE.resolve()}")
    return REFERENCE


def _csv_rows(reference: Path) -> dict[int, list[str]]:
    """CSV rows keyed by their 1-based Frame column (the header is short; read by position)."""
    with open(reference / "hamilton_m0_log.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:3] == ["Frame", "Time", "Width"]
    return {int(row[0]): row for row in rows[1:]}


def _readme_frames(reference: Path) -> dict[str, int]:
    """File name -> 0-based frame, from the README table."""
    text = (reference / "README.md").read_text()
    row = re.compile(r"^\| (hamilton_\S+\.bin) \|[^|]*\| (\d+) \|", re.M)
    frames = {m.group(1): int(m.group(2)) for m in row.finditer(text)}
    assert frames, "README table of hamilton captures not found"
    return frames


def _floats(cells: list[str]) -> np.ndarray:
    return np.array([float(c) for c in cells], dtype=np.float64)


def test_dtype_offsets_match_the_documented_layout() -> None:
    offsets = {name: RECORD_DTYPE.fields[name][1] for name in RECORD_DTYPE.names}
    assert offsets == {
        "time": 0, "id": 8, "size": 12, "eyes": 20, "success": 28, "pnp_error": 29, "quaternion": 33,
        "euler": 49, "translation": 61, "confidence": 73, "points": 345, "points3d": 889, "features": 1729,
    }
    assert RECORD_DTYPE.itemsize == RECORD_SIZE == 1785


def test_encoded_bytes_sit_where_struct_says() -> None:
    rec = _random_record(np.random.default_rng(7), face_id=-12345)
    data = encode_record(rec)
    assert len(data) == 1785
    assert struct.unpack_from("<d", data, 0)[0] == rec.time
    assert struct.unpack_from("<i", data, 8)[0] == -12345
    assert struct.unpack_from("<ff", data, 12) == (rec.width, rec.height)
    assert struct.unpack_from("<ff", data, 20) == (rec.eye_right, rec.eye_left)
    assert data[28] == (1 if rec.success else 0)
    assert struct.unpack_from("<f", data, 29)[0] == rec.pnp_error
    assert struct.unpack_from("<4f", data, 33) == tuple(rec.quaternion.tolist())
    assert struct.unpack_from("<68f", data, 73) == tuple(rec.confidence.tolist())
    # Points are (x, y) pairs: x of point 5 is the 11th float of the block.
    assert struct.unpack_from("<f", data, 345 + 4 * 10)[0] == rec.points[5, 0]
    assert struct.unpack_from("<f", data, 889 + 4 * (3 * 69 + 2))[0] == rec.points3d[69, 2]
    assert struct.unpack_from("<14f", data, 1729) == tuple(rec.features[name] for name in FEATURE_NAMES)


def test_every_reference_datagram_decodes_and_reencodes_byte_for_byte(reference: Path) -> None:
    files = sorted(reference.glob("*.bin"))
    assert len(files) == 14
    for path in files:
        data = path.read_bytes()
        records = decode_datagram(data)
        assert len(records) == len(data) // RECORD_SIZE
        assert encode_datagram(records) == data, path.name
        assert b"".join(encode_record(r) for r in records) == data


def test_hamilton_datagrams_match_the_csv_log(reference: Path) -> None:
    rows = _csv_rows(reference)
    frames = _readme_frames(reference)
    assert len(frames) == 7
    for name, frame in frames.items():
        (rec,) = decode_datagram((reference / name).read_bytes())
        row = rows[frame + 1]  # CSV Frame counts from 1
        f32 = lambda cells: _floats(cells).astype(np.float32)  # noqa: E731 - wire precision
        assert rec.time == float(row[1])
        assert (rec.width, rec.height) == tuple(f32(row[2:4]))
        assert rec.id == int(row[6])
        assert (rec.eye_right, rec.eye_left) == tuple(f32(row[7:9]))
        assert rec.success is (row[10] == "True")
        assert rec.pnp_error == f32(row[11:12])[0]
        np.testing.assert_array_equal(rec.quaternion, f32(row[12:16]))
        np.testing.assert_array_equal(rec.euler, f32(row[16:19]))
        np.testing.assert_array_equal(rec.translation, f32(row[22:25]))
        landmarks = f32(row[25:229]).reshape(68, 3)  # X, Y, Confidence for 66 points + 2 pupils
        np.testing.assert_array_equal(rec.points, landmarks[:, :2])
        np.testing.assert_array_equal(rec.confidence, landmarks[:, 2])
        np.testing.assert_array_equal(rec.points3d, f32(row[229:439]).reshape(70, 3))
        assert list(rec.features.values()) == f32(row[439:453]).tolist()
        assert len(row) == 453


def test_points_are_x_then_y(reference: Path) -> None:
    (rec,) = decode_datagram((reference / "hamilton_m0_pkt0000.bin").read_bytes())
    # In a 640x360 image only x can exceed 360; OpenSeeFace's internal (row, col) is swapped on the wire.
    assert rec.points[:, 0].max() > rec.height
    assert (rec.points[:, 0] < rec.width).all() and (rec.points[:, 1] < rec.height).all()
    # The jaw (0..16) runs from the image left to the image right.
    assert rec.points[16, 0] - rec.points[0, 0] > 30


def test_two_face_datagrams_hold_two_distinct_faces(reference: Path) -> None:
    files = sorted(reference.glob("two_faces_*.bin"))
    assert len(files) == 7
    for path in files:
        records = decode_datagram(path.read_bytes())
        assert len(records) == 2
        assert {r.id for r in records} == {0, 1}
        assert all((r.width, r.height) == (640.0, 360.0) for r in records)
        # The faces are the two people, left and right halves of the image.
        xs = sorted(float(r.points[:66, 0].mean()) for r in records)
        assert xs[0] < 320 < xs[1]


def _random_record(rng: np.random.Generator, face_id: int | None = None) -> OpenSeeFaceRecord:
    def f(*shape: int) -> np.ndarray:
        return rng.normal(0, 1000, shape).astype(np.float32)

    return OpenSeeFaceRecord(
        time=float(rng.uniform(0, 2e9)),
        id=int(rng.integers(-(2**31), 2**31)) if face_id is None else face_id,
        width=float(f(1)[0]),
        height=float(f(1)[0]),
        eye_right=float(rng.random()),
        eye_left=float(rng.random()),
        success=bool(rng.integers(2)),
        pnp_error=float(f(1)[0]),
        quaternion=f(4),
        euler=f(3),
        translation=f(3),
        confidence=rng.random(68),
        points=f(68, 2),
        points3d=f(70, 3),
        features=dict(zip(FEATURE_NAMES, f(14).tolist())),
    )


def test_random_records_round_trip_every_field() -> None:
    rng = np.random.default_rng(1234)
    for _ in range(200):
        rec = _random_record(rng)
        (back,) = decode_datagram(encode_record(rec))
        assert back == rec
        for name in ("time", "id", "width", "height", "eye_right", "eye_left", "success", "pnp_error"):
            assert getattr(back, name) == getattr(rec, name), name
        for name in ("quaternion", "euler", "translation", "confidence", "points", "points3d"):
            np.testing.assert_array_equal(getattr(back, name), getattr(rec, name), err_msg=name)
        assert dict(back.features) == dict(rec.features)
    many = [_random_record(rng) for _ in range(5)]
    assert decode_datagram(encode_datagram(many)) == many


def test_construction_rounds_to_wire_precision_and_freezes() -> None:
    rec = _random_record(np.random.default_rng(3))
    value = 0.1  # not representable in float32
    rounded = OpenSeeFaceRecord(**{**_fields(rec), "pnp_error": value})
    assert rounded.pnp_error == float(np.float32(value)) != value
    assert decode_datagram(encode_record(rounded))[0] == rounded
    with pytest.raises(ValueError):
        rec.points[0, 0] = 1.0
    with pytest.raises(TypeError):
        rec.features["eye_l"] = 1.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        rec.id = 3  # type: ignore[misc]
    assert list(rec.features) == list(FEATURE_NAMES)


def _fields(rec: OpenSeeFaceRecord) -> dict:
    return {name: getattr(rec, name) for name in rec.__dataclass_fields__}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"points": np.zeros((66, 2))}, "points must have shape"),
        ({"points3d": np.zeros((68, 3))}, "points3d must have shape"),
        ({"confidence": np.zeros(66)}, "confidence must have shape"),
        ({"quaternion": [0, 0, 1]}, "quaternion must have shape"),
        ({"id": 2**31}, "32-bit"),
        ({"id": 1.5}, "integer"),
        ({"features": {"eye_l": 1.0}}, "missing"),
        ({"features": {**dict.fromkeys(FEATURE_NAMES, 0.0), "smile": 1.0}}, "unknown"),
        ({"euler": [0, float("nan"), 0]}, "NaN or inf"),
        ({"width": float("inf")}, "not finite"),
        ({"pnp_error": 1e39}, "not finite"),
        ({"time": float("nan")}, "not finite"),
    ],
)
def test_invalid_records_are_rejected_with_a_clear_message(change: dict, message: str) -> None:
    rec = _random_record(np.random.default_rng(5))
    with pytest.raises(RecordError, match=message):
        OpenSeeFaceRecord(**{**_fields(rec), **change})


@pytest.mark.parametrize("size", [0, 1, 28, 1784, 1786, 2 * 1785 - 1, 2 * 1785 + 1, 65507])
def test_wrong_lengths_raise_datagram_error(size: int) -> None:
    with pytest.raises(DatagramError, match="multiple of 1785") as info:
        decode_datagram(bytes(size))
    assert info.value.reason == "length"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("offset", [0, 12, 16, 20, 24, 29, 33, 49, 61, 73, 345 + 4 * 135, 889, 1729 + 4 * 13])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_raise_datagram_error(reference: Path, offset: int, bad: float) -> None:
    data = bytearray((reference / "two_faces_m0_pkt0010.bin").read_bytes())
    fmt = "<d" if offset == 0 else "<f"
    struct.pack_into(fmt, data, RECORD_SIZE + offset, bad)  # second record
    with pytest.raises(DatagramError, match="record 1") as info:
        decode_datagram(bytes(data))
    assert info.value.reason == "non_finite"


def test_encode_datagram_needs_records() -> None:
    with pytest.raises(RecordError, match="at least one"):
        encode_datagram([])
    with pytest.raises(RecordError, match="not an OpenSeeFaceRecord"):
        encode_datagram([object()])  # type: ignore[list-item]


def test_success_flag_any_nonzero_byte_is_true() -> None:
    rec = _random_record(np.random.default_rng(9))
    data = bytearray(encode_record(rec))
    data[28] = 7
    (back,) = decode_datagram(bytes(data))
    assert back.success is True
    assert encode_record(back)[28] == 1


def _raw_fields(rng: np.random.Generator) -> dict:
    """Constructor arguments in float64 (not yet at wire precision), so both constructors must round."""

    def f(*shape: int) -> np.ndarray:
        return rng.normal(0, 1000, shape) * 10.0 ** rng.integers(-30, 30, shape)

    return dict(
        time=float(rng.uniform(0, 2e9)),
        id=int(rng.integers(-(2**31), 2**31)),
        width=float(rng.uniform(1, 4000)),
        height=float(rng.uniform(1, 4000)),
        eye_right=float(rng.random()),
        eye_left=float(rng.random()),
        success=bool(rng.integers(2)),
        pnp_error=float(f(1)[0]),
        quaternion=f(4),
        euler=f(3),
        translation=f(3),
        confidence=rng.random(68),
        points=f(68, 2),
        points3d=f(70, 3),
        features=dict(zip(FEATURE_NAMES, f(14).tolist())),
    )


def _trusted(fields: dict) -> OpenSeeFaceRecord:
    trusted = {**fields, "features": [fields["features"][name] for name in FEATURE_NAMES]}
    for name in ("quaternion", "euler", "translation"):
        trusted[name] = tuple(np.asarray(fields[name]).tolist())
    return OpenSeeFaceRecord.from_trusted_values(**trusted)


def test_trusted_constructor_builds_the_same_record_as_the_public_one() -> None:
    rng = np.random.default_rng(77)
    for _ in range(200):
        fields = _raw_fields(rng)
        public, fast = OpenSeeFaceRecord(**fields), _trusted(fields)
        assert fast == public
        assert encode_record(fast) == encode_record(public) == public.to_array().tobytes()
        for name in ("time", "id", "width", "height", "eye_right", "eye_left", "success", "pnp_error"):
            assert getattr(fast, name) == getattr(public, name), name
            assert type(getattr(fast, name)) is type(getattr(public, name)), name
        for name in ("quaternion", "euler", "translation", "confidence", "points", "points3d"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(public, name), err_msg=name)
            assert getattr(fast, name).dtype == np.float32 and not getattr(fast, name).flags.writeable
        assert list(fast.features.items()) == list(public.features.items())
        with pytest.raises(TypeError):
            fast.features["eye_l"] = 1.0  # type: ignore[index]
    # One confidence for every point is broadcast, as the tracker sends it.
    fields = _raw_fields(rng)
    assert _trusted({**fields, "confidence": 0.7}) == OpenSeeFaceRecord(**{**fields, "confidence": np.full(68, 0.7)})


def test_trusted_records_encode_like_public_ones_in_any_mix() -> None:
    rng = np.random.default_rng(78)
    fields = [_raw_fields(rng) for _ in range(4)]
    public = [OpenSeeFaceRecord(**f) for f in fields]
    mixed = [_trusted(f) if k % 2 else OpenSeeFaceRecord(**f) for k, f in enumerate(fields)]
    trusted = [_trusted(f) for f in fields]
    assert encode_datagram(trusted) == encode_datagram(mixed) == encode_datagram(public)
    assert decode_datagram(encode_datagram(trusted)) == public


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"time": float("nan")}, "NaN or inf"),
        ({"width": float("inf")}, "NaN or inf"),
        ({"eye_left": float("nan")}, "NaN or inf"),
        ({"pnp_error": float("-inf")}, "NaN or inf"),
        ({"euler": [0.0, float("nan"), 0.0]}, "NaN or inf"),
        ({"confidence": float("nan")}, "NaN or inf"),
        ({"features": [0.0] * 13 + [float("inf")]}, "NaN or inf"),
        ({"pnp_error": 1e39}, "does not fit"),
        ({"id": 2**31}, "does not fit"),
        ({"quaternion": (0.0, 0.0, 1.0)}, "does not fit"),
        ({"features": [0.0] * 13}, "does not fit"),
        ({"points": np.zeros((66, 2))}, "points must have shape"),
        ({"points": np.zeros(2)}, "points must have shape"),
        ({"confidence": np.zeros(66)}, "confidence must have shape"),
    ],
)
def test_trusted_constructor_still_rejects_what_the_wire_cannot_carry(change: dict, message: str) -> None:
    fields = _raw_fields(np.random.default_rng(6))
    trusted = {**fields, "features": [0.0] * 14, "quaternion": (0.0, 0.0, 0.0, 1.0)}
    OpenSeeFaceRecord.from_trusted_values(**trusted)  # valid as it stands
    with pytest.raises(RecordError, match=message):
        OpenSeeFaceRecord.from_trusted_values(**{**trusted, **change})


@pytest.mark.parametrize(("name", "index"), [("points", (67, 1)), ("points3d", (69, 2)), ("quaternion", 3)])
def test_trusted_constructor_names_the_non_finite_field(name: str, index: tuple | int) -> None:
    fields = _raw_fields(np.random.default_rng(8))
    trusted = {**fields, "features": [0.0] * 14, "quaternion": [0.0, 0.0, 0.0, 1.0]}
    bad = np.array(trusted[name], dtype=np.float64)
    bad[index] = np.nan
    with pytest.raises(RecordError, match=f"^{name} contains NaN"):
        OpenSeeFaceRecord.from_trusted_values(**{**trusted, name: bad})
