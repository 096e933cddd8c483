"""Frame capture: cameras, video files, image folders and raw RGB streams behind one iterator API.

The tracker only ever sees `Frame` objects coming out of a `FrameSource`. `open_source` picks the
right source for a `CaptureConfig`; `LatestFrameReader` decouples a live source from a slower
consumer so the tracker always works on the newest frame; `camera_backends` picks the system's camera
API (DirectShow/Media Foundation, AVFoundation, V4L2) and `list_cameras` lists cameras with their
names (and, on Linux, their modes) for `--list-cameras`.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import queue
import re
import select
import stat
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Callable, NamedTuple, Protocol

import cv2
import numpy as np

logger = logging.getLogger(__name__)

FOURCC_CHOICES = ("MJPG", "YUYV")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
RAW_STDIN = "-"


class CaptureError(RuntimeError):
    """A frame source could not be opened or failed while reading."""


class CameraNotFoundError(CaptureError):
    """The requested camera could not be opened."""


@dataclass(frozen=True)
class CaptureConfig:
    """Where frames come from and how to read them.

    `source` is a camera index ("0"), a device path ("/dev/video2"), a video file, a folder of
    images, or "-" for raw RGB on stdin. width/height/fps/fourcc request a camera mode (the camera
    may pick the nearest one it supports); width/height also give the frame size of raw RGB input.
    """

    source: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = None
    mirror: bool = False
    repeat_video: bool = False
    pace: bool = False
    raw_rgb: bool = False

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("capture source must not be empty")
        for label, value in (("width", self.width), ("height", self.height)):
            if value is not None and value <= 0:
                raise ValueError(f"{label} must be positive, got {value}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.fourcc is not None and self.fourcc not in FOURCC_CHOICES:
            raise ValueError(f"fourcc must be one of {', '.join(FOURCC_CHOICES)} or None, got {self.fourcc!r}")
        if self.is_raw and (self.width is None or self.height is None):
            raise ValueError("raw RGB input needs width and height to know where each frame ends")

    @property
    def is_raw(self) -> bool:
        """True when the source is a raw RGB byte stream ("-" means stdin)."""
        return self.raw_rgb or self.source == RAW_STDIN


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image (BGR uint8) with when it was read and where it came from."""

    image: np.ndarray
    index: int
    timestamp: float
    monotonic: float
    source_name: str


@dataclass(frozen=True)
class Backoff:
    """Exponential reconnect schedule: initial, initial*factor, ... capped at maximum (seconds)."""

    initial: float = 0.5
    maximum: float = 8.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.maximum >= self.initial and self.factor >= 1):
            raise ValueError(f"invalid back-off schedule {self}: need 0 < initial <= maximum and factor >= 1")

    def delay(self, attempt: int) -> float:
        """Wait before reconnect attempt number `attempt` (0-based)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        delay = self.initial
        for _ in range(attempt):
            delay *= self.factor
            if delay >= self.maximum:
                return self.maximum
        return min(delay, self.maximum)


class FrameSource(ABC):
    """Iterator of `Frame`; also a context manager. `close()` is safe from any thread."""

    def __init__(self, name: str, *, mirror: bool = False) -> None:
        self.name = name
        self._mirror = mirror
        self._next_index = 0
        self._size: tuple[int, int] | None = None
        self._fps: float | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the frames, once known."""
        return self._size

    @property
    def fps(self) -> float | None:
        """Nominal frame rate, when the source reports one."""
        return self._fps

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> FrameSource:
        return self

    def __next__(self) -> Frame:
        with self._lock:
            if self._closed or self._stop.is_set():
                raise StopIteration
            result = self._read_image()
            if result is None:
                raise StopIteration
            image, name = result
            timestamp, monotonic = time.time(), time.perf_counter()
        if self._mirror:
            image = cv2.flip(image, 1)
        self._size = (int(image.shape[1]), int(image.shape[0]))
        frame = Frame(image=image, index=self._next_index, timestamp=timestamp, monotonic=monotonic, source_name=name)
        self._next_index += 1
        return frame

    def request_stop(self) -> None:
        """Make a blocked or waiting read give up soon; does not release resources (see close)."""
        self._stop.set()

    def close(self) -> None:
        """Stop iteration and release the underlying device or file."""
        self._stop.set()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @abstractmethod
    def _read_image(self) -> tuple[np.ndarray, str] | None:
        """Next BGR image and the name to stamp on it, or None when the source has ended."""

    @abstractmethod
    def _release(self) -> None:
        """Free the underlying resources; called once, under the read lock."""


