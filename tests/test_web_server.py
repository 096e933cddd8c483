"""The dashboard without a browser: controls, addresses and tokens, what a page is sent about a real run,
no work without a page, a stalled page, and requests another site or a rebound host name would make."""
from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("websockets", reason="the dashboard needs the web extra: pip install -e '.[web]'")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from facewire.client.arkit import ARKIT_NAMES  # noqa: E402
from facewire.tracker.pose import rotation_from_quaternion  # noqa: E402
from facewire.tracker.web import (Access, AccessLevel, ControlError, Dashboard, DashboardError,  # noqa: E402
                                  DashboardStats, TrackerControls, WebAddressError, parse_web_address)
from facewire.tracker.web.payload import face_payload  # noqa: E402

from conftest import data_path  # noqa: E402
from outputs_support import video_frames  # noqa: E402

TOKEN = "correct-horse-battery-staple"


def test_controls_are_read_once_per_frame_and_report_when_applied():
    controls = TrackerControls({"pose": 0.8}, mirror=True)
    state = controls.read(1)
    assert state.smoothing == {"points": 0.5, "pose": 0.8, "blendshapes": 0.5, "gaze": 0.5} and state.mirror
    assert controls.applied.version == 1 and controls.applied.frame == 1
    changed = controls.update({"smoothing": {"pose": 0}, "paused": True})
    assert changed.version == 2 and controls.applied.version == 1           # asked, not yet read by the loop
    assert controls.read(7).smoothing["pose"] == 0.0 and controls.applied.frame == 7
    controls.read(8)
    assert controls.applied.frame == 7                                       # first frame it took effect in
    controls.request_neutral()
    assert controls.read(9).relearn_neutral and not controls.read(10).relearn_neutral   # exactly one frame
    assert controls.state.neutral_requests == 1


@pytest.mark.parametrize("changes, message", [
    ({"smoothing": {"pose": 1.5}}, "smoothing.pose must be a number from 0"),
    ({"smoothing": {"pose": True}}, "smoothing.pose must be a number"),
    ({"smoothing": {"head": 0.2}}, "unknown smoothing group 'head'"),
    ({"smoothing": 3}, "smoothing must be an object"),
    ({"paused": "yes"}, "paused must be true or false"),
    ({"volume": 1}, "unknown control volume"),
    ([1, 2], "must be an object"),
])
def test_bad_control_changes_name_the_problem_and_change_nothing(changes, message):
    controls = TrackerControls()
    with pytest.raises(ControlError, match=message):
        controls.update({"mirror": True, **changes} if isinstance(changes, dict) else changes)
    assert controls.state.version == 1 and not controls.state.mirror


@pytest.mark.parametrize("text, expected", [
    ("", ("127.0.0.1", 8765)), ("9000", ("127.0.0.1", 9000)), ("0.0.0.0:8765", ("0.0.0.0", 8765)),
    ("192.168.1.20", ("192.168.1.20", 8765)), ("[::1]:8800", ("::1", 8800)), ("localhost:80", ("localhost", 80)),
    ("0", ("127.0.0.1", 0)), ("127.0.0.1:0", ("127.0.0.1", 0)),
])
def test_web_addresses(text, expected):
    assert parse_web_address(text) == expected


@pytest.mark.parametrize("text", ["host:port", "1.2.3.4:99999", "1.2.3.4:-1", "a/b", "70000", "h:1?x=1"])
def test_bad_web_addresses(text):
    with pytest.raises(WebAddressError, match="--web"):
        parse_web_address(text)


def test_token_only_off_loopback_and_checked():
    assert Access.for_address("127.0.0.1", 8765).token is None
    assert Access.for_address("::1", 8765).token is None
    lan = Access.for_address("0.0.0.0", 8765)
    assert lan.token and len(lan.token) >= 20 and lan.token != Access.for_address("0.0.0.0", 8765).token
    assert f"?token={lan.token}" in lan.page_url()
    assert lan.level(lan.token) is AccessLevel.FULL
    assert lan.level(None) is AccessLevel.VIEW and lan.level("") is AccessLevel.VIEW
    assert lan.level(lan.token[:-1] + "x") is AccessLevel.REFUSED
    with pytest.raises(WebAddressError, match="at least 16"):
        Access.for_address("0.0.0.0", 8765, token="short")


