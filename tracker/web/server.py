"""The dashboard: one page and its WebSocket, served beside the tracking loop on a thread of its own.

The loop calls ``publish`` once per frame. With no page open that is one attribute test and nothing else:
no copy, no encoding, no extra tracking work (``needs`` is empty). With pages open, at most ``data_hz``
frames a second are put in a one-frame slot (the image reduced to about ``image_width`` and at most
``image_hz`` times a second); the server thread polls that slot and encodes each frame once for every
page. Nothing wakes the server from ``publish``: a wake-up would hand it the interpreter lock while the loop
runs Python code, and the loop would wait for the encoding (measured: 15 ms at the 90th percentile on a
busy machine, against 0.07 ms polled). Each page has a latest-only slot: a page that reads
slowly or stalls loses frames (counted and shown to it), never slows the loop or the other pages.

The server is ``websockets`` (the ``web`` extra); the page, its script and style ship in ``static/``.
"""
from __future__ import annotations

import asyncio
import http
import json
import logging
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from ..result import NEEDS, FrameResult
from .access import Access, AccessLevel
from .controls import ControlError, TrackerControls
from .payload import DashboardStats, encode, frame_message, hello_message, pack_image_message

try:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.datastructures import Headers
    from websockets.exceptions import ConnectionClosed
    from websockets.http11 import Request, Response
except ImportError:          # the ``web`` extra is not installed; Dashboard() says so
    serve = None

log = logging.getLogger(__name__)

__all__ = ["Dashboard", "DashboardError", "WebUnavailableError"]

_HTML = ("index.html", "text/html; charset=utf-8")
_STATIC = {"/": _HTML, "/index.html": _HTML, "/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/style.css": ("style.css", "text/css; charset=utf-8")}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
_CLOSE_REFUSED = 4403
_MAX_MESSAGE = 4096


class WebUnavailableError(RuntimeError):
    """--web was asked for but the ``websockets`` library (the ``web`` extra) is not installed."""


class DashboardError(OSError):
    """The dashboard cannot listen on its address; the message names it."""


@dataclass
class _Snapshot:
    frame: FrameResult
    image: np.ndarray | None
    stats: DashboardStats | None


class _Page:
    """One connected page: its access, its image choice and its latest-only slot."""

    def __init__(self, connection: "ServerConnection", level: AccessLevel) -> None:
        self.connection = connection
        self.level = level
        self.wants_image = level is AccessLevel.FULL
        self.slot: str | bytes | None = None
        self.ready = asyncio.Event()
        self.sent = 0
        self.dropped = 0

    def offer(self, message: str | bytes) -> None:
        if self.slot is not None:
            self.dropped += 1
        self.slot = message
        self.ready.set()