def _natural_key(name: str) -> list[str | int]:
    """Sort key that orders "img2" before "img10"."""
    parts = re.split(r"(\d+)", name)
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(parts)]


class ImageFolderSource(FrameSource):
    """Images (jpg/png/bmp/webp) from a folder in natural name order; unreadable files are skipped."""

    def __init__(self, folder: str | os.PathLike[str], *, mirror: bool = False, repeat: bool = False) -> None:
        folder = Path(folder)
        super().__init__(str(folder), mirror=mirror)
        if not folder.is_dir():
            raise CaptureError(f"image folder {folder} does not exist or is not a folder")
        self._paths = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: (_natural_key(p.name), p.name),
        )
        if not self._paths:
            raise CaptureError(
                f"no frame could be read: image folder {folder} contains no images "
                f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self._repeat = repeat
        self._position = 0
        self._delivered_this_pass = 0

    @property
    def paths(self) -> list[Path]:
        """The candidate image files in the order they are read."""
        return list(self._paths)

    def _read_image(self) -> tuple[np.ndarray, str] | None:
        while True:
            if self._position >= len(self._paths):
                if self._next_index == 0:
                    raise CaptureError(
                        f"no frame could be read: none of the {len(self._paths)} images in {self.name} "
                        "could be decoded"
                    )
                if not self._repeat or self._delivered_this_pass == 0:
                    return None
                self._position = 0
                self._delivered_this_pass = 0
            path = self._paths[self._position]
            self._position += 1
            image = _read_image_file(path)
            if image is None:
                logger.warning("skipping unreadable image %s", path)
                continue
            self._delivered_this_pass += 1
            return image, str(path)

    def _release(self) -> None:
        self._paths = []


def _read_image_file(path: Path) -> np.ndarray | None:
    """Decode an image as 3-channel BGR; goes through bytes so non-ASCII paths work everywhere."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


class VideoFileSource(FrameSource):
    """Frames of a video file; ends at the last frame, or loops when `repeat` is set.

    With `pace` the frames come out at the file's frame rate (as a camera would deliver them);
    otherwise as fast as they decode.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, mirror: bool = False, repeat: bool = False, pace: bool = False
    ) -> None:
        self._path = Path(path)
        super().__init__(str(self._path), mirror=mirror)
        if not self._path.is_file():
            raise CaptureError(f"video file {self._path} does not exist")
        self._repeat = repeat
        self._cap: cv2.VideoCapture | None = self._open_capture()
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise CaptureError(f"no frame could be read: video file {self._path} contains no decodable frames")
        self._pending: np.ndarray | None = first
        width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)) or first.shape[1]
        height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) or first.shape[0]
        self._size = (width, height)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if fps and fps > 0 and np.isfinite(fps) else None
        self._pace_interval: float | None = None
        if pace:
            if self._fps is None:
                logger.warning("%s does not report a frame rate; pacing it at 30 fps", self._path)
            self._pace_interval = 1.0 / (self._fps or 30.0)
        self._next_due: float | None = None
        self.loops = 0

    def _open_capture(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self._path))
        if not cap.isOpened():
            cap.release()
            raise CaptureError(
                f"no frame could be read: cannot decode {self._path} as a video (unknown format or corrupt file)"
            )
        return cap

    def _read_image(self) -> tuple[np.ndarray, str] | None:
        if self._cap is None:
            return None
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            ok, image = self._cap.read()
            if not ok or image is None:
                self._cap.release()
                self._cap = None
                if not self._repeat:
                    return None
                self._cap = self._open_capture()
                ok, image = self._cap.read()
                if not ok or image is None:
                    raise CaptureError(f"video file {self._path} yielded no frames when restarting it")
                self.loops += 1
        if self._pace_interval is not None:
            self._wait_for_slot(self._pace_interval)
        return image, self.name

    def _wait_for_slot(self, interval: float) -> None:
        """Sleep until this frame is due; if far behind, restart the schedule rather than burst."""
        now = time.perf_counter()
        if self._next_due is None or now - self._next_due > max(0.5, 2 * interval):
            self._next_due = now
        delay = self._next_due - now
        if delay > 0:
            self._stop.wait(delay)
        self._next_due += interval

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None


