"""ZeroMQ output on loopback TCP from a real run: several subscribers, newest frame for a slow one,
CURVE keys, the head turn's sign."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import zmq

from facewire.client.zmq_stream import CurveKeyError, ZmqSubscriber, load_secret_key, make_keypair
from facewire.tracker.outputs import OutputUrlError, parse_output_url

from outputs_support import turning_frames, video_frames


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(condition, output, frame, timeout: float = 5.0) -> bool:
    """Publish ``frame`` until ``condition()`` holds (subscribers connect asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output.send(frame)
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_two_subscribers_receive_the_real_run():
    port = _free_port()
    frames = video_frames()
    with parse_output_url(f"zmq+tcp://127.0.0.1:{port}") as output, \
            ZmqSubscriber(f"tcp://127.0.0.1:{port}") as first, ZmqSubscriber(f"tcp://127.0.0.1:{port}") as second:
        assert _until(lambda: first.frame_count and second.frame_count, output, frames[0])
        for subscriber in (first, second):
            seen = subscriber.frame_count
            for frame in frames:
                output.send(frame)
                time.sleep(0.003)
            deadline = time.monotonic() + 2
            while (subscriber.latest_frame().frame != frames[-1].frame) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert subscriber.frame_count - seen >= len(frames) // 2      # not starved
        for subscriber in (first, second):
            last = subscriber.latest_frame()
            assert last.frame == frames[-1].frame and last.faces == ()       # the newest: tracking lost
            with_face = [f for f in frames if f.faces][-1]
            face = subscriber.latest(with_face.faces[0].id)
            assert face is not None and face.yaw == pytest.approx(with_face.faces[0].pose.yaw, abs=1e-4)
            assert subscriber.stats().dropped_total == 0


def test_a_slow_subscriber_gets_the_newest_frame_not_a_backlog():
    port = _free_port()
    frames = [f for f in video_frames() if f.faces]
    handled = []

    def slow(faces):
        handled.append(faces[0].frame)
        time.sleep(0.1)

    with parse_output_url(f"zmq+tcp://127.0.0.1:{port}?mesh=1") as output, \
            ZmqSubscriber(f"tcp://127.0.0.1:{port}", on_frame=slow) as subscriber:
        assert _until(lambda: subscriber.frame_count, output, frames[0])
        time.sleep(0.3)
        handled.clear()
        for _ in range(4):
            for frame in frames:            # 120 frames in about a quarter of a second; handling one takes 0.1 s
                output.send(frame)
                time.sleep(0.002)
        for _ in range(3):                  # then the stream goes on at a camera's pace
            time.sleep(0.04)
            output.send(frames[-1])
        time.sleep(0.4)
        assert len(handled) < 20                        # no backlog of 123 frames worked through
        assert handled[-1] == frames[-1].frame          # it is at the newest frame


def test_curve_needs_the_server_key(tmp_path):
    public, secret = make_keypair(tmp_path)
    assert public.name == "facewire.key" and secret.name == "facewire.key_secret"
    assert (secret.stat().st_mode & 0o077) == 0
    other_public, _ = make_keypair(tmp_path / "other")
    port = _free_port()
    frame = [f for f in video_frames() if f.faces][0]
    with parse_output_url(f"zmq+tcp://127.0.0.1:{port}?curve={secret}") as output, \
            ZmqSubscriber(f"tcp://127.0.0.1:{port}", server_key=public) as holder, \
            ZmqSubscriber(f"tcp://127.0.0.1:{port}") as stranger, \
            ZmqSubscriber(f"tcp://127.0.0.1:{port}", server_key=other_public) as wrong:
        assert _until(lambda: holder.frame_count >= 5, output, frame)
        for _ in range(20):
            output.send(frame)
            time.sleep(0.02)
        assert holder.latest_frame().frame == frame.frame
        assert stranger.frame_count == 0 and wrong.frame_count == 0
        assert stranger.stats().received == 0 and wrong.stats().received == 0
    # the Z85 text works as well as the file
    z85 = load_secret_key(secret)[0].decode()
    port = _free_port()
    with parse_output_url(f"zmq+tcp://127.0.0.1:{port}?curve={secret}") as output, \
            ZmqSubscriber(f"tcp://127.0.0.1:{port}", server_key=z85) as holder:
        assert _until(lambda: holder.frame_count, output, frame)


def test_curve_key_errors_are_clear(tmp_path):
    public, _ = make_keypair(tmp_path)
    with pytest.raises(OutputUrlError, match="does not exist"):
        parse_output_url(f"zmq+tcp://127.0.0.1:{_free_port()}?curve={tmp_path / 'missing'}").open()
    with pytest.raises(OutputUrlError, match="no secret key"):
        parse_output_url(f"zmq+tcp://127.0.0.1:{_free_port()}?curve={public}").open()
    with pytest.raises(OutputUrlError, match="curve= needs"):
        parse_output_url("zmq+tcp://127.0.0.1:5555?curve=")
    with pytest.raises(CurveKeyError):
        ZmqSubscriber(f"tcp://127.0.0.1:{_free_port()}", server_key=tmp_path / "nothing.key")


def test_only_allowed_senders_are_accepted():
    port = _free_port()
    frame = [f for f in video_frames() if f.faces][0]
    with parse_output_url(f"zmq+tcp://127.0.0.1:{port}") as output, \
            ZmqSubscriber(f"tcp://127.0.0.1:{port}", allowed_senders=["10.1.2.3"]) as picky, \
            ZmqSubscriber(f"tcp://127.0.0.1:{port}", allowed_senders=["127.0.0.1"]) as local:
        assert _until(lambda: local.frame_count and picky.stats().received, output, frame)
        assert picky.frame_count == 0 and picky.stats().dropped.get("sender", 0) >= 1


def test_head_turns_the_right_way():
    port = _free_port()
    cases = turning_frames()
    with parse_output_url(f"zmq+tcp://127.0.0.1:{port}") as output, \
            ZmqSubscriber(f"tcp://127.0.0.1:{port}") as subscriber:
        assert _until(lambda: subscriber.frame_count, output, cases[0][0])
        for frame, truth in cases:
            assert _until(lambda: subscriber.latest_frame().frame == frame.frame
                          and subscriber.latest_frame().capture_time == frame.capture_time, output, frame)
            yaw = subscriber.latest_frame().faces[0].yaw
            if abs(truth) > 10:
                assert np.sign(yaw) == np.sign(truth) and yaw == pytest.approx(truth, abs=8)


def test_port_in_use_is_a_clear_error():
    port = _free_port()
    with parse_output_url(f"zmq+tcp://127.0.0.1:{port}"):
        with pytest.raises(OSError, match="cannot publish"):
            parse_output_url(f"zmq+tcp://127.0.0.1:{port}").open()
    assert zmq.has("curve")
