"""iFacialMocap output on loopback from a real run, read back with the format's parser; the handshake."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from facewire.client.arkit import ARKIT_NAMES
from facewire.client.ifacialmocap import HANDSHAKE, RAW_NAMES, parse_ifacialmocap
from facewire.client.protocol import DatagramError
from facewire.tracker.outputs import parse_output_url

from outputs_support import turning_frames, video_frames


@pytest.fixture
def listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)

    def drain() -> list[bytes]:
        out = []
        while True:
            try:
                out.append(sock.recv(65535))
            except socket.timeout:
                return out
    yield sock, drain
    sock.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_run_parsed_by_the_reader(listener):
    sock, drain = listener
    frames = video_frames()
    with parse_output_url(f"ifacialmocap://127.0.0.1:{sock.getsockname()[1]}") as output:
        assert output.needs == {"pose", "blendshapes"}
        for frame in frames:
            output.send(frame)
    datagrams = drain()
    face_frames = [f for f in frames if f.faces]
    assert len(datagrams) == len(face_frames)               # no datagram while no face is tracked
    for frame, data in zip(face_frames, datagrams):
        text = data.decode("ascii")
        assert text.endswith("|") and "|=head#" in text and "|rightEye#" in text and "|leftEye#" in text
        keys = [part.rsplit("-", 1)[0] for part in text.split("|=head#")[0].split("|")]
        assert keys == list(RAW_NAMES)                         # Apple's raw names, eyeBlink_L ...
        parsed = parse_ifacialmocap(data)
        face = frame.faces[0]
        assert set(parsed.blendshapes) == set(ARKIT_NAMES)
        sent = np.array([parsed.blendshapes[n] for n in ARKIT_NAMES])
        np.testing.assert_allclose(sent, np.round(face.blendshapes * 100) / 100, atol=1e-9)   # integer percent
        assert parsed.head_rotation == pytest.approx((-face.pose.pitch, face.pose.yaw, -face.pose.roll), abs=1e-4)
        t = face.pose.translation / 1000
        assert parsed.head_position == pytest.approx((t[0], -t[1], -t[2]), abs=1e-4)
        assert -2.0 < parsed.head_position[2] < -0.1              # metres in front of the camera
        # eyes: the gaze's angles; looking to the subject's left is ry > 0 in both
        for eye, gaze in ((parsed.left_eye, face.gaze_left), (parsed.right_eye, face.gaze_right)):
            assert eye[1] == pytest.approx(np.degrees(np.arctan2(gaze[0], -gaze[2])), abs=1e-3)
            assert eye[0] == pytest.approx(np.degrees(np.arctan2(gaze[1], np.hypot(gaze[0], -gaze[2]))), abs=1e-3)


def test_handshake_mode_streams_to_whoever_asks(listener):
    """The phone's rule: stream to the handshake's IP at the app's port (49983 unless reply_port says)."""
    app, drain = listener
    port = _free_port()
    frames = [f for f in video_frames() if f.faces][:5]
    with parse_output_url(f"ifacialmocap://127.0.0.1:{port}?listen&reply_port={app.getsockname()[1]}") as output:
        output.send(frames[0])
        assert drain() == [] and output.stats().datagrams == 0         # nobody asked yet
        handshake_sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)     # from another port than
        handshake_sender.sendto(HANDSHAKE, ("127.0.0.1", port))                 # the app listens on
        handshake_sender.close()
        time.sleep(0.05)
        for frame in frames[1:3]:
            output.send(frame)
        got = drain()
        assert len(got) == 2 and "-" in got[0].decode().split("|")[0]
        app.sendto(HANDSHAKE + b"|sendDataVersion=v2", ("127.0.0.1", port))
        time.sleep(0.05)
        output.send(frames[3])
        got = drain()
        assert len(got) == 1 and got[0].decode().startswith(f"{RAW_NAMES[0]}&")    # v2 separator
        assert parse_ifacialmocap(got[0]).head_rotation[1] == pytest.approx(frames[3].faces[0].pose.yaw, abs=1e-4)
        app.sendto(b"not a handshake", ("127.0.0.1", port))
        output.send(frames[4])
        assert len(drain()) == 1


def test_head_turns_the_right_way():
    """ry (ARKit's turn about y, up) > 0 for a face turned to its own left; mirrored, < 0."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(1.0)
    cases = turning_frames()
    with parse_output_url(f"ifacialmocap://127.0.0.1:{receiver.getsockname()[1]}") as output:
        for frame, _ in cases:
            output.send(frame)
    for frame, truth in cases:
        yaw = parse_ifacialmocap(receiver.recv(65535)).yaw
        if abs(truth) > 10:
            assert np.sign(yaw) == np.sign(truth) and yaw == pytest.approx(truth, abs=8)
    receiver.close()


@pytest.mark.parametrize("data, reason", [
    (b"\xff\xfe", "encoding"),
    (b"jawOpen-12|", "schema"),                                 # no head
    (b"jawOpen-x|=head#0,0,0,0,0,0|", "schema"),
    (b"jawOpen-140|=head#0,0,0,0,0,0|", "range"),
    (b"jawOpen-1|=head#0,0,0|", "schema"),
    (b"jawOpen-1|=head#nan,0,0,0,0,0|", "non_finite"),
])
def test_parser_rejects_bad_datagrams(data, reason):
    with pytest.raises(DatagramError) as info:
        parse_ifacialmocap(data)
    assert info.value.reason == reason


def test_receiver_connects_to_a_listening_tracker_and_counts_bad_datagrams():
    from facewire.client.ifacialmocap_receiver import IFacialMocapReceiver
    port = _free_port()
    frames = [f for f in video_frames() if f.faces][:3]
    with IFacialMocapReceiver(port=0) as receiver, \
            parse_output_url(f"ifacialmocap://127.0.0.1:{port}?listen&reply_port={receiver.address[1]}") as output:
        receiver.connect_to("127.0.0.1", port, v2=True)
        time.sleep(0.05)
        for frame in frames:
            seen = receiver.frame_count
            output.send(frame)
            got = receiver.wait(2.0, after=seen)
            assert got[0].yaw == pytest.approx(frame.faces[0].pose.yaw, abs=1e-4)
        assert receiver.latest().head_rotation[0] == pytest.approx(-frames[-1].faces[0].pose.pitch, abs=1e-4)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        seen = receiver.frame_count
        sender.sendto(b"jawOpen-12|", receiver.address)
        sender.sendto(b"jawOpen-12|=head#1,2,3,0,0,0|", receiver.address)
        assert receiver.wait(2.0, after=seen)[0].blendshapes == {"jawOpen": 0.12}
        assert receiver.stats().dropped == {"schema": 1} and receiver.running
        sender.close()


def test_handshake_answered_at_port_49983_by_default():
    port = _free_port()
    frame = [f for f in video_frames() if f.faces][0]
    with parse_output_url(f"ifacialmocap://127.0.0.1:{port}?listen") as output:
        asker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        asker.sendto(HANDSHAKE, ("127.0.0.1", port))
        time.sleep(0.05)
        output.send(frame)
        assert list(output.peers) == [("127.0.0.1", 49983)]
        asker.close()
