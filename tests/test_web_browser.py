"""The dashboard page in real headless Chromium, fed by the tracker running on a shared video.

One run feeds two dashboards: an open one on loopback and one that requires a token. Checks: the overlay
is drawn where the face is and redrawn, the bars show the sent values and change, the camera image can be
switched off, the controls reach the loop (smoothing off makes the sent head angles the raw ones, pause
stops the datagrams, mirror flips the face, the neutral face is re-learned) and the page reports the frame
each change took effect in, and a wrong token or none is refused. Screenshots go to pytest's tmp_path (and
to $FACEWIRE_DASHBOARD_SCREENSHOT when set: the README's picture is taken this way).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import cv2
import pytest

pytest.importorskip("websockets", reason="the dashboard needs the web extra: pip install -e '.[web]'")

from facewire.client.arkit import ARKIT_NAMES  # noqa: E402
from facewire.client.msgpack_receiver import MsgpackReceiver  # noqa: E402
from facewire.tracker.outputs import OutputGroup  # noqa: E402
from facewire.tracker.web import Dashboard, TrackerControls  # noqa: E402

from web_support import Browser, TrackerRun, load_video, require_chromium  # noqa: E402

TOKEN = "a-token-for-the-browser-test"
MESH_GREEN = "d[i + 1] > 200 && d[i] < 120 && d[i + 2] > 100 && d[i + 2] < 190"   # #35f08f, antialiased


class Sent:
    """What the msgpack output put on the wire, by frame number (received with the client SDK)."""

    def __init__(self) -> None:
        self.faces: dict[int, object] = {}
        self.lock = threading.Lock()

    def __call__(self, faces) -> None:
        with self.lock:
            for face in faces:
                self.faces[face.frame] = face

    def frames(self) -> list[int]:
        with self.lock:
            return sorted(self.faces)

    def newest(self) -> int:
        frames = self.frames()
        return frames[-1] if frames else 0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    chromium = require_chromium()
    images = load_video(90)
    controls = TrackerControls({"pose": 0.8})
    sent = Sent()
    receiver = MsgpackReceiver(port=0, on_frame=sent)
    outputs = OutputGroup.from_urls([f"msgpack://127.0.0.1:{receiver.address[1]}"])
    outputs.open()
    open_dashboard = Dashboard("127.0.0.1", 0, controls)
    guarded = Dashboard("127.0.0.1", 0, controls, token=TOKEN, token_required=True)
    open_dashboard.start()
    guarded.start()
    run = TrackerRun(images, controls, outputs, [open_dashboard, guarded]).start()
    browser = Browser(chromium)
    try:
        yield {"browser": browser, "run": run, "controls": controls, "sent": sent, "dashboard": open_dashboard,
               "guarded": guarded, "shots": tmp_path_factory.mktemp("screenshots"), "chromium": chromium}
    finally:
        browser.close()
        run.stop()
        open_dashboard.close()
        guarded.close()
        outputs.close()
        receiver.close()
    assert run.error is None


@pytest.fixture(scope="module")
def page(setup):
    browser = setup["browser"]
    browser.open(setup["dashboard"].url)
    browser.wait_for("window.facewireDebug && facewireDebug.images >= 3", what="the first camera images")
    return browser


def _canvas_colours(browser) -> dict:
    """Counts of overlay-green pixels (and their centroid) and of background pixels on the canvas."""
    return browser.evaluate(f"""(() => {{
        const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let green = 0, gx = 0, gy = 0, background = 0;
        for (let i = 0; i < d.length; i += 4) {{
            if ({MESH_GREEN}) {{ green++; const p = i / 4; gx += p % c.width; gy += Math.floor(p / c.width); }}
            if (d[i] === 11 && d[i + 1] === 13 && d[i + 2] === 16) background++;
        }}
        return {{green, gx: gx / green, gy: gy / green, background, pixels: c.width * c.height, width: c.width,
                 frame: facewireDebug.lastFrame, overlays: facewireDebug.overlays}};
    }})()""")


def _bars(browser) -> dict:
    return browser.evaluate("""(() => {
        const out = {frame: facewireDebug.lastFrame, yaw: document.querySelector('.face .yaw').textContent};
        for (const row of document.querySelectorAll('.face .bar')) out[row.dataset.name] = +row.dataset.value;
        return out;
    })()""")


def _wait_applied(browser, what: str) -> int:
    """Wait until the page says the change took effect; the frame it names."""
    text = browser.wait_for("(() => { const t = document.getElementById('control-status').textContent; "
                            "return t.startsWith('applied') ? t : null; })()", what=f"{what} to be applied")
    assert what in text
    return int(browser.evaluate("facewireDebug.appliedFrame"))


def _wait_for_frame(setup, frame: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while setup["run"].frame < frame:
        assert time.monotonic() < deadline, f"the loop did not reach frame {frame}"
        time.sleep(0.05)


def test_overlay_is_drawn_on_the_face_and_redrawn(setup, page):
    run = setup["run"]
    first = _canvas_colours(page)
    face = run.log[first["frame"]].result.faces[0]
    scale = first["width"] / 400
    cx, cy = (face.box[0] + face.box[2]) / 2 * scale, (face.box[1] + face.box[3]) / 2 * scale
    assert first["green"] > 150, "no mesh drawn"
    assert abs(first["gx"] - cx) < 15 * scale and abs(first["gy"] - cy) < 20 * scale, "mesh not on the face"
    assert first["background"] < 0.01 * first["pixels"]                        # the camera image is under it
    time.sleep(1.0)
    second = _canvas_colours(page)
    assert second["overlays"] > first["overlays"] + 5 and second["frame"] > first["frame"]
    # everything the page loaded came from the dashboard itself (the WebSocket included)
    origin = setup["dashboard"].url.rstrip("/")
    loaded = page.evaluate("[location.href, ...performance.getEntriesByType('resource').map(e => e.name)]")
    assert len(loaded) >= 3 and all(url.startswith(origin) for url in loaded), loaded
    page.screenshot(setup["shots"] / "dashboard.png")
    if os.environ.get("FACEWIRE_DASHBOARD_SCREENSHOT"):      # the README's picture: 32 levels per channel
        shot = cv2.imread(str(setup["shots"] / "dashboard.png"))  # keep it under 200 KB
        cv2.imwrite(os.environ["FACEWIRE_DASHBOARD_SCREENSHOT"], shot // 8 * 8 + 4, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def test_bars_show_the_sent_values_and_update(setup, page):
    run = setup["run"]
    shown = _bars(page)
    face = run.log[shown["frame"]].result.faces[0]
    assert len([k for k in shown if k in ARKIT_NAMES]) == 52
    for k, name in enumerate(ARKIT_NAMES):
        assert shown[name] == pytest.approx(float(face.blendshapes[k]), abs=2e-3), name
    assert shown["left"] == pytest.approx(face.eye_open_left, abs=2e-3)
    assert shown["mouth_open"] == pytest.approx(face.feature("mouth_open"), abs=2e-3)
    assert shown["yaw"] == f"{face.pose.yaw:.1f}°"
    changed = False
    for _ in range(30):
        time.sleep(0.1)
        later = _bars(page)
        if later["frame"] != shown["frame"] and any(later[n] != shown[n] for n in ARKIT_NAMES):
            changed = True
            break
    assert changed, "the blendshape bars did not change over 3 s of video"
    assert page.evaluate("document.getElementById('stat-fps').textContent") == "30.0"
    rows = page.evaluate("[...document.querySelectorAll('#outputs tbody tr')].map(r => r.innerText)")
    assert len(rows) == 1 and rows[0].startswith("msgpack://127.0.0.1:") and "running" in rows[0]


def test_camera_image_can_be_switched_off(setup, page):
    page.evaluate("document.getElementById('show-image').click()")
    page.wait_for("!document.getElementById('show-image').checked")
    time.sleep(0.5)                           # images already on their way may still arrive
    images = page.evaluate("facewireDebug.images")
    time.sleep(1.0)
    colours = _canvas_colours(page)
    assert page.evaluate("facewireDebug.images") == images, "images still sent after switching them off"
    assert colours["background"] > 0.9 * colours["pixels"] and colours["green"] > 150   # mesh on plain background
    page.screenshot(setup["shots"] / "dashboard-no-image.png")
    page.evaluate("document.getElementById('show-image').click()")
    page.wait_for(f"facewireDebug.images > {images}", what="images after switching them on again")


def test_smoothing_off_makes_the_sent_values_the_raw_ones(setup, page):
    run, sent = setup["run"], setup["sent"]
    before = [f for f in sent.frames() if run.log.get(f) and run.log[f].raw]
    differences = [abs(sent.faces[f].yaw - run.log[f].raw.pose.yaw) for f in before[-60:]]
    assert max(differences) > 0.05, "pose smoothing at 0.8 should change the sent yaw"
    page.evaluate("(() => { const i = document.getElementById('smooth-pose'); i.value = 0; "
                  "i.dispatchEvent(new Event('change')); })()")
    applied = _wait_applied(page, "smoothing pose off")
    assert setup["controls"].state.smoothing["pose"] == 0.0
    assert page.evaluate("document.getElementById('smooth-pose-value').textContent") == "off"
    _wait_for_frame(setup, applied + 30)
    time.sleep(0.2)
    after = [f for f in sent.frames() if applied <= f <= applied + 30 and run.log[f].raw]
    assert len(after) >= 25
    for f in after:
        assert sent.faces[f].yaw == pytest.approx(run.log[f].raw.pose.yaw, abs=1e-3), f"frame {f}"


def test_pause_stops_sending_and_resume_restarts(setup, page):
    sent = setup["sent"]
    page.evaluate("document.getElementById('paused').click()")
    paused_at = _wait_applied(page, "pause sending")
    _wait_for_frame(setup, paused_at + 20)
    time.sleep(0.2)
    assert paused_at - 5 <= max(sent.frames()) < paused_at        # (a datagram may be lost on the way)
    assert all(not setup["run"].log[f].sent for f in range(paused_at, paused_at + 20))
    assert "paused" in page.evaluate("document.querySelector('#outputs tbody tr').innerText")
    page.evaluate("document.getElementById('paused').click()")
    resumed_at = _wait_applied(page, "resume sending")
    _wait_for_frame(setup, resumed_at + 10)
    time.sleep(0.2)
    after = [f for f in sent.frames() if f >= paused_at]
    assert after and resumed_at <= after[0] <= resumed_at + 3
    assert all(setup["run"].log[f].sent for f in range(resumed_at, resumed_at + 10))


def test_mirror_flips_the_input(setup, page):
    run = setup["run"]
    page.evaluate("document.getElementById('mirror').click()")
    mirrored_at = _wait_applied(page, "mirror the input")
    _wait_for_frame(setup, mirrored_at + 20)
    assert page.evaluate("document.getElementById('mirror').checked")
    compared = 0
    for f in range(mirrored_at, mirrored_at + 20):
        entry = run.log[f]
        assert entry.mirrored
        plain = next(e for e in run.log.values() if e.index == entry.index and not e.mirrored and e.raw)
        centre, plain_centre = (entry.raw.box[0] + entry.raw.box[2]) / 2, (plain.raw.box[0] + plain.raw.box[2]) / 2
        assert centre == pytest.approx(399 - plain_centre, abs=4)
        compared += 1
    assert compared == 20
    page.screenshot(setup["shots"] / "dashboard-mirrored.png")
    page.evaluate("document.getElementById('mirror').click()")
    _wait_applied(page, "stop mirroring")


def test_relearn_neutral_reaches_the_loop(setup, page):
    page.evaluate("document.getElementById('relearn').click()")
    applied = _wait_applied(page, "re-learn the neutral face")
    assert setup["run"].relearned_at == [applied]


def _other_page(setup, url: str, name: str) -> Browser:
    browser = Browser(setup["chromium"])
    browser.open(url)
    return browser


def test_wrong_token_is_refused(setup):
    guarded = setup["guarded"]
    version = setup["controls"].state.version
    browser = _other_page(setup, guarded.url.replace(TOKEN, "not-the-right-token-at-all"), "wrong")
    try:
        browser.wait_for("document.getElementById('connection').textContent.startsWith('refused')",
                         what="the page to say it was refused")
        time.sleep(1.0)
        assert browser.evaluate("facewireDebug.frames") == 0 and browser.evaluate("facewireDebug.images") == 0
        assert browser.evaluate("facewireDebug.access") == "refused"
        browser.screenshot(setup["shots"] / "dashboard-wrong-token.png")
    finally:
        browser.close()
    assert setup["controls"].state.version == version


def test_no_token_watches_numbers_only(setup):
    guarded = setup["guarded"]
    version = setup["controls"].state.version
    url = guarded.url.split("?")[0]
    browser = _other_page(setup, url, "none")
    try:
        browser.wait_for("facewireDebug.frames >= 10", what="frames on the page without a token")
        assert browser.evaluate("facewireDebug.access") == "view"
        assert browser.evaluate("facewireDebug.images") == 0
        assert browser.evaluate("document.getElementById('relearn').disabled")
        browser.evaluate("socket.send(JSON.stringify({type: 'control', set: {paused: true}}))")
        browser.evaluate("socket.send(JSON.stringify({type: 'image', on: true}))")
        browser.wait_for("facewireDebug.refused.length === 2", what="both requests refused")
        assert browser.evaluate("facewireDebug.refused") == ["control", "image"]
        time.sleep(0.5)
        assert browser.evaluate("facewireDebug.images") == 0
        assert setup["controls"].state.version == version and not setup["controls"].state.paused
        browser.screenshot(setup["shots"] / "dashboard-view-only.png")
    finally:
        browser.close()


def test_right_token_gets_everything(setup):
    browser = _other_page(setup, setup["guarded"].url, "right")
    try:
        browser.wait_for("facewireDebug.images >= 3", what="camera images with the token")
        assert browser.evaluate("facewireDebug.access") == "full"
        assert not browser.evaluate("document.getElementById('relearn').disabled")
    finally:
        browser.close()


def test_two_faces_get_two_cards_and_two_meshes(setup, tmp_path):
    """The two-people clip (640x360: the preview is every 2nd pixel) with --faces 2."""
    images = load_video(60, ("videos", "two_people_static_640x360.avi"))
    controls = TrackerControls()
    outputs = OutputGroup([])
    with Dashboard("127.0.0.1", 0, controls) as dashboard:
        run = TrackerRun(images, controls, outputs, dashboard, max_faces=2).start()
        browser = _other_page(setup, dashboard.url, "two")
        try:
            browser.wait_for("facewireDebug.images >= 3 && document.querySelectorAll('.face').length === 2",
                             what="two faces on the page")
            ids = browser.evaluate("[...document.querySelectorAll('.face')].map(e => +e.dataset.id)")
            assert sorted(ids) == sorted(f.id for f in run.log[run.frame - 1].result.faces)
            halves = browser.evaluate(f"""(() => {{
                const c = document.getElementById('canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                const count = [0, 0];
                for (let i = 0; i < d.length; i += 4)
                    if ({MESH_GREEN}) count[(i / 4) % c.width < c.width / 2 ? 0 : 1]++;
                return {{count, width: c.width, height: c.height}};
            }})()""")
            assert halves["width"] == 640 and halves["height"] == 360
            assert min(halves["count"]) > 100, f"a face without its mesh: {halves}"
            browser.screenshot(tmp_path / "dashboard-two-faces.png")
        finally:
            browser.close()
            run.stop()
    assert run.error is None