def test_host_and_origin_checks():
    local = Access.for_address("127.0.0.1", 8765)
    assert local.check_request("127.0.0.1:8765", None) is None
    assert local.check_request("localhost:8765", "http://localhost:8765") is None
    assert "loopback" in local.check_request("attacker.example:8765", "http://attacker.example:8765")
    assert "may not use" in local.check_request("127.0.0.1:8765", "http://attacker.example")
    assert "may not use" in local.check_request("127.0.0.1:8765", "http://127.0.0.1:9999")
    assert local.check_request(None, None) == "no Host header"
    lan = Access.for_address("0.0.0.0", 8765, token=TOKEN)
    assert lan.check_request("192.168.1.20:8765", "http://192.168.1.20:8765") is None


def test_face_payload_is_the_run_in_pixels_and_degrees():
    """Against the real run's FrameResult: points, irises, pose, axes, gaze, blendshapes."""
    frame = video_frames()[10]
    face = frame.faces[0]
    p = face_payload(face)
    points = np.frombuffer(base64.b64decode(p["points"]), "<f4").reshape(-1, 2)
    assert points.shape == (478, 2) and np.abs(points - face.mesh[:, :2]).max() < 1e-4
    right, left = p["irises"]
    assert right[:2] == pytest.approx(face.mesh[468, :2], abs=0.051) and 1 < right[2] < 15
    assert left[:2] == pytest.approx(face.mesh[473, :2], abs=0.051)
    assert left[0] > right[0]                 # the subject's left eye is on the image's right
    assert p["ypr"] == pytest.approx([face.pose.yaw, face.pose.pitch, face.pose.roll], abs=0.051)
    rotation = rotation_from_quaternion(face.pose.quaternion)
    origin, tips = np.array(p["axes"]["origin"]), np.array(p["axes"]["tips"]).reshape(3, 2)
    width = face.box[2] - face.box[0]
    assert tips[0] == pytest.approx(origin + rotation[:2, 0] * width / 2, abs=0.11)
    assert tips[0][0] > origin[0] and tips[1][1] > origin[1]    # subject's left = image right; down = down
    gaze_x, gaze_y, gaze_z = face.gaze_left
    assert p["gaze"][0][0] == pytest.approx(np.degrees(np.arctan2(gaze_x, -gaze_z)), abs=0.051)
    assert p["blend"][ARKIT_NAMES.index("jawOpen")] == pytest.approx(face.blendshape("jawOpen"), abs=5e-4)
    assert p["eyes"] == pytest.approx([face.eye_open_left, face.eye_open_right], abs=5e-4)
    json.dumps(p, allow_nan=False)