class RawRGBSource(FrameSource):
    """Packed RGB24 frames of a fixed size from a binary stream (stdin, a pipe or a file).

    A reader waiting on an idle pipe must still give up within ``POLL_S`` once ``stop`` is set (the
    daemon's signal handler sets it). On POSIX the descriptor is waited on with ``select``; where that
    cannot wait on pipes (Windows), a helper thread reads the descriptor and hands chunks over a small
    queue (``pump``). Streams without a descriptor (BytesIO) are read plainly.
    """

    POLL_S = 0.1

    def __init__(
        self,
        stream: BinaryIO,
        width: int,
        height: int,
        *,
        mirror: bool = False,
        fps: float | None = None,
        name: str = "stdin",
        owns_stream: bool = False,
        stop: threading.Event | None = None,
        pump: bool | None = None,
    ) -> None:
        super().__init__(name, mirror=mirror)
        if width <= 0 or height <= 0:
            raise ValueError(f"raw frame size must be positive, got {width}x{height}")
        self._stream = stream
        self._owns_stream = owns_stream
        self._frame_bytes = width * height * 3
        self._size = (width, height)
        self._fps = fps
        self._ended = False
        self._external_stop = stop
        fd = _descriptor(stream)
        use_pump = (os.name != "posix") if pump is None else pump
        self._pump = _ChunkPump(fd, name) if fd is not None and use_pump else None
        self._fd = fd if self._pump is None and os.name == "posix" else None

    def _stopping(self) -> bool:
        return self._stop.is_set() or (self._external_stop is not None and self._external_stop.is_set())

    def _fill(self, view: memoryview) -> int:
        """Read into ``view`` until it is full, the stream ends or a stop is requested; bytes read."""
        filled, total = 0, len(view)
        if self._fd is not None:
            while filled < total:
                ready, _, _ = select.select([self._fd], [], [], self.POLL_S)
                if not ready:
                    if self._stopping():
                        break
                    continue
                count = os.readv(self._fd, [view[filled:]])
                if count == 0:
                    break
                filled += count
            return filled
        while filled < total:
            if self._pump is not None:
                chunk = self._pump.read(total - filled, self.POLL_S)
                if chunk is None:
                    if self._stopping():
                        break
                    continue
            else:
                chunk = self._stream.read(total - filled)
            if not chunk:
                break
            view[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

    def _read_image(self) -> tuple[np.ndarray, str] | None:
        if self._ended:
            return None
        buffer = bytearray(self._frame_bytes)
        filled = self._fill(memoryview(buffer))
        if filled < self._frame_bytes:
            self._ended = True
            if filled and not self._stopping():
                logger.warning(
                    "%s ended inside a frame (%d of %d bytes); dropping the partial frame",
                    self.name,
                    filled,
                    self._frame_bytes,
                )
            return None
        width, height = self._size  # type: ignore[misc]
        rgb = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), self.name

    def _release(self) -> None:
        if self._owns_stream:
            self._stream.close()


def _descriptor(stream: BinaryIO) -> int | None:
    """The stream's file descriptor, or None (BytesIO and the like).

    The descriptor is read directly, so the stream must not have been read through its Python buffer
    before (sys.stdin.buffer and freshly opened files have not).
    """
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


class _ChunkPump:
    """Reads a descriptor on a daemon thread and hands the chunks over a small queue.

    For systems whose ``select`` cannot wait on pipes: the consumer waits on the queue with a timeout
    instead. ``os.read`` holds no Python-level lock, so a thread still blocked in it at exit is harmless.
    The bounded queue makes the thread wait for the consumer: nothing is dropped.
    """

    CHUNK = 1 << 20

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=4)
        self._leftover = b""
        self._eof = False
        threading.Thread(target=self._run, name=f"facewire-read-{name}", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, self.CHUNK)
            except OSError as exc:
                logger.warning("reading %s failed: %s", self._fd, exc)
                chunk = b""
            self._queue.put(chunk)
            if not chunk:
                return

    def read(self, size: int, timeout: float) -> bytes | None:
        """Up to ``size`` bytes; b"" at the end of the stream; None if nothing came within ``timeout``."""
        if not self._leftover:
            if self._eof:
                return b""
            try:
                self._leftover = self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
            if not self._leftover:
                self._eof = True
                return b""
        chunk, self._leftover = self._leftover[:size], self._leftover[size:]
        return chunk


