"""msgpack output on loopback from a real run: the schema of client/PROTOCOL.md, no-face frames,
splitting, the receiver's validation and the head turn's sign."""
from __future__ import annotations

import dataclasses
import socket
import time

import msgpack
import numpy as np
import pytest

from facewire.client.arkit import ARKIT_NAMES
from facewire.client.msgpack_frame import MAX_DATAGRAM, SCHEMA_VERSION, decode_frame
from facewire.client.msgpack_receiver import MsgpackReceiver
from facewire.client.protocol import FEATURE_NAMES, DatagramError
from facewire.tracker.outputs import parse_output_url

from outputs_support import turning_frames, video_frames

# The schema of client/PROTOCOL.md: key -> check of the value.
HEADER = {"v": lambda v: v == SCHEMA_VERSION, "frame": lambda v: isinstance(v, int) and v >= 1,
          "time": lambda v: isinstance(v, float) and v > 1.6e9, "mono": lambda v: isinstance(v, float),
          "sent": lambda v: isinstance(v, float), "size": lambda v: len(v) == 2 and all(isinstance(x, int) for x in v),
          "part": lambda v: len(v) == 2 and 0 <= v[0] < v[1], "faces": lambda v: isinstance(v, list)}


def _floats(n):
    return lambda v: isinstance(v, list) and len(v) == n and all(isinstance(x, float) for x in v)


def _bin(n):
    return lambda v: isinstance(v, bytes) and len(v) == 4 * n


FACE = {"slot": lambda v: isinstance(v, int), "id": lambda v: isinstance(v, int), "box": _floats(4),
        "conf": lambda v: isinstance(v, float) and 0 <= v <= 1, "ypr": _floats(3), "quat": _floats(4),
        "trans": _floats(3), "gaze": lambda v: len(v) == 2 and all(_floats(3)(g) for g in v), "eyes": _floats(2),
        "pts68": _bin(136), "feat": _bin(len(FEATURE_NAMES)), "blend": lambda v: v is None or _bin(52)(v)}


def _check_schema(data: bytes, mesh: bool) -> dict:
    body = msgpack.unpackb(data)
    assert list(body) == list(HEADER)                               # documented keys, documented order
    assert all(check(body[key]) for key, check in HEADER.items()), body
    for face in body["faces"]:
        assert set(face) == set(FACE) | ({"mesh"} if mesh else set())
        assert all(check(face[key]) for key, check in FACE.items()), face
        if mesh:
            assert _bin(478 * 3)(face["mesh"])
    return body


@pytest.fixture
def collector():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)

    def drain() -> list[bytes]:
        out = []
        while True:
            try:
                out.append(sock.recv(65535))
            except socket.timeout:
                return out
    yield sock.getsockname()[1], drain
    sock.close()


@pytest.mark.parametrize("mesh", [False, True])
def test_real_run_matches_the_schema_including_no_face_frames(collector, mesh):
    port, drain = collector
    frames = video_frames()
    with parse_output_url(f"msgpack://127.0.0.1:{port}", mesh=mesh) as output:
        assert output.needs == ({"pose", "blendshapes", "mesh"} if mesh else {"pose", "blendshapes"})
        for frame in frames:
            output.send(frame)
    datagrams = drain()
    assert len(datagrams) == len(frames)                            # every frame, the empty ones too
    for frame, data in zip(frames, datagrams):
        body = _check_schema(data, mesh)
        decoded = decode_frame(data)
        assert (decoded.frame, decoded.width, decoded.height, decoded.part, decoded.parts) == \
            (frame.frame, frame.width, frame.height, 0, 1)
        assert decoded.capture_time == frame.capture_time and decoded.send_time == frame.send_time
        assert len(decoded.faces) == len(frame.faces) == len(body["faces"])
        for got, face in zip(decoded.faces, frame.faces):
            assert (got.id, got.slot) == (face.id, face.slot)
            assert (got.yaw, got.pitch, got.roll) == pytest.approx((face.pose.yaw, face.pose.pitch, face.pose.roll),
                                                                   abs=1e-4)
            np.testing.assert_allclose(got.quaternion, face.pose.quaternion, atol=1e-6)
            np.testing.assert_allclose(got.points68, face.points68, atol=1e-4)
            np.testing.assert_allclose([got.blendshapes[n] for n in ARKIT_NAMES], face.blendshapes, atol=1e-7)
            assert got.features["mouth_open"] == pytest.approx(face.feature("mouth_open"), abs=1e-6)
            assert got.eye_open_left == pytest.approx(face.eye_open_left, abs=1e-6)
            np.testing.assert_allclose(got.gaze_left, face.gaze_left, atol=1e-6)
            if mesh:
                np.testing.assert_allclose(got.mesh, face.mesh, atol=1e-4)
            else:
                assert got.mesh is None
    assert [len(decode_frame(d).faces) for d in datagrams[-3:]] == [0, 0, 0]