def _receive_until(ws, kind, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(message, bytes):
            length = struct.unpack(">I", message[:4])[0]
            body = json.loads(message[4:4 + length])
            body["_jpeg"] = message[4 + length:]
        else:
            body = json.loads(message)
        if body["type"] == kind:
            return body


def test_no_page_means_no_work():
    """Without a page, publish touches nothing: the stats function is never called, no extra work asked."""
    frames = video_frames()
    calls = []
    with Dashboard("127.0.0.1", 0, TrackerControls()) as dashboard:
        image = np.zeros((300, 400, 3), np.uint8)
        for frame in frames:
            dashboard.publish(frame, image, lambda: calls.append(1) or DashboardStats())
        assert calls == [] and dashboard.published == 0 and dashboard.needs == frozenset()
        with connect(f"ws://127.0.0.1:{dashboard.port}/ws") as ws:
            assert _receive_until(ws, "hello")["access"] == "full"
            assert dashboard.needs == {"pose", "mesh", "blendshapes"}
            dashboard.publish(frames[5], image, lambda: calls.append(1) or DashboardStats(fps=12.5))
            message = _receive_until(ws, "frame")
            assert calls == [1] and message["frame"] == frames[5].frame and message["stats"]["fps"] == 12.5
            jpeg = cv2.imdecode(np.frombuffer(message["_jpeg"], np.uint8), cv2.IMREAD_COLOR)
            assert jpeg.shape == (300, 400, 3)           # 400 wide is near enough to 320: kept
            time.sleep(0.15)
            camera = cv2.resize(cv2.imread(str(data_path("images", "aflw2000_image00061.jpg"))), (1280, 720))
            dashboard.publish(frames[6], camera, DashboardStats())
            message = _receive_until(ws, "frame")
            jpeg = cv2.imdecode(np.frombuffer(message["_jpeg"], np.uint8), cv2.IMREAD_COLOR)
            assert jpeg.shape == (180, 320, 3)           # every 4th pixel of 1280x720
            assert np.abs(jpeg.astype(int) - camera[::4, ::4]).mean() < 4
        deadline = time.monotonic() + 5
        while dashboard.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not dashboard.active and dashboard.needs == frozenset()


def test_stalled_page_loses_frames_not_the_loop_or_other_pages():
    """A page that never reads: publish keeps returning, the healthy page keeps getting the newest frame,
    and the stalled page's slot holds one frame (the rest are counted as dropped for it)."""
    frames = video_frames()
    image = (np.random.default_rng(0).random((720, 1280, 3)) * 255).astype(np.uint8)   # big, noisy JPEGs
    with Dashboard("127.0.0.1", 0, TrackerControls(), data_hz=1000, image_hz=1000, image_width=1280,
                   jpeg_quality=95) as dashboard:
        stalled = socket.create_connection(("127.0.0.1", dashboard.port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert b"101 Switching Protocols" in stalled.recv(200)
        with connect(f"ws://127.0.0.1:{dashboard.port}/ws", max_size=2**24) as healthy:
            _receive_until(healthy, "hello")
            while len(dashboard._pages) < 2:
                time.sleep(0.01)
            received = []

            def read() -> None:
                try:
                    while True:
                        message = healthy.recv(timeout=3)
                        if isinstance(message, bytes):
                            received.append(json.loads(message[4:4 + struct.unpack(">I", message[:4])[0]])["frame"])
                except Exception:     # noqa: BLE001 - timeout: the publisher stopped
                    pass
            reader = threading.Thread(target=read)
            reader.start()
            published = 0
            for k in range(300):
                dashboard.publish(frames[k % len(frames)], image, DashboardStats())
                published += 1
                time.sleep(0.004)
            reader.join()
            pages = sorted(dashboard._pages, key=lambda p: p.sent)
            slow, fast = pages
            assert published == 300 and dashboard.published > 100
            assert slow.dropped > 50 and slow.sent < fast.sent
            assert received and received[-1] == frames[299 % len(frames)].frame    # the newest arrived
        stalled.close()


def test_requests_from_other_sites_and_rebound_names_are_refused():
    with Dashboard("127.0.0.1", 0, TrackerControls()) as dashboard:
        def get(path, host, origin=None, upgrade=False):
            conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=5)
            headers = {"Host": host}
            if origin:
                headers["Origin"] = origin
            if upgrade:
                headers.update({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            conn.close()
            return response.status, response.headers, body

        status, headers, body = get("/", f"127.0.0.1:{dashboard.port}")
        assert status == 200 and b"<canvas" in body and "default-src 'none'" in headers["Content-Security-Policy"]
        assert get("/app.js", f"localhost:{dashboard.port}")[0] == 200
        assert get("/style.css", f"localhost:{dashboard.port}")[1]["Content-Type"].startswith("text/css")
        assert get("/secret", f"127.0.0.1:{dashboard.port}")[0] == 404
        assert get("/", f"rebound.example:{dashboard.port}")[0] == 403
        host = f"127.0.0.1:{dashboard.port}"
        assert get("/ws", host, "http://attacker.example", upgrade=True)[0] == 403
        assert get("/ws", host, f"http://{host}", upgrade=True)[0] == 101


def test_address_in_use_is_a_clear_error():
    with Dashboard("127.0.0.1", 0) as first:
        with pytest.raises(DashboardError, match=f"--web 127.0.0.1:{first.port}: cannot listen"):
            Dashboard("127.0.0.1", first.port).start()


def test_view_only_page_gets_no_image_and_no_control():
    frames = video_frames()
    controls = TrackerControls()
    with Dashboard("127.0.0.1", 0, controls, token=TOKEN, token_required=True) as dashboard:
        with connect(f"ws://127.0.0.1:{dashboard.port}/ws?token=wrong-token-of-some-length") as ws:
            hello = _receive_until(ws, "hello")
            assert hello["access"] == "refused" and hello["reason"] == "wrong token"
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=2)
            assert ws.close_code == 4403
        with connect(f"ws://127.0.0.1:{dashboard.port}/ws") as ws:
            assert _receive_until(ws, "hello")["access"] == "view"
            ws.send(json.dumps({"type": "control", "set": {"paused": True}}))
            assert _receive_until(ws, "refused")["what"] == "control"
            ws.send(json.dumps({"type": "image", "on": True}))
            assert _receive_until(ws, "refused")["what"] == "image"
            dashboard.publish(frames[3], np.zeros((300, 400, 3), np.uint8), DashboardStats())
            assert "_jpeg" not in _receive_until(ws, "frame")
        assert controls.state.version == 1 and not controls.state.paused
        with connect(f"ws://127.0.0.1:{dashboard.port}/ws?token={TOKEN}") as ws:
            assert _receive_until(ws, "hello")["access"] == "full"
            ws.send(json.dumps({"type": "control", "set": {"paused": True}}))
            assert _receive_until(ws, "controls")["controls"]["paused"] is True
            ws.send(json.dumps({"type": "control", "set": {"smoothing": {"pose": 7}}}))
            assert "smoothing.pose must be" in _receive_until(ws, "error")["message"]
            time.sleep(0.1)
            dashboard.publish(frames[4], np.zeros((300, 400, 3), np.uint8), DashboardStats())
            assert len(_receive_until(ws, "frame")["_jpeg"]) > 100
        assert controls.state.paused


def test_without_websockets_the_message_says_what_to_install(monkeypatch):
    from facewire.tracker.web import WebUnavailableError, server
    monkeypatch.setattr(server, "serve", None)
    with pytest.raises(WebUnavailableError, match=r"pip install 'facewire\[web\]'"):
        Dashboard("127.0.0.1", 0)


def test_bad_dashboard_settings_are_named():
    with pytest.raises(ValueError, match="jpeg_quality=0"):
        Dashboard("127.0.0.1", 0, jpeg_quality=0)


def test_images_off_for_the_whole_dashboard():
    """``images=False`` (a privacy setting of the tracker): full-access pages get the data, never a picture."""
    frames = video_frames()
    with Dashboard("127.0.0.1", 0, TrackerControls(), images=False) as dashboard:
        with connect(f"ws://127.0.0.1:{dashboard.port}/ws") as ws:
            hello = _receive_until(ws, "hello")
            assert hello["access"] == "full" and hello["images"] is False
            ws.send(json.dumps({"type": "image", "on": True}))
            assert _receive_until(ws, "image")["on"] is False
            for k in range(3):
                dashboard.publish(frames[k], np.zeros((300, 400, 3), np.uint8), DashboardStats())
                message = _receive_until(ws, "frame")
                assert "_jpeg" not in message and message["faces"][0]["id"] == 0
                time.sleep(0.12)