class CaptureLike(Protocol):
    """The part of cv2.VideoCapture that CameraSource uses (lets tests inject a fake device)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def set(self, prop: int, value: float) -> bool: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


CameraOpener = Callable[[int | str], CaptureLike]


class CameraBackend(NamedTuple):
    """An OpenCV capture API (``cv2.CAP_*``) and the name users know it by."""

    api: int
    name: str


def camera_backends(platform_name: str | None = None) -> tuple[CameraBackend, ...]:
    """The capture APIs to open cameras with on a system (``sys.platform``), in order of preference.

    Windows: DirectShow first (opens quickly and honours MJPG and frame-size requests on common webcams),
    then Media Foundation; macOS: AVFoundation; Linux: V4L2; anything else: whatever OpenCV picks.
    """
    name = sys.platform if platform_name is None else platform_name
    if name.startswith(("win32", "cygwin")):
        return (CameraBackend(cv2.CAP_DSHOW, "DirectShow"), CameraBackend(cv2.CAP_MSMF, "Media Foundation"))
    if name.startswith("darwin"):
        return (CameraBackend(cv2.CAP_AVFOUNDATION, "AVFoundation"),)
    if name.startswith("linux"):
        return (CameraBackend(cv2.CAP_V4L2, "V4L2"),)
    return (CameraBackend(cv2.CAP_ANY, "OpenCV's default"),)


def open_cv_camera(
    device: int | str, *, platform_name: str | None = None, capture: Callable[..., CaptureLike] = cv2.VideoCapture
) -> CaptureLike:
    """Open a camera with OpenCV through the system's camera API (``camera_backends``), trying the next
    one when a backend cannot open it. Returns the last, unopened capture when none can."""
    cap: CaptureLike | None = None
    for backend in camera_backends(platform_name):
        if cap is not None:
            cap.release()
        cap = capture(device, backend.api)
        if cap.isOpened():
            logger.debug("camera %s opened through %s", device, backend.name)
            return cap
        logger.debug("camera %s: %s could not open it", device, backend.name)
    assert cap is not None
    return cap


def parse_camera_device(source: str) -> int | str:
    """A camera index ("0") becomes an int; anything else (a device path) stays a string."""
    return int(source) if source.isdigit() else source


def _camera_name(device: int | str) -> str:
    """How frames and messages name a camera: its device path where that is known."""
    if isinstance(device, int):
        return f"/dev/video{device}" if sys.platform.startswith("linux") else f"camera {device}"
    return device


class CameraSource(FrameSource):
    """Live camera frames; a camera that stops delivering is reopened with exponential back-off.

    While reconnecting, iteration blocks (the consumer simply sees no frames) until the camera
    comes back or `close()` is called.
    """

    def __init__(
        self,
        device: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = None,
        mirror: bool = False,
        opener: CameraOpener = open_cv_camera,
        backoff: Backoff = Backoff(),
    ) -> None:
        super().__init__(_camera_name(device), mirror=mirror)
        self._device = device
        has_path = isinstance(device, int) and self.name.startswith("/dev/")
        self._label = f"camera {device} ({self.name})" if has_path else f"camera {device}"
        self._request = (width, height, fps, fourcc)
        self._opener = opener
        self._backoff = backoff
        self._attempt = 0
        self._cap = self._try_open()
        if self._cap is None:
            raise CameraNotFoundError(_camera_not_found_message(self._label))

    @property
    def device(self) -> int | str:
        return self._device

    def _try_open(self) -> CaptureLike | None:
        """Open and configure the camera; None if it cannot be opened."""
        try:
            cap = self._opener(self._device)
        except (cv2.error, OSError) as exc:
            logger.debug("opening %s failed: %s", self._label, exc)
            return None
        if not cap.isOpened():
            cap.release()
            return None
        self._configure(cap)
        return cap

    def _configure(self, cap: CaptureLike) -> None:
        width, height, fps, fourcc = self._request
        # The pixel format goes first: V4L2 drivers pick the frame sizes and rates per format.
        if fourcc is not None:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
        if width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps is not None:
            cap.set(cv2.CAP_PROP_FPS, fps)
        got_w, got_h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        got_fps = float(cap.get(cv2.CAP_PROP_FPS))
        if got_w > 0 and got_h > 0:
            self._size = (got_w, got_h)
        self._fps = got_fps if got_fps > 0 else None
        if (width is not None and got_w != width) or (height is not None and got_h != height):
            logger.warning("%s: asked for %sx%s, camera gave %dx%d", self._label, width, height, got_w, got_h)
        if fps is not None and got_fps > 0 and abs(got_fps - fps) > 0.5:
            logger.warning("%s: asked for %g fps, camera gave %g fps", self._label, fps, got_fps)
        logger.info("opened %s at %dx%d, %g fps", self._label, got_w, got_h, got_fps)

    def _read_image(self) -> tuple[np.ndarray, str] | None:
        while not self._stop.is_set():
            if self._cap is not None:
                ok, image = self._cap.read()
                if ok and image is not None:
                    if self._attempt:
                        logger.warning("%s is delivering frames again", self._label)
                        self._attempt = 0
                    return image, self.name
                logger.warning("%s stopped delivering frames; reconnecting", self._label)
                self._cap.release()
                self._cap = None
            delay = self._backoff.delay(self._attempt)
            logger.warning("reconnect attempt %d to %s in %.3g s", self._attempt + 1, self._label, delay)
            if self._stop.wait(delay):
                break
            self._attempt += 1
            self._cap = self._try_open()
        return None

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _camera_not_found_message(label: str) -> str:
    cameras = list_cameras()
    if not cameras:
        found = "No cameras were found on this system."
    else:
        found = "Cameras found: " + "; ".join(f"{c.index} = {c.path} ({c.name})" for c in cameras) + "."
    return f"Could not open {label}. {found} Run with --list-cameras to see devices and their modes."


def _is_camera_source(source: str) -> bool:
    if source.isdigit() or source.startswith("/dev/video"):
        return True
    try:
        return stat.S_ISCHR(os.stat(source).st_mode)
    except OSError:
        return False


def open_source(
    config: CaptureConfig,
    *,
    stdin: BinaryIO | None = None,
    camera_opener: CameraOpener = open_cv_camera,
    backoff: Backoff = Backoff(),
    stop: threading.Event | None = None,
) -> FrameSource:
    """Open the frame source that `config.source` names.

    `stdin` replaces sys.stdin.buffer for "-" (tests inject a BytesIO); `camera_opener` and
    `backoff` are passed to CameraSource; setting `stop` ends a raw RGB read that waits for input.
    """
    source = config.source
    if config.is_raw:
        assert config.width is not None and config.height is not None  # checked by CaptureConfig
        if source == RAW_STDIN:
            stream = stdin if stdin is not None else sys.stdin.buffer
            return RawRGBSource(stream, config.width, config.height, mirror=config.mirror, fps=config.fps, stop=stop)
        try:
            stream = open(source, "rb")  # noqa: SIM115 - owned and closed by the source
        except OSError as exc:
            raise CaptureError(f"cannot open raw RGB input {source}: {exc.strerror}") from exc
        return RawRGBSource(
            stream, config.width, config.height, mirror=config.mirror, fps=config.fps, name=source, owns_stream=True,
            stop=stop,
        )
    if _is_camera_source(source):
        return CameraSource(
            parse_camera_device(source),
            width=config.width,
            height=config.height,
            fps=config.fps,
            fourcc=config.fourcc,
            mirror=config.mirror,
            opener=camera_opener,
            backoff=backoff,
        )
    path = Path(source)
    if path.is_dir():
        return ImageFolderSource(path, mirror=config.mirror, repeat=config.repeat_video)
    if path.is_file():
        return VideoFileSource(path, mirror=config.mirror, repeat=config.repeat_video, pace=config.pace)
    raise CaptureError(
        f"capture source {source!r} not found: expected a camera index (e.g. 0), a /dev/video* device, "
        "a video file, a folder of images, or '-' for raw RGB on stdin"
    )


class LatestFrameReader:
    """Pulls frames on a background thread and keeps only the newest one.

    A slow consumer therefore never processes stale, queued frames; frames it had no time for are
    dropped and counted. The reader owns the source and closes it when done.
    """

    def __init__(self, source: FrameSource, *, thread_name: str = "facewire-capture") -> None:
        self._source = source
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._dropped = 0
        self._finished = False
        self._error: BaseException | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    @property
    def source(self) -> FrameSource:
        return self._source

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one before anyone fetched them."""
        with self._cond:
            return self._dropped

    @property
    def finished(self) -> bool:
        """True once the source has ended (or failed, or the reader was closed)."""
        with self._cond:
            return self._finished

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the source, if any."""
        with self._cond:
            return self._error

    def _run(self) -> None:
        try:
            for frame in self._source:
                with self._cond:
                    if self._latest is not None:
                        self._dropped += 1
                    self._latest = frame
                    self._cond.notify_all()
                if self._stopping.is_set():
                    break
        except Exception as exc:  # handed to the consumer through get()
            logger.error("frame source %s failed: %s", self._source.name, exc)
            with self._cond:
                self._error = exc
        finally:
            self._source.close()
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """Newest frame not fetched yet, waiting up to `timeout` seconds (None = until one comes).

        Returns None on timeout or once the source has ended and the last frame was fetched.
        Raises the source's exception if it ended because of one.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None or self._finished, timeout)
            frame, self._latest = self._latest, None
            if frame is None and self._error is not None:
                raise self._error
            return frame

    def close(self) -> None:
        """Stop the thread and close the source; returns within half a second.

        A read stuck in the driver (a camera that stopped sending) cannot be interrupted: the thread is
        then left behind (it is a daemon thread) so that stopping never hangs.
        """
        self._stopping.set()
        self._source.request_stop()
        self._thread.join(timeout=0.5)
        if self._thread.is_alive():
            logger.warning("capture thread for %s did not stop within 0.5 s; leaving it behind", self._source.name)

    def __enter__(self) -> LatestFrameReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --- Camera enumeration (cv2-enumerate-cameras; on Linux, modes and the fallback from V4L2) ------