def test_receiver_keeps_newest_face_and_empty_frames(collector):
    frames = video_frames()
    arrived = []
    with MsgpackReceiver(port=0, on_frame=arrived.append) as receiver:
        with parse_output_url(f"msgpack://127.0.0.1:{receiver.address[1]}") as output:
            for frame in frames:
                output.send(frame)
                time.sleep(0.002)
        deadline = time.monotonic() + 3
        while len(arrived) < len(frames) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(arrived) == len(frames)
        assert [len(faces) for faces in arrived] == [len(f.faces) for f in frames]
        assert receiver.latest_frame().frame == frames[-1].frame and receiver.latest_frame().faces == ()
        last_face = [f for f in frames if f.faces][-1].faces[0]
        assert receiver.latest(last_face.id).frame == [f for f in frames if f.faces][-1].frame
        stats = receiver.stats()
        assert stats.accepted == len(frames) and stats.dropped_total == 0


def test_many_faces_are_split_under_the_datagram_limit(collector):
    port, drain = collector
    frame = [f for f in video_frames() if f.faces][0]
    face = frame.faces[0]
    crowd = tuple(dataclasses.replace(face, slot=k, id=100 + k) for k in range(20))
    big = dataclasses.replace(frame, faces=crowd)
    with parse_output_url(f"msgpack://127.0.0.1:{port}?mesh=1") as output:
        output.send(big)
        assert output.stats().datagrams == 3
    datagrams = drain()
    assert len(datagrams) == 3 and all(len(d) <= MAX_DATAGRAM for d in datagrams)
    parts = [decode_frame(d) for d in datagrams]
    assert [(p.part, p.parts) for p in parts] == [(0, 3), (1, 3), (2, 3)]
    assert sorted(f.id for p in parts for f in p.faces) == list(range(100, 120))
    assert {p.frame for p in parts} == {frame.frame}


def _valid() -> bytes:
    from facewire.tracker.outputs.msgpack_udp import encode_result
    return encode_result([f for f in video_frames() if f.faces][0], False, MAX_DATAGRAM)[0]


def _mutate(change) -> bytes:
    body = msgpack.unpackb(_valid())
    change(body)
    return msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize("make, reason", [
    (lambda: b"\xc1garbage", "msgpack"),
    (lambda: msgpack.packb([1, 2, 3]), "schema"),
    (lambda: _mutate(lambda b: b.update(v=2)), "version"),
    (lambda: _mutate(lambda b: b.pop("time")), "schema"),
    (lambda: _mutate(lambda b: b["faces"][0].pop("ypr")), "schema"),
    (lambda: _mutate(lambda b: b["faces"][0].update(pts68=b"\0" * 8)), "schema"),
    (lambda: _mutate(lambda b: b["faces"][0].update(ypr=[float("nan"), 0.0, 0.0])), "non_finite"),
    (lambda: _mutate(lambda b: b["faces"][0].update(blend=np.full(52, np.inf, "<f4").tobytes())), "non_finite"),
    (lambda: _mutate(lambda b: b.update(part=[3, 2])), "schema"),
])
def test_bad_datagrams_are_rejected_and_counted(make, reason):
    data = make()
    with pytest.raises(DatagramError) as info:
        decode_frame(data)
    assert info.value.reason == reason
    with MsgpackReceiver(port=0) as receiver:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        seen = receiver.frame_count
        sender.sendto(data, receiver.address)
        sender.sendto(_valid(), receiver.address)
        assert receiver.wait(2.0, after=seen) is not None
        stats = receiver.stats()
        assert stats.dropped == {reason: 1} and stats.accepted == 1 and receiver.running
        sender.close()


def test_head_turns_the_right_way():
    cases = turning_frames()
    with MsgpackReceiver(port=0) as receiver:
        with parse_output_url(f"msgpack://127.0.0.1:{receiver.address[1]}") as output:
            for frame, truth in cases:
                seen = receiver.frame_count
                output.send(frame)
                faces = receiver.wait(2.0, after=seen)
                if abs(truth) > 10:
                    assert np.sign(faces[0].yaw) == np.sign(truth) and faces[0].yaw == pytest.approx(truth, abs=8)
