"""OpenSeeFaceReceiver over real loopback UDP."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facewire.client.protocol import FEATURE_NAMES, OpenSeeFaceRecord, decode_datagram, encode_datagram
from facewire.client.receiver import DatagramReceiver, OpenSeeFaceReceiver, ReceiverError

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "openseeface_reference"


def _record(face_id: int, stamp: float, x: float = 100.0) -> OpenSeeFaceRecord:
    rng = np.random.default_rng(face_id * 1000 + int(stamp))
    return OpenSeeFaceRecord(
        time=stamp,
        id=face_id,
        width=640.0,
        height=480.0,
        eye_right=1.0,
        eye_left=0.5,
        success=True,
        pnp_error=1.5,
        quaternion=[0.0, 1.0, 0.0, 0.0],
        euler=[180.0, 0.0, 90.0],
        translation=[0.0, 0.0, -8.0],
        confidence=rng.random(68),
        points=rng.random((68, 2)) * 100 + x,
        points3d=rng.normal(size=(70, 3)),
        features=dict.fromkeys(FEATURE_NAMES, 0.25),
    )


@pytest.fixture
def receiver() -> Iterator[OpenSeeFaceReceiver]:
    rx = OpenSeeFaceReceiver(port=0)
    try:
        yield rx
    finally:
        rx.close()


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


def _send_and_wait(
    rx: OpenSeeFaceReceiver, sock: socket.socket, data: bytes
) -> list[OpenSeeFaceRecord] | None:
    """Send ``data`` and wait for the frame it produces (race-free through ``after``)."""
    count = rx.frame_count
    sock.sendto(data, rx.address)
    return rx.wait(timeout=5.0, after=count)


def _sync(rx: OpenSeeFaceReceiver, count: int) -> None:
    """Block until the receiver has read ``count`` datagrams in total."""
    deadline = time.monotonic() + 5.0
    while rx.stats().received < count:
        assert time.monotonic() < deadline, f"only {rx.stats().received} of {count} datagrams arrived"
        time.sleep(0.001)


def test_port_zero_binds_an_ephemeral_port(receiver: OpenSeeFaceReceiver) -> None:
    host, port = receiver.address
    assert host == "127.0.0.1" and port > 0
    assert receiver.running


def test_reference_datagram_round_trip(receiver: OpenSeeFaceReceiver, sender: socket.socket) -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"OpenSeeFace reference captures not found at {REFERENCE.resolve()}")
    data = (REFERENCE / "two_faces_m0_pkt0010.bin").read_bytes()
    frame = _send_and_wait(receiver, sender, data)
    assert frame == decode_datagram(data)
    faces = receiver.faces()
    assert set(faces) == {0, 1}
    assert receiver.latest(1) == frame[1]
    assert receiver.latest() == frame[-1]  # the last record of the newest datagram
    stats = receiver.stats()
    assert (stats.received, stats.accepted, stats.records, stats.dropped_total) == (1, 1, 2, 0)


def test_latest_keeps_the_newest_record_per_face(
    receiver: OpenSeeFaceReceiver, sender: socket.socket
) -> None:
    for stamp in range(1, 6):
        sender.sendto(encode_datagram([_record(3, stamp), _record(4, stamp * 10)]), receiver.address)
    sender.sendto(encode_datagram([_record(3, 6)]), receiver.address)
    _sync(receiver, 6)
    assert receiver.latest(3).time == 6
    assert receiver.latest(4).time == 50
    assert receiver.latest() == _record(3, 6)
    assert receiver.latest(99) is None


def test_snapshots_are_immutable_copies(receiver: OpenSeeFaceReceiver, sender: socket.socket) -> None:
    _send_and_wait(receiver, sender, encode_datagram([_record(1, 1)]))
    snapshot = receiver.faces()
    with pytest.raises(TypeError):
        snapshot[2] = _record(2, 2)  # type: ignore[index]
    with pytest.raises(ValueError):
        snapshot[1].points[0, 0] = -1.0
    _send_and_wait(receiver, sender, encode_datagram([_record(1, 2), _record(2, 2)]))
    assert set(snapshot) == {1} and snapshot[1].time == 1  # the old snapshot did not change
    assert set(receiver.faces()) == {1, 2}


def test_wait_times_out_with_none(receiver: OpenSeeFaceReceiver) -> None:
    assert receiver.wait(timeout=0.2) is None


def test_invalid_datagrams_are_counted_and_leave_state_alone(
    receiver: OpenSeeFaceReceiver, sender: socket.socket
) -> None:
    good = encode_datagram([_record(7, 1)])
    sender.sendto(good, receiver.address)
    nan = bytearray(encode_datagram([_record(7, 2)]))
    struct.pack_into("<f", nan, 345, float("nan"))
    for bad in (b"", b"x", good[:-1], good + b"\0", bytes(nan), good * 2 + good[:100]):
        sender.sendto(bad, receiver.address)
    _sync(receiver, 7)
    stats = receiver.stats()
    assert stats.accepted == 1
    assert dict(stats.dropped) == {"length": 5, "non_finite": 1}
    assert stats.received == stats.accepted + stats.dropped_total
    assert receiver.latest(7) == _record(7, 1)
    assert receiver.running


def test_faces_expire(sender: socket.socket) -> None:
    with OpenSeeFaceReceiver(port=0, expire_after=0.3) as rx:
        _send_and_wait(rx, sender, encode_datagram([_record(5, 1)]))
        assert 5 in rx.faces()
        time.sleep(0.9)  # three times expire_after: long past expiry on any machine
        assert rx.faces() == {}
        assert rx.latest() is None and rx.latest(5) is None
        assert 5 not in rx.stats().face_rates
        _send_and_wait(rx, sender, encode_datagram([_record(5, 2)]))
        assert rx.latest(5).time == 2  # a returning face comes back


def test_allowed_senders_filters_by_address_and_port(sender: socket.socket) -> None:
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    try:
        allowed = [("127.0.0.1", sender.getsockname()[1])]
        with OpenSeeFaceReceiver(port=0, allowed_senders=allowed) as rx:
            other.sendto(encode_datagram([_record(1, 1)]), rx.address)
            sender.sendto(encode_datagram([_record(2, 1)]), rx.address)
            _sync(rx, 2)
            assert set(rx.faces()) == {2}
            assert dict(rx.stats().dropped) == {"sender": 1}
        with OpenSeeFaceReceiver(port=0, allowed_senders=["127.0.0.1"]) as rx:
            other.sendto(encode_datagram([_record(1, 1)]), rx.address)
            sender.sendto(encode_datagram([_record(2, 1)]), rx.address)
            _sync(rx, 2)
            assert set(rx.faces()) == {1, 2}
        with OpenSeeFaceReceiver(port=0, allowed_senders=["10.1.2.3"]) as rx:
            sender.sendto(encode_datagram([_record(2, 1)]), rx.address)
            _sync(rx, 1)
            assert rx.faces() == {}
            assert rx.stats().dropped == {"sender": 1}
    finally:
        other.close()


def test_close_stops_the_thread_and_frees_the_port() -> None:
    rx = OpenSeeFaceReceiver(port=0)
    port = rx.address[1]
    rx.close()
    assert not rx.running  # close() joined the thread
    assert rx.wait(timeout=5.0) is None  # returns at once once closed
    rx.close()  # idempotent
    again = OpenSeeFaceReceiver(port=port)
    assert again.address[1] == port
    again.close()


def test_iterator_yields_frames_and_ends_on_close(sender: socket.socket) -> None:
    rx = OpenSeeFaceReceiver(port=0)
    frames: list = []

    def consume() -> None:
        for frame in rx:
            frames.append(frame)

    thread = threading.Thread(target=consume)
    thread.start()
    deadline = time.monotonic() + 5
    while not frames and time.monotonic() < deadline:
        sender.sendto(encode_datagram([_record(1, 1)]), rx.address)  # repeat until the consumer is listening
        time.sleep(0.02)
    rx.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert frames and all(frame == [_record(1, 1)] for frame in frames)


def test_wait_returns_a_frame_that_already_arrived_after_a_known_count(
    receiver: OpenSeeFaceReceiver, sender: socket.socket
) -> None:
    count = receiver.frame_count
    sender.sendto(encode_datagram([_record(1, 1)]), receiver.address)
    _sync(receiver, 1)
    assert receiver.frame_count == count + 1
    assert receiver.wait(timeout=5.0, after=count) == [_record(1, 1)]
    assert receiver.wait(timeout=0.1) is None  # nothing newer than the call


def test_port_in_use_raises_an_actionable_error(receiver: OpenSeeFaceReceiver) -> None:
    with pytest.raises(ReceiverError, match="another port"):
        OpenSeeFaceReceiver(port=receiver.address[1])


def test_callback_gets_frames_and_its_errors_are_not_fatal(
    sender: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[list[OpenSeeFaceRecord]] = []

    def callback(frame: list[OpenSeeFaceRecord]) -> None:
        seen.append(frame)
        if frame[0].time == 1:
            raise RuntimeError("user bug")

    with caplog.at_level(logging.ERROR, logger="facewire.client.receiver"):
        with OpenSeeFaceReceiver(port=0, on_frame=callback) as rx:
            _send_and_wait(rx, sender, encode_datagram([_record(1, 1)]))
            _send_and_wait(rx, sender, encode_datagram([_record(1, 2)]))
            deadline = time.monotonic() + 5
            while len(seen) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert rx.running
            assert rx.stats().callback_errors == 1
            assert rx.latest(1).time == 2
    assert [f[0].time for f in seen] == [1, 2]
    assert "on_frame callback raised" in caplog.text and "user bug" in caplog.text


def test_rates_are_reported_per_face(receiver: OpenSeeFaceReceiver, sender: socket.socket) -> None:
    for stamp in range(1, 6):
        sender.sendto(encode_datagram([_record(1, stamp)]), receiver.address)
        time.sleep(0.02)
    sender.sendto(encode_datagram([_record(2, 1)]), receiver.address)
    _sync(receiver, 6)
    rates = receiver.stats().face_rates
    assert rates[1] > 0 and np.isfinite(rates[1])
    assert rates[2] == 0.0  # one datagram gives no rate yet


def test_base_receiver_reuses_the_machinery_for_other_formats(sender: socket.socket) -> None:
    def decode(data: bytes) -> list[tuple[str, int]]:
        name, value = data.decode().split("=")
        return [(name, int(value))]

    with DatagramReceiver(decode, key=lambda item: item[0], port=0, drop_errors=(ValueError,)) as rx:
        sender.sendto(b"a=1", rx.address)
        sender.sendto(b"b=2", rx.address)
        sender.sendto(b"a=3", rx.address)
        sender.sendto(b"garbage", rx.address)
        sender.sendto(b"\xff\xfe", rx.address)
        _sync(rx, 5)
        assert dict(rx.faces()) == {"a": ("a", 3), "b": ("b", 2)}
        assert rx.stats().dropped == {"ValueError": 1, "UnicodeDecodeError": 1}


@pytest.mark.parametrize("port", [65536, 99999, -1, 11573.0, True])
def test_ports_outside_the_udp_range_are_refused(port) -> None:
    with pytest.raises(ValueError, match="port must be 0-65535"):
        OpenSeeFaceReceiver(port=port)


def _with_id(template: bytes, face_id: int) -> bytes:
    data = bytearray(template)
    struct.pack_into("<i", data, 8, face_id)
    return bytes(data)


def test_many_ids_keep_memory_and_live_faces_bounded() -> None:
    """A sender inventing ids cannot grow the receiver, even with expire_after=None."""
    import tracemalloc

    template = encode_datagram([_record(0, 1)])
    datagrams = 20_000  # 100,000 behave the same (see the README); tracemalloc makes each one slow
    with OpenSeeFaceReceiver(port=0, expire_after=None, max_faces=256) as rx:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for face_id in range(datagrams):  # straight through the handler: no kernel buffer in between
                rx._handle(_with_id(template, face_id), ("127.0.0.1", 9))
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        stats = rx.stats()
        assert stats.live_faces == len(rx.faces()) == 256
        assert stats.evicted == datagrams - 256 and stats.accepted == datagrams
        assert set(rx.faces()) == set(range(datagrams - 256, datagrams))  # the newest ones stay
        assert rx.latest().id == datagrams - 1
    # 256 records of 1785 bytes plus their arrays and bookkeeping; kept forever, 20,000 took ~110 MB
    assert grown < 8 << 20, grown


def test_the_face_updated_longest_ago_makes_room() -> None:
    template = encode_datagram([_record(0, 1)])
    with OpenSeeFaceReceiver(port=0, expire_after=None, max_faces=3) as rx:
        for face_id in (1, 2, 3, 1, 4):
            rx._handle(_with_id(template, face_id), ("127.0.0.1", 9))
        assert set(rx.faces()) == {1, 3, 4}
        assert rx.stats().evicted == 1
        rx._handle(encode_datagram([_record(7, 1), _record(8, 1)]), ("127.0.0.1", 9))
        assert set(rx.faces()) == {4, 7, 8} and rx.stats().evicted == 3
    with pytest.raises(ValueError, match="max_faces"):
        OpenSeeFaceReceiver(port=0, max_faces=0)


def _owner(array: np.ndarray) -> object:
    """The object whose memory ``array`` views."""
    base = array
    while isinstance(base, (np.ndarray, np.void)) and base.base is not None:
        base = base.base
    return base


def test_each_record_holds_only_its_own_bytes(receiver: OpenSeeFaceReceiver, sender: socket.socket) -> None:
    """A kept record of a three-face datagram must not keep the other two faces' bytes alive."""
    frame = _send_and_wait(receiver, sender, encode_datagram([_record(i, 1) for i in range(3)]))
    assert [rec.id for rec in frame] == [0, 1, 2]
    for rec in receiver.faces().values():
        for array in (rec.points, rec.points3d, rec.confidence, rec.quaternion):
            owner = _owner(array)
            assert isinstance(owner, bytes) and len(owner) == 1785
    assert frame == [_record(i, 1) for i in range(3)]