class CameraMode(NamedTuple):
    """One capture mode: pixel format, frame size, frame rate (None when the driver gives none)."""

    fourcc: str
    width: int
    height: int
    fps: float | None


@dataclass(frozen=True)
class CameraInfo:
    """A capture device: its index for -c, device path, its name and modes (listed on Linux only), and
    the camera API that numbers it."""

    index: int
    path: str
    name: str
    modes: tuple[CameraMode, ...]
    backend: str = "V4L2"


# Struct layouts from include/uapi/linux/videodev2.h.
class _Capability(ctypes.Structure):
    _fields_ = [
        ("driver", ctypes.c_uint8 * 16),
        ("card", ctypes.c_uint8 * 32),
        ("bus_info", ctypes.c_uint8 * 32),
        ("version", ctypes.c_uint32),
        ("capabilities", ctypes.c_uint32),
        ("device_caps", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 3),
    ]


class _FmtDesc(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("description", ctypes.c_uint8 * 32),
        ("pixelformat", ctypes.c_uint32),
        ("mbus_code", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 3),
    ]


class _FrmSizeDiscrete(ctypes.Structure):
    _fields_ = [("width", ctypes.c_uint32), ("height", ctypes.c_uint32)]


class _FrmSizeStepwise(ctypes.Structure):
    _fields_ = [
        ("min_width", ctypes.c_uint32),
        ("max_width", ctypes.c_uint32),
        ("step_width", ctypes.c_uint32),
        ("min_height", ctypes.c_uint32),
        ("max_height", ctypes.c_uint32),
        ("step_height", ctypes.c_uint32),
    ]


