"""Browser tests' helpers: headless Chromium driven over the DevTools protocol, and a tracking loop.

``Browser`` starts Debian's Chromium headless with a fresh profile and speaks the DevTools protocol
(JSON over a WebSocket) with ``websockets``' client: open a page, evaluate JavaScript, take a screenshot.

``TrackerRun`` is the daemon's loop in miniature, on a thread, over the shared video: read the controls
once per frame, mirror when asked, track, build the FrameResult (``outputs_support.Pipeline``), smooth,
send through a real ``OutputGroup`` unless paused, and publish to the dashboard. The daemon's own loop is
being rewritten elsewhere; this stands in for it until the dashboard is wired in.

SMOOTHING IS A STAND-IN. The real smoother (issue 9) is not on this branch; ``SmootherStandIn`` is a
plain exponential filter per signal group with the control's strength as its weight, enough to show that
the page's control reaches the values that are sent.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from websockets.sync.client import connect

from facewire.tracker.outputs import OutputGroup
from facewire.tracker.packets import RecordBuilder
from facewire.tracker.result import FaceResult, FrameResult, Pose
from facewire.tracker.tracking import FaceTracker, TrackingConfig
from facewire.tracker.web import DashboardStats, TrackerControls

from conftest import data_path
from outputs_support import VIDEO, Pipeline

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--mute-audio", "--hide-scrollbars", "--window-size=1280,1100"]


def find_chromium() -> str | None:
    for name in (os.environ.get("FACEWIRE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def require_chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium found (install Debian's chromium package: apt-get install -y chromium, "
                    "or set FACEWIRE_CHROMIUM to a Chromium/Chrome executable)")
    return path


class DevToolsError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, executable: str, timeout: float = 30.0) -> None:
        self.profile = tempfile.mkdtemp(prefix="facewire-chromium-")
        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._endpoint: str | None = None
        found = threading.Event()
        self.log: list[str] = []

        def read_stderr() -> None:
            for line in self.process.stderr:
                self.log.append(line.rstrip())
                if line.startswith("DevTools listening on "):
                    self._endpoint = line.split(" on ", 1)[1].strip()
                    found.set()
        threading.Thread(target=read_stderr, daemon=True).start()
        if not found.wait(timeout):
            self.close()
            raise DevToolsError("Chromium did not start its DevTools endpoint:\n" + "\n".join(self.log[-20:]))
        self._connection = connect(self._endpoint, max_size=2**26, open_timeout=timeout)
        self._socket = self._connection.__enter__()
        self._id = 0
        self._session: str | None = None

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if self._session and not method.startswith("Target."):
            message["sessionId"] = self._session
        self._socket.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self._socket.recv(timeout=max(0.01, deadline - time.monotonic())))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, what: str | None = None):
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except DevToolsError:
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or expression}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if getattr(self, "_socket", None) is not None:
                try:
                    self.call("Browser.close", timeout=5)
                except Exception:       # noqa: BLE001 - closing anyway
                    pass
                self._connection.__exit__(None, None, None)
        finally:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)


# --- the loop ------------------------------------------------------------------------------------------

def _blend(previous: np.ndarray | None, value: np.ndarray | None, weight: float):
    if previous is None or value is None or weight == 0.0 or previous.shape != value.shape:
        return value
    out = (weight * previous + (1.0 - weight) * value).astype(value.dtype)
    out.setflags(write=False)
    return out


class SmootherStandIn:
    """Exponential smoothing per signal group (see the module docstring: a stand-in, not the smoother)."""

    def __init__(self) -> None:
        self._last: dict[int, FaceResult] = {}

    def apply(self, frame: FrameResult, strength) -> FrameResult:
        faces = []
        for face in frame.faces:
            last = self._last.get(face.id)
            if last is not None:
                w = {group: 0.9 * float(value) for group, value in strength.items()}
                pose = face.pose
                if pose is not None and last.pose is not None and w["pose"]:
                    ypr = _blend(np.array([last.pose.yaw, last.pose.pitch, last.pose.roll]),
                                 np.array([pose.yaw, pose.pitch, pose.roll]), w["pose"])
                    pose = Pose(float(ypr[0]), float(ypr[1]), float(ypr[2]), pose.quaternion,
                                _blend(last.pose.translation, pose.translation, w["pose"]))
                face = dataclasses.replace(
                    face, pose=pose, box=_blend(last.box, face.box, w["points"]),
                    points68=_blend(last.points68, face.points68, w["points"]),
                    mesh=_blend(last.mesh, face.mesh, w["points"]),
                    gaze_right=_blend(last.gaze_right, face.gaze_right, w["gaze"]),
                    gaze_left=_blend(last.gaze_left, face.gaze_left, w["gaze"]),
                    blendshapes=_blend(last.blendshapes, face.blendshapes, w["blendshapes"]))
            self._last[face.id] = face
            faces.append(face)
        return dataclasses.replace(frame, faces=tuple(faces))


def load_video(count: int = 90, video: tuple[str, ...] = VIDEO) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(data_path(*video)))
    images = []
    while len(images) < count:
        ok, image = capture.read()
        if not ok:
            break
        images.append(image)
    capture.release()
    assert len(images) == count, f"could not read {count} frames of {video[-1]}"
    return images


@dataclasses.dataclass
class FrameLog:
    index: int                 # which video frame
    mirrored: bool
    raw: FaceResult | None     # before smoothing
    result: FrameResult        # as sent (after smoothing)
    sent: bool


class TrackerRun:
    """The loop on a thread, looping the video at ``fps`` until ``stop``."""

    def __init__(self, images: list[np.ndarray], controls: TrackerControls, outputs: OutputGroup, dashboard,
                 fps: float = 30.0, max_faces: int = 1) -> None:
        self.images = images
        self.controls = controls
        self.outputs = outputs
        self.dashboards = list(dashboard) if isinstance(dashboard, (list, tuple)) else [dashboard]
        self.period = 1.0 / fps
        self.pipeline = Pipeline()
        self.pipeline.tracker = FaceTracker(TrackingConfig(max_faces=max_faces))
        self.smoother = SmootherStandIn()
        self.log: dict[int, FrameLog] = {}
        self.relearned_at: list[int] = []
        self.processing_ms: list[float] = []
        self.latency_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tracker-run", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> "TrackerRun":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def frame(self) -> int:
        return self.pipeline.count

    def stats(self) -> DashboardStats:
        recent = self.processing_ms[-30:] or [0.0]
        latency = self.latency_ms[-30:] or [0.0]
        return DashboardStats(fps=1.0 / self.period, processing_ms=float(np.median(recent)),
                              latency_ms=float(np.median(latency)), dropped_frames=0, outputs=self.outputs.stats())

    def _run(self) -> None:
        try:
            next_at = time.perf_counter()
            while not self._stop.is_set():
                number = self.pipeline.count + 1
                index = (number - 1) % len(self.images)
                state = self.controls.read(number)
                started = time.perf_counter()
                image = self.images[index]
                if state.mirror:
                    image = np.ascontiguousarray(image[:, ::-1])
                if state.relearn_neutral:          # the expression features learn this user again
                    self.pipeline.records = RecordBuilder()
                    self.relearned_at.append(number)
                raw = self.pipeline(image)
                result = self.smoother.apply(raw, state.smoothing)
                if not state.paused:
                    self.outputs.send(result)
                done = time.perf_counter()
                self.processing_ms.append((done - started) * 1000)
                self.latency_ms.append((done - result.capture_monotonic) * 1000)
                self.log[number] = FrameLog(index, state.mirror, raw.faces[0] if raw.faces else None, result,
                                            not state.paused)
                for dashboard in self.dashboards:
                    dashboard.publish(result, image, self.stats)
                next_at += self.period
                time.sleep(max(0.0, next_at - time.perf_counter()))
        except BaseException as exc:       # noqa: BLE001 - reported by the test
            self.error = exc
            raise