class Dashboard:
    """``start()``, then ``publish(frame, image, stats)`` per frame from the loop, ``close()`` at the end."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, controls: TrackerControls | None = None, *,
                 token: str | None = None, token_required: bool | None = None, images: bool = True,
                 data_hz: float = 15.0, image_hz: float = 10.0, image_width: int = 320, jpeg_quality: int = 70,
                 max_pages: int = 8) -> None:
        """``port`` 0 picks a free port (``self.port`` after ``start``). ``controls``: what the pages may
        change (None: a page can only watch). ``token_required``: None = on every address but loopback;
        ``token``: a fixed token instead of a random one. ``images=False`` never sends the camera image.
        """
        if not (data_hz > 0 and image_hz > 0 and image_width >= 16 and 1 <= jpeg_quality <= 100 and max_pages >= 1):
            raise ValueError(f"dashboard settings out of range: data_hz={data_hz}, image_hz={image_hz} (> 0), "
                             f"image_width={image_width} (>= 16), jpeg_quality={jpeg_quality} (1..100), "
                             f"max_pages={max_pages} (>= 1)")
        if serve is None:
            raise WebUnavailableError("--web needs the websockets library, which is not installed; "
                                      "install it with: pip install 'facewire[web]'")
        self.access = Access.for_address(host, port, token, token_required)
        self.controls = controls
        self.images = images
        self._data_period = 1.0 / data_hz
        self._image_period = 1.0 / image_hz
        self._image_width = int(image_width)
        self._jpeg_quality = int(jpeg_quality)
        self._max_pages = int(max_pages)
        self._pages: set[_Page] = set()
        self._page_count = 0              # read by the loop's thread without a lock (an int)
        self._image_pages = 0
        self._next_data = self._next_image = 0.0
        self._pending: _Snapshot | None = None
        self._poll = self._data_period / 2          # a frame waits at most this long in the slot
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.port = port
        self.published = 0

    # --- the loop's side --------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while at least one page is connected."""
        return self._page_count > 0

    @property
    def needs(self) -> frozenset[str]:
        """The optional work (``result.NEEDS``) the loop must do for the pages: everything while one is
        open (pose for the axes, mesh for the overlay, blendshapes for the bars), nothing otherwise."""
        return NEEDS if self._page_count else frozenset()

    def publish(self, frame: FrameResult, image: np.ndarray | None = None,
                stats: DashboardStats | Callable[[], DashboardStats] | None = None) -> None:
        """Hand one frame to the pages. Never blocks; with no page open it returns at once.

        ``image``: the BGR frame the result was computed on (after mirroring); only a reduced copy is kept.
        ``stats``: the figures, or a function returning them (called only when the frame is published).
        """
        if not self._page_count:
            return
        now = time.perf_counter()
        if now < self._next_data:
            return
        self._next_data = now + self._data_period * 0.9     # a little slack so a 15 Hz source is not halved
        small = None
        if image is not None and self._image_pages and self.images and now >= self._next_image:
            self._next_image = now + self._image_period * 0.9
            small = self._reduce(image)
        # No wake-up call: waking the server thread here would hand it the interpreter lock while the loop
        # is in Python code, and the loop would wait for the encoding. The server polls the slot instead
        # and mostly runs while the loop is inside the models (which release the lock).
        self._pending = _Snapshot(frame, small, stats() if callable(stats) else stats)
        self.published += 1

    def _reduce(self, image: np.ndarray) -> np.ndarray:
        """Every n-th pixel (n = width / image_width, rounded), copied: a preview needs no filtering, and a
        plain copy neither waits for nor hands over the interpreter lock as an OpenCV call would."""
        step = max(1, round(image.shape[1] / self._image_width))
        return image[::step, ::step].copy()

    # --- lifetime ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The page's URL, with the token when one is needed (print it for the user)."""
        return Access(self.access.host, self.port, self.access.token).page_url()

    def start(self, timeout: float = 10.0) -> str:
        """Listen (raises DashboardError when the address cannot be used) and return the page's URL."""
        self._thread = threading.Thread(target=self._run, name="facewire-dashboard", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise DashboardError(f"--web {self.access.host}:{self.access.port}: the server did not start")
        if self._error is not None:
            self._thread.join()
            raise DashboardError(f"--web {self.access.host}:{self.access.port}: cannot listen there "
                                 f"({self._error})") from None
        log.info("dashboard at %s", self.url)
        return self.url

    def close(self) -> None:
        """Close every page and stop the server (waits at most a few seconds)."""
        if self._loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(5.0)
        self._page_count = self._image_pages = 0      # publish is a no-op from now on

    def __enter__(self) -> "Dashboard":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            self._loop = None
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            server = await serve(self._handle, self.access.host, self.access.port, process_request=self._http,
                                 compression=None, max_size=_MAX_MESSAGE, server_header=None,
                                 ping_interval=10, ping_timeout=20, close_timeout=2)
        except OSError as exc:
            self._error = exc
            self._started.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        pump = asyncio.create_task(self._pump())
        try:
            await self._stop.wait()
        finally:
            pump.cancel()
            server.close()
            await server.wait_closed()

    async def _pump(self) -> None:
        """Take the newest published frame from the slot, every few milliseconds while a page is open."""
        while True:
            await asyncio.sleep(self._poll if self._pages else 0.25)
            if self._pending is not None:
                self._deliver()

    # --- the server's side ------------------------------------------------------------------------------

    def _http(self, connection: "ServerConnection", request: "Request") -> "Response | None":
        """Serve the static page; let WebSocket requests on /ws through once their Host and Origin pass."""
        reason = self.access.check_request(request.headers.get("Host"), request.headers.get("Origin"))
        if reason is not None:
            log.warning("dashboard: refused a request from %s: %s", connection.remote_address, reason)
            return connection.respond(http.HTTPStatus.FORBIDDEN, f"Forbidden: {reason}\n")
        path = urlsplit(request.path).path
        if path == "/ws":
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return connection.respond(http.HTTPStatus.BAD_REQUEST, "WebSocket only\n")
            return None
        if path not in _STATIC:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not found\n")
        name, content_type = _STATIC[path]
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)), **_SECURITY_HEADERS})
        return Response(200, "OK", headers, body)

    async def _handle(self, connection: "ServerConnection") -> None:
        query = parse_qs(urlsplit(connection.request.path).query)
        presented = query.get("token", [None])[-1]
        level = self.access.level(presented)
        state = self.controls.state if self.controls else None
        images = self.images and level is AccessLevel.FULL
        if level is AccessLevel.REFUSED:
            log.warning("dashboard: refused a page from %s: wrong token", connection.remote_address)
            await connection.send(encode(hello_message(level.value, "wrong token", None, False)))
            await connection.close(_CLOSE_REFUSED, "wrong token")
            return
        if len(self._pages) >= self._max_pages:
            await connection.close(1013, f"at most {self._max_pages} pages at once")
            return
        reason = None if level is AccessLevel.FULL else \
            "no token: numbers only; open the URL the tracker printed (with ?token=) for the image and controls"
        await connection.send(encode(hello_message(level.value, reason, state, images)))
        page = _Page(connection, level)
        page.wants_image = images
        self._add(page)
        sender = asyncio.create_task(self._send_loop(page))
        try:
            async for message in connection:
                reply = self._on_message(page, message)
                if reply is not None:
                    await connection.send(encode(reply))
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            self._remove(page)

    def _add(self, page: _Page) -> None:
        self._pages.add(page)
        self._count()
        log.info("dashboard: page connected from %s (%s access)", page.connection.remote_address, page.level.value)

    def _remove(self, page: _Page) -> None:
        self._pages.discard(page)
        self._count()
        log.info("dashboard: page from %s left (%d frames sent, %d dropped)", page.connection.remote_address,
                 page.sent, page.dropped)

    def _count(self) -> None:
        self._image_pages = sum(p.wants_image for p in self._pages)
        self._page_count = len(self._pages)

    async def _send_loop(self, page: _Page) -> None:
        last_report = 0.0
        try:
            while True:
                await page.ready.wait()
                page.ready.clear()
                message, page.slot = page.slot, None
                if message is None:
                    continue
                await page.connection.send(message)
                page.sent += 1
                now = time.perf_counter()
                if now - last_report > 1.0:
                    last_report = now
                    await page.connection.send(encode({"type": "page", "sent": page.sent, "dropped": page.dropped}))
        except ConnectionClosed:
            pass

    def _deliver(self) -> None:
        """On the server thread: encode the newest snapshot once and offer it to every page."""
        snapshot, self._pending = self._pending, None
        if snapshot is None or not self._pages:
            return
        controls = self.controls
        message = frame_message(snapshot.frame, snapshot.stats, controls.state if controls else None,
                                controls.applied if controls else None)
        text = encode(message)
        with_image = None
        if snapshot.image is not None and any(p.wants_image for p in self._pages):
            ok, jpeg = cv2.imencode(".jpg", snapshot.image, [cv2.IMWRITE_JPEG_QUALITY, self._jpeg_quality])
            if ok:
                with_image = pack_image_message(text, jpeg.tobytes())
        for page in self._pages:
            page.offer(with_image if with_image is not None and page.wants_image else text)

    def _on_message(self, page: _Page, raw: str | bytes) -> dict[str, Any] | None:
        """A page's request: the image toggle (any page), control changes (full access only)."""
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, TypeError, KeyError):
            return {"type": "error", "message": "messages must be JSON objects with a type"}
        if kind == "image":
            on = message.get("on")
            if not isinstance(on, bool):
                return {"type": "error", "message": "image: 'on' must be true or false"}
            if on and page.level is not AccessLevel.FULL:
                return {"type": "refused", "what": "image", "reason": "the camera image needs the token"}
            page.wants_image = on and self.images
            self._count()
            return {"type": "image", "on": page.wants_image}
        if kind not in ("control", "relearn"):
            return {"type": "error", "message": f"unknown message type {kind!r}"}
        if page.level is not AccessLevel.FULL:
            log.warning("dashboard: refused a control message from %s without the token",
                        page.connection.remote_address)
            return {"type": "refused", "what": kind, "reason": "controls need the token printed by the tracker"}
        if self.controls is None:
            return {"type": "error", "message": "this tracker takes no controls"}
        try:
            state = self.controls.request_neutral() if kind == "relearn" else \
                self.controls.update(message.get("set", {}))
        except ControlError as exc:
            return {"type": "error", "message": str(exc)}
        return {"type": "controls", "controls": state.as_dict()}