def test_faces_expire_on_the_receiving_thread_while_nothing_arrives(sender: socket.socket) -> None:
    with OpenSeeFaceReceiver(port=0, expire_after=0.2) as rx:
        _send_and_wait(rx, sender, encode_datagram([_record(5, 1), _record(6, 1)]))
        time.sleep(0.8)  # four times expire_after; nothing arrives and nothing reads in between
        with rx._lock:  # a look without reading through the API (reads expire on their own)
            assert len(rx._faces) == 0
        stats = rx.stats()
        assert stats.expired == 2 and stats.live_faces == 0 and stats.evicted == 0


def test_datagrams_the_kernel_drops_under_a_flood_are_counted(sender: socket.socket) -> None:
    """The handler stalls, the socket buffer overflows: stats() reports exactly what the kernel dropped."""
    release = threading.Event()

    def stalled(frame: list[OpenSeeFaceRecord]) -> None:
        release.wait(10.0)

    with OpenSeeFaceReceiver(port=0, on_frame=stalled, receive_buffer=64 << 10) as rx:
        stats = rx.stats()
        if stats.kernel_dropped is None:
            pytest.skip("this system does not report datagrams its kernel drops (SO_RXQ_OVFL is Linux only)")
        assert stats.kernel_dropped == 0 and stats.receive_buffer >= 64 << 10  # Linux grants twice the request
        data = encode_datagram([_record(1, 1)])
        flood = 3000
        for _ in range(flood):  # 5 MB at once into a buffer of ~128 KB while the receiver is stuck
            sender.sendto(data, rx.address)
        release.set()
        deadline = time.monotonic() + 10
        while True:  # until the receiver has read everything the kernel kept
            before = rx.stats().received
            time.sleep(0.2)
            if rx.stats().received == before or time.monotonic() > deadline:
                break
        # The kernel reports its count with the next datagram it queues: send one more, slowly.
        count = rx.frame_count
        sender.sendto(data, rx.address)
        assert rx.wait(timeout=5.0, after=count) is not None
        stats = rx.stats()
    assert stats.kernel_dropped > flood / 2
    assert stats.received + stats.kernel_dropped == flood + 1  # loopback loses nothing anywhere else
    assert stats.accepted == stats.received


def test_without_the_kernel_drop_count_the_receiver_says_none(monkeypatch, sender: socket.socket) -> None:
    """Systems without SO_RXQ_OVFL (macOS, Windows) fall back to recvfrom and report kernel drops as None."""
    import facewire.client.receiver as receiver_module

    monkeypatch.setattr(receiver_module, "_SO_RXQ_OVFL", None)
    with OpenSeeFaceReceiver(port=0, receive_buffer=None) as rx:
        assert _send_and_wait(rx, sender, encode_datagram([_record(3, 1)])) == [_record(3, 1)]
        stats = rx.stats()
        assert stats.kernel_dropped is None and stats.received == 1
        assert stats.receive_buffer is None or stats.receive_buffer > 0