class _FrmSizeUnion(ctypes.Union):
    _fields_ = [("discrete", _FrmSizeDiscrete), ("stepwise", _FrmSizeStepwise)]


class _FrmSizeEnum(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("pixel_format", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("size", _FrmSizeUnion),
        ("reserved", ctypes.c_uint32 * 2),
    ]


class _Fract(ctypes.Structure):
    _fields_ = [("numerator", ctypes.c_uint32), ("denominator", ctypes.c_uint32)]


class _FrmIvalStepwise(ctypes.Structure):
    _fields_ = [("min", _Fract), ("max", _Fract), ("step", _Fract)]


class _FrmIvalUnion(ctypes.Union):
    _fields_ = [("discrete", _Fract), ("stepwise", _FrmIvalStepwise)]


class _FrmIvalEnum(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("pixel_format", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("interval", _FrmIvalUnion),
        ("reserved", ctypes.c_uint32 * 2),
    ]


_BUF_TYPE_VIDEO_CAPTURE = 1
_CAP_VIDEO_CAPTURE = 0x00000001
_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
_CAP_DEVICE_CAPS = 0x80000000
_FRMSIZE_TYPE_DISCRETE = 1
_FRMIVAL_TYPE_DISCRETE = 1
_FOURCC_BIG_ENDIAN = 1 << 31
_MAX_ENUM = 512  # guards against drivers that never return EINVAL


def _ioc_layout(machine: str) -> tuple[int, int, int]:
    """(read bit, write bit, size-field bits) of the ioctl number encoding for a CPU architecture."""
    if machine.startswith(("ppc", "powerpc", "mips", "sparc", "alpha")):
        return 2, 4, 13
    return 2, 1, 14


def ioctl_number(direction: str, group: str, number: int, size: int, machine: str | None = None) -> int:
    """Linux _IOC(): direction "r", "w" or "rw"; group is the ioctl letter (e.g. "V")."""
    read_bit, write_bit, size_bits = _ioc_layout(machine if machine is not None else platform.machine())
    dir_bits = (read_bit if "r" in direction else 0) | (write_bit if "w" in direction else 0)
    if size >= 1 << size_bits:
        raise ValueError(f"ioctl argument size {size} does not fit in {size_bits} bits")
    return (dir_bits << (16 + size_bits)) | (size << 16) | (ord(group) << 8) | number


def _vidioc(direction: str, number: int, struct: type[ctypes.Structure]) -> int:
    return ioctl_number(direction, "V", number, ctypes.sizeof(struct))


def fourcc_to_str(code: int) -> str:
    """V4L2 pixel format code to its four characters (e.g. 0x47504a4d -> "MJPG")."""
    text = bytes((code >> shift) & 0xFF for shift in (0, 8, 16, 24)).decode("ascii", "replace").rstrip(" \x00")
    return text + "-BE" if code & _FOURCC_BIG_ENDIAN else text


def _enumerate(fd: int, request: int, make: Callable[[int], ctypes.Structure]) -> list[ctypes.Structure]:
    """Run a V4L2 ENUM ioctl with index 0, 1, ... until the driver says EINVAL."""
    import fcntl   # POSIX only; the module must import on Windows too

    results = []
    for index in range(_MAX_ENUM):
        item = make(index)
        try:
            fcntl.ioctl(fd, request, item, True)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                logger.debug("V4L2 enumeration ioctl %#x stopped: %s", request, exc)
            break
        results.append(item)
    return results


def _query_modes(fd: int) -> tuple[CameraMode, ...] | None:
    """All capture modes of an open device; None if it is not a video capture node."""
    import fcntl

    cap = _Capability()
    try:
        fcntl.ioctl(fd, _vidioc("r", 0, _Capability), cap, True)
    except OSError:
        return None
    caps = cap.device_caps if cap.capabilities & _CAP_DEVICE_CAPS else cap.capabilities
    if not caps & _CAP_VIDEO_CAPTURE:
        return None  # metadata, output or multi-planar-only node
    formats = _enumerate(
        fd, _vidioc("rw", 2, _FmtDesc), lambda i: _FmtDesc(index=i, type=_BUF_TYPE_VIDEO_CAPTURE)
    )
    modes: list[CameraMode] = []
    for fmt in formats:
        fourcc = fourcc_to_str(fmt.pixelformat)
        sizes = _enumerate(
            fd, _vidioc("rw", 74, _FrmSizeEnum), lambda i, pf=fmt.pixelformat: _FrmSizeEnum(index=i, pixel_format=pf)
        )
        for width, height in _frame_sizes(sizes):
            for fps in _frame_rates(fd, fmt.pixelformat, width, height):
                modes.append(CameraMode(fourcc, width, height, fps))
    return tuple(modes)


def _frame_sizes(entries: list[ctypes.Structure]) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = []
    for entry in entries:
        if entry.type == _FRMSIZE_TYPE_DISCRETE:
            candidates = [(entry.size.discrete.width, entry.size.discrete.height)]
        else:  # continuous or stepwise: report the two ends of the range
            step = entry.size.stepwise
            candidates = [(step.max_width, step.max_height), (step.min_width, step.min_height)]
        sizes.extend(s for s in candidates if s not in sizes)
    return sizes


def _frame_rates(fd: int, pixel_format: int, width: int, height: int) -> list[float | None]:
    entries = _enumerate(
        fd,
        _vidioc("rw", 75, _FrmIvalEnum),
        lambda i: _FrmIvalEnum(index=i, pixel_format=pixel_format, width=width, height=height),
    )
    return _rates_from_intervals(entries)


def _rates_from_intervals(entries: list[ctypes.Structure]) -> list[float | None]:
    """Frame rates of VIDIOC_ENUM_FRAMEINTERVALS results; [None] when the driver reports none."""
    rates: list[float | None] = []
    for entry in entries:
        # Intervals are seconds per frame; the shortest stepwise interval is the highest rate.
        interval = entry.interval.discrete if entry.type == _FRMIVAL_TYPE_DISCRETE else entry.interval.stepwise.min
        if interval.numerator:
            fps = round(interval.denominator / interval.numerator, 3)
            if fps not in rates:
                rates.append(fps)
    return rates or [None]


def list_v4l2_cameras(
    *, sysfs_dir: str | os.PathLike[str] = "/sys/class/video4linux", dev_dir: str | os.PathLike[str] = "/dev"
) -> list[CameraInfo]:
    """Video capture devices with their modes from V4L2 and sysfs; [] when there are none or off Linux.

    Nodes that capture no video (e.g. UVC metadata nodes) are left out. A device that exists but
    cannot be opened (permissions) is listed without modes so the user can see it.
    """
    sysfs = Path(sysfs_dir)
    if not sys.platform.startswith("linux") or not sysfs.is_dir():
        return []
    cameras: list[CameraInfo] = []
    for node in sorted(sysfs.glob("video*"), key=lambda p: _natural_key(p.name)):
        match = re.fullmatch(r"video(\d+)", node.name)
        if not match:
            continue
        index = int(match.group(1))
        try:
            name = (node / "name").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            name = node.name
        path = Path(dev_dir) / node.name
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except PermissionError:
            logger.warning("no permission to open %s; add your user to the 'video' group", path)
            cameras.append(CameraInfo(index, str(path), name or node.name, (), "V4L2"))
            continue
        except OSError as exc:
            logger.debug("cannot open %s: %s", path, exc)
            continue
        try:
            modes = _query_modes(fd)
        finally:
            os.close(fd)
        if modes:
            cameras.append(CameraInfo(index, str(path), name or node.name, modes, "V4L2"))
    return cameras


def _v4l2_modes(path: str) -> tuple[CameraMode, ...] | None:
    """Modes of one V4L2 device node; () when it cannot be opened, None when it captures no video."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        logger.debug("cannot open %s: %s", path, exc)
        return ()
    try:
        return _query_modes(fd)
    finally:
        os.close(fd)


EnumerateCameras = Callable[[int], list]


def _package_enumerator() -> EnumerateCameras:
    from cv2_enumerate_cameras import enumerate_cameras
    return enumerate_cameras


def list_cameras(
    *, platform_name: str | None = None, enumerate_cameras: EnumerateCameras | None = None
) -> list[CameraInfo]:
    """Cameras with their names, as the system's camera API (``camera_backends``) numbers them for -c.

    Names come from the cv2-enumerate-cameras package (DirectShow on Windows, AVFoundation on macOS,
    V4L2 on Linux); on Linux each device's modes are added from V4L2. When the package is missing or
    fails, Linux falls back to our own V4L2/sysfs listing and other systems list nothing.
    """
    name = sys.platform if platform_name is None else platform_name
    backend = camera_backends(name)[0]
    linux = name.startswith("linux")
    try:
        found = (enumerate_cameras or _package_enumerator())(backend.api)
    except Exception as exc:  # noqa: BLE001 - a third-party enumerator may fail in any way; we have a fallback
        logger.warning("listing cameras through %s failed (%s: %s)%s", backend.name, type(exc).__name__, exc,
                       "; using V4L2 directly" if linux else "")
        return list_v4l2_cameras() if linux else []
    cameras: list[CameraInfo] = []
    for cam in sorted(found, key=lambda c: c.index):
        modes: tuple[CameraMode, ...] = ()
        path = str(cam.path or f"camera {cam.index}")
        if linux:
            queried = _v4l2_modes(path)
            if queried is None:
                continue            # a metadata or output node, not a camera
            modes = queried
        cameras.append(CameraInfo(int(cam.index), path, str(cam.name or path), modes, backend.name))
    return cameras


def _format_rate(fps: float | None) -> str:
    return "?" if fps is None else f"{fps:g}"


def format_camera_list(cameras: list[CameraInfo]) -> str:
    """Human-readable camera list for --list-cameras."""
    if not cameras:
        return "No cameras found."
    lines = [f"Found {len(cameras)} camera{'s' if len(cameras) != 1 else ''}:"]
    for cam in cameras:
        where = cam.path if cam.path.startswith("/dev/") else cam.backend
        lines.append(f"  {cam.index}: {cam.name} ({where})")
        if not cam.modes:
            if cam.backend == "V4L2":
                lines.append("      modes unknown (device could not be opened)")
            else:
                lines.append(f"      modes are not listed through {cam.backend}; ask for one with -W, -H and -F")
            continue
        grouped: dict[tuple[str, int, int], list[float | None]] = {}
        for mode in cam.modes:
            grouped.setdefault((mode.fourcc, mode.width, mode.height), []).append(mode.fps)
        for (fourcc, width, height), rates in grouped.items():
            rate_text = ", ".join(_format_rate(r) for r in rates)
            lines.append(f"      {fourcc} {width}x{height} @ {rate_text} fps")
    return "\n".join(lines)
