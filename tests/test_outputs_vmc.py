"""VMC output on loopback, read by python-osc's own UDP server, from a real tracker run."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pythonosc = pytest.importorskip("pythonosc")
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from facewire.client.arkit import ARKIT_NAMES
from facewire.client.vmc import PERFECT_SYNC_NAMES, VRM_PRESETS, encode_vmc_bundle, vrm_presets
from facewire.tracker.outputs import parse_output_url
from facewire.tracker.pose import euler_from_rotation, rotation_from_quaternion

from outputs_support import turning_frames, video_frames


@pytest.fixture
def osc_server():
    """python-osc's UDP server on a free loopback port, recording (address, args) in arrival order."""
    received: list[tuple[str, tuple]] = []
    dispatcher = Dispatcher()
    dispatcher.set_default_handler(lambda address, *args: received.append((address, args)))
    server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


def _settle(received: list, expected: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        time.sleep(0.02)


def _split_frames(received: list) -> list[list[tuple[str, tuple]]]:
    """Each bundle starts with /VMC/Ext/OK."""
    frames: list = []
    for address, args in received:
        if address == "/VMC/Ext/OK":
            frames.append([])
        frames[-1].append((address, args))
    return frames


def _send(port: int, frames, url_options: str = "") -> None:
    with parse_output_url(f"vmc://127.0.0.1:{port}{url_options}") as output:
        for frame in frames:
            output.send(frame)
            time.sleep(0.002)
        assert output.stats().datagrams == len(frames) and output.stats().errors == 0


def test_vmc_from_a_real_run_through_python_osc(osc_server):
    port, received = osc_server
    frames = video_frames()
    face_frames = [f for f in frames if f.faces]
    per_face = 5 + len(PERFECT_SYNC_NAMES) + len(VRM_PRESETS) + 1
    _send(port, frames)
    _settle(received, per_face * len(face_frames) + 2 * (len(frames) - len(face_frames)))
    got = _split_frames(received)
    assert len(got) == len(frames)
    times = [messages[1][1][0] for messages in got]
    assert times[0] == 0.0 and all(b >= a for a, b in zip(times, times[1:]))   # capture seconds since the first
    for frame, messages in zip(frames, got):
        addresses = [a for a, _ in messages]
        ok = messages[0][1]
        assert ok == (1, 3, 0, int(bool(frame.faces)))            # loaded, calibrated, normal mode, tracking
        assert addresses[1] == "/VMC/Ext/T" and isinstance(messages[1][1][0], float)
        if not frame.faces:
            assert addresses == ["/VMC/Ext/OK", "/VMC/Ext/T"]      # tracking lost: no pose, no expression
            continue
        face = frame.faces[0]
        assert addresses.count("/VMC/Ext/Blend/Apply") == 1 and addresses[-1] == "/VMC/Ext/Blend/Apply"
        assert messages[2] == ("/VMC/Ext/Root/Pos", ("root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))
        bones = {args[0]: np.array(args[1:]) for a, args in messages if a == "/VMC/Ext/Bone/Pos"}
        assert set(bones) == {"Neck", "Head"}
        blends = dict(args for a, args in messages if a == "/VMC/Ext/Blend/Val")
        assert set(PERFECT_SYNC_NAMES) <= set(blends) and set(VRM_PRESETS) <= set(blends)
        assert len(blends) == 64
        values = np.array(list(blends.values()))
        assert ((values >= 0) & (values <= 1)).all()
        sent = np.array([blends[n] for n in PERFECT_SYNC_NAMES])
        np.testing.assert_allclose(sent, face.blendshapes, atol=1e-6)
        # The head bone carries the whole turn (neck share 0): a unit quaternion whose rotation is our pose's.
        head = bones["Head"][3:]
        assert abs(np.linalg.norm(head) - 1) < 1e-5
        np.testing.assert_allclose(bones["Neck"][3:], [0, 0, 0, 1], atol=1e-7)
        yaw, pitch, roll = euler_from_rotation(rotation_from_quaternion(head))
        assert (yaw, pitch, roll) == pytest.approx((face.pose.yaw, face.pose.pitch, face.pose.roll), abs=1e-3)
    # the run moves: expressions and head turn change over the clip
    yaws = [euler_from_rotation(rotation_from_quaternion(
        np.array([m for m in f if m[0] == "/VMC/Ext/Bone/Pos" and m[1][0] == "Head"][0][1][4:])))[0]
        for f in got if len(f) > 2]
    assert np.ptp(yaws) > 1.0


def test_neck_share_composes_to_the_whole_turn(osc_server):
    port, received = osc_server
    frame = turning_frames()[2][0]
    _send(port, [frame], "?neck=0.5")
    _settle(received, 70)
    bones = {args[0]: np.array(args[4:]) for a, args in received if a == "/VMC/Ext/Bone/Pos"}
    neck, head = rotation_from_quaternion(bones["Neck"]), rotation_from_quaternion(bones["Head"])
    whole = rotation_from_quaternion(frame.faces[0].pose.quaternion)
    np.testing.assert_allclose(neck @ head, whole, atol=1e-5)
    assert euler_from_rotation(neck)[0] == pytest.approx(frame.faces[0].pose.yaw / 2, abs=0.5)


def test_head_turns_the_right_way_in_unity_axes(osc_server):
    """A face turned to its own left turns the avatar to its own left: Unity's forward (+z, out of the
    face) goes towards -x (the avatar's right is +x). Mirrored, the other way."""
    port, received = osc_server
    cases = turning_frames()
    _send(port, [frame for frame, _ in cases])
    _settle(received, 70 * len(cases))
    heads = [np.array(args[4:]) for a, args in received if a == "/VMC/Ext/Bone/Pos" and args[0] == "Head"]
    assert len(heads) == len(cases)
    for (frame, truth), head in zip(cases, heads):
        forward = rotation_from_quaternion(head) @ np.array([0.0, 0.0, 1.0])
        if abs(truth) > 10:
            assert np.sign(forward[0]) == -np.sign(truth), (truth, forward)
            assert np.degrees(np.arcsin(-forward[0])) == pytest.approx(truth, abs=8)


def test_mirror_swaps_sides_and_turn(osc_server):
    port, received = osc_server
    frame = turning_frames()[2][0]
    _send(port, [frame], "?mirror=1")
    _settle(received, 70)
    head = [np.array(args[4:]) for a, args in received if a == "/VMC/Ext/Bone/Pos" and args[0] == "Head"][0]
    forward = rotation_from_quaternion(head) @ np.array([0.0, 0.0, 1.0])
    assert forward[0] > 0.2                       # mirrored: towards the avatar's right
    blends = dict(args for a, args in received if a == "/VMC/Ext/Blend/Val")
    face = frame.faces[0]
    assert blends["EyeBlinkLeft"] == pytest.approx(face.blendshape("eyeBlinkRight"), abs=1e-6)


def test_vrm_presets_follow_the_documented_mapping():
    b = np.zeros(len(ARKIT_NAMES))
    idx = {n: k for k, n in enumerate(ARKIT_NAMES)}
    b[idx["eyeBlinkLeft"]], b[idx["eyeBlinkRight"]], b[idx["jawOpen"]] = 0.9, 0.6, 0.8
    presets = dict(zip(VRM_PRESETS, vrm_presets(b)))
    assert presets["Blink"] == pytest.approx(0.6) and presets["Blink_L"] == pytest.approx(0.3)
    assert presets["Blink_R"] == pytest.approx(0.0) and presets["A"] == pytest.approx(0.8)
    assert presets["I"] == 0 and presets["Joy"] == 0
    with pytest.raises(ValueError, match="52 blendshapes"):
        encode_vmc_bundle(0.0, np.zeros(10), (0, 0, 0, 1))
