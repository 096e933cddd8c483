"""Hostile input for the decoder and a live receiver: only DatagramError may escape, state stays right."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facewire.client.protocol import (
    FEATURE_NAMES,
    RECORD_DTYPE,
    RECORD_SIZE,
    DatagramError,
    OpenSeeFaceRecord,
    decode_datagram,
    encode_datagram,
)
from facewire.client.receiver import OpenSeeFaceReceiver

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "openseeface_reference"

# Byte offsets of every float32 inside a record (the f64 time is handled separately).
_FLOAT_OFFSETS = [
    RECORD_DTYPE.fields[name][1] + 4 * i
    for name in RECORD_DTYPE.names
    if RECORD_DTYPE[name].base == np.dtype("<f4")
    for i in range(int(np.prod(RECORD_DTYPE[name].shape or (1,))))
]


def _reference_datagrams() -> list[bytes]:
    return [p.read_bytes() for p in sorted(REFERENCE.glob("*.bin"))]


def _synthetic_datagram(seed: int, faces: int) -> bytes:
    rng = np.random.default_rng(seed)
    records = [
        OpenSeeFaceRecord(
            time=float(rng.uniform(0, 2e9)),
            id=int(rng.integers(0, 4)),
            width=640.0,
            height=480.0,
            eye_right=float(rng.random()),
            eye_left=float(rng.random()),
            success=bool(rng.integers(2)),
            pnp_error=float(rng.random()),
            quaternion=rng.normal(size=4),
            euler=rng.normal(size=3),
            translation=rng.normal(size=3),
            confidence=rng.random(68),
            points=rng.random((68, 2)) * 480,
            points3d=rng.normal(size=(70, 3)),
            features=dict(zip(FEATURE_NAMES, rng.normal(size=14).tolist())),
        )
        for _ in range(faces)
    ]
    return encode_datagram(records)


# Valid material to mutate: the real captures when present, synthetic records always.
_VALID = _reference_datagrams() + [_synthetic_datagram(seed, 1 + seed % 3) for seed in range(6)]


# Indices rather than the bytes themselves keep Hypothesis' reprs small.
_VALID_DATAGRAMS = st.integers(0, len(_VALID) - 1).map(lambda i: _VALID[i])


def _decode_or_error(data: bytes) -> list[OpenSeeFaceRecord] | None:
    """Decode, allowing only DatagramError; None for an invalid datagram."""
    try:
        return decode_datagram(data)
    except DatagramError:
        return None


def _canonical(data: bytes) -> bytes:
    """``data`` with each record's success byte normalised to 0/1, as re-encoding writes it."""
    out = bytearray(data)
    for start in range(0, len(out), RECORD_SIZE):
        out[start + 28] = 1 if out[start + 28] else 0
    return bytes(out)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid datagram with random byte edits, float overwrites, truncation or extension."""
    data = bytearray(draw(_VALID_DATAGRAMS))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["byte", "float", "nan", "truncate", "extend", "duplicate"]))
        if kind == "byte" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "float" and len(data) >= RECORD_SIZE:
            start = RECORD_SIZE * draw(st.integers(0, len(data) // RECORD_SIZE - 1))
            value = draw(st.floats(width=32, allow_nan=True, allow_infinity=True))
            struct.pack_into("<f", data, start + draw(st.sampled_from(_FLOAT_OFFSETS)), value)
        elif kind == "nan" and len(data) >= RECORD_SIZE:
            start = RECORD_SIZE * draw(st.integers(0, len(data) // RECORD_SIZE - 1))
            struct.pack_into("<f", data, start + draw(st.sampled_from(_FLOAT_OFFSETS)), float("nan"))
        elif kind == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=2 * RECORD_SIZE))
        elif kind == "duplicate" and len(data) < 20 * RECORD_SIZE:
            data += data[:RECORD_SIZE]
    return bytes(data)


_ANY_DATAGRAM = st.one_of(
    st.binary(max_size=4 * RECORD_SIZE),
    st.integers(1, 4).flatmap(lambda n: st.binary(min_size=n * RECORD_SIZE, max_size=n * RECORD_SIZE)),
    mutated(),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ANY_DATAGRAM)
def test_decoder_raises_only_datagram_error(data: bytes) -> None:
    records = _decode_or_error(data)
    if records is None:
        return
    assert len(data) % RECORD_SIZE == 0 and len(records) == len(data) // RECORD_SIZE
    # Whatever decodes re-encodes to the same bytes (up to the 0/1 normalisation of the flag).
    assert encode_datagram(records) == _canonical(data)
    for rec in records:
        assert all(np.isfinite(getattr(rec, n)).all() for n in ("quaternion", "points", "points3d"))


@settings(max_examples=300, deadline=None)
@given(_VALID_DATAGRAMS, st.data())
def test_any_nan_or_inf_is_rejected(data: bytes, draw: st.DataObject) -> None:
    mutable = bytearray(data)
    record = draw.draw(st.integers(0, len(data) // RECORD_SIZE - 1))
    bad = draw.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    if draw.draw(st.booleans()):
        struct.pack_into("<d", mutable, record * RECORD_SIZE, bad)  # the f64 time
    else:
        offset = draw.draw(st.sampled_from(_FLOAT_OFFSETS))
        struct.pack_into("<f", mutable, record * RECORD_SIZE + offset, bad)
    with pytest.raises(DatagramError) as info:
        decode_datagram(bytes(mutable))
    assert info.value.reason == "non_finite"


# --- a live receiver -------------------------------------------------------------------------


@dataclass
class _Model:
    """What the receiver must hold after everything sent so far."""

    faces: dict[int, OpenSeeFaceRecord] = field(default_factory=dict)
    sent: int = 0
    accepted: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class _Rig:
    receiver: OpenSeeFaceReceiver
    sender: socket.socket
    model: _Model


@pytest.fixture(scope="module")
def rig() -> Iterator[_Rig]:
    receiver = OpenSeeFaceReceiver(host="127.0.0.1", port=0, expire_after=None)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        yield _Rig(receiver, sender, _Model())
    finally:
        sender.close()
        receiver.close()
    assert not receiver.running


def _wait_until_received(receiver: OpenSeeFaceReceiver, count: int) -> None:
    deadline = time.monotonic() + 10.0
    while receiver.stats().received < count:
        if time.monotonic() > deadline:
            pytest.fail(f"receiver saw {receiver.stats().received} of {count} datagrams sent on loopback")
        time.sleep(0.0005)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(st.binary(max_size=3 * RECORD_SIZE), mutated(), _VALID_DATAGRAMS), min_size=1, max_size=12
    )
)
def test_live_receiver_survives_and_keeps_the_last_valid_record_per_face(
    rig: _Rig, datagrams: list[bytes]
) -> None:
    model = rig.model
    for data in datagrams:
        rig.sender.sendto(data, rig.receiver.address)
        model.sent += 1
        try:
            records = decode_datagram(data)
        except DatagramError as exc:
            model.dropped[exc.reason] = model.dropped.get(exc.reason, 0) + 1
            continue
        model.accepted += 1
        for rec in records:
            model.faces[rec.id] = rec
    _wait_until_received(rig.receiver, model.sent)

    assert rig.receiver.running
    stats = rig.receiver.stats()
    assert stats.received == model.sent
    assert stats.accepted == model.accepted
    assert dict(stats.dropped) == model.dropped
    assert stats.received == stats.accepted + stats.dropped_total
    faces = rig.receiver.faces()
    assert set(faces) == set(model.faces)
    for face_id, rec in model.faces.items():
        assert faces[face_id] == rec
