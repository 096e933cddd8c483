"""The tracking daemon, with OpenSeeFace's command line:

    capture -> track -> one immutable FrameResult per frame -> smooth (One Euro) -> every --output

``facetracker`` accepts OpenSeeFace's ``facetracker.py`` flags with the same meanings, so a VTuber can
swap one for the other; ``facewire track`` is the same daemon. Everything the loop needs is one
frozen ``DaemonConfig`` built from the command line. The loop knows no wire format: it asks the
outputs (``tracker/outputs``) what optional work they need (our head pose, blendshapes, the mesh),
does only that, and hands each of them the same ``FrameResult``.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import signal
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import cv2
import numpy as np

from .capture import (CameraNotFoundError, CameraSource, CaptureConfig, CaptureError, Frame, LatestFrameReader,
                      format_camera_list, list_cameras, open_source)
from .drawing import draw_label, draw_points
from .blendshape_log import BlendshapeCsvWriter
from .blendshapes import BlendshapeModel
from .features import FeatureConfig
from .landmarks import MeshResult
from .openseeface import osf_model_points_image
from .outputs import OutputGroup, default_output_url
from .packets import OsfLogWriter, RecordBuilder, RecordOptions
from .pose import PoseEstimator
from .result import FaceResult, FrameResult, Pose, ResultBuilder
from .runtime import ModelError
from .smoothing import (GROUPS, FaceSmoother, OneEuroParams, SmoothingConfig, add_smoothing_arguments,
                        smoothing_config_from_args)
from .tracking import FaceTracker, TrackedFace, TrackingConfig
from .transport import TransportError
from .web import (ControlState, Dashboard, DashboardError, DashboardStats, TrackerControls, WebUnavailableError,
                  parse_web_address)

log = logging.getLogger("facewire.daemon")

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130
STATUS_EVERY_S = 5.0


#: The blendshape hook: one face's mesh (478x3 image pixels, the attention mesh) -> 52 values 0..1 in
#: ``facewire.client.arkit.ARKIT_NAMES`` order. Called once per face and frame, and only when an output
#: needs blendshapes (``"blendshapes" in OutputGroup.needs``). ``DaemonConfig.blendshapes`` None (the
#: default) runs MediaPipe's blendshape model (``tracker/blendshapes.py``); a callable replaces it.
BlendshapeEstimator = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class OutputConfig:
    ip: str = "127.0.0.1"
    port: int = 11573
    urls: tuple[str, ...] = ()    # --output URLs; empty: OpenSeeFace records to ip:port
    mesh: bool = False            # --mesh: the formats that can carry the mesh send it
    visualize: int = 0            # 0 off, 1 landmarks, 2 + face ids, 3 + point numbers
    pnp_points: int = 0
    video_out: Path | None = None
    video_scale: float = 1.0
    video_fps: float = 24.0
    log_data: Path | None = None
    log_blendshapes: Path | None = None
    silent: bool = False

    @property
    def output_urls(self) -> tuple[str, ...]:
        return self.urls or (default_output_url(self.ip, self.port),)


@dataclass(frozen=True)
class DaemonConfig:
    capture: CaptureConfig
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    records: RecordOptions = field(default_factory=RecordOptions)
    output: OutputConfig = field(default_factory=OutputConfig)
    max_frames: int | None = None      # stop after this many frames (None: until the input ends)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    web: tuple[str, int] | None = None      # --web: the dashboard's host and port (None: no dashboard)
    blendshapes: BlendshapeEstimator | None = None    # the blendshape hook (see BlendshapeEstimator)

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--frames must be at least 1 (or 0 for no limit), not {self.max_frames}")


def mesh_for_model(model: int) -> str:
    """OpenSeeFace's --model picks speed against quality; ours maps onto our three meshes: 0 and below the
    plain 468-point mesh, 1 to 3 the attention mesh, 4 FaceMesh V2 (about twice as slow, better on turned
    faces, and the only one with a tongue-out score)."""
    if model <= 0:
        return "mesh"
    return "v2" if model >= 4 else "attention"


MAX_FRAME_SIDE = 8192      # -W/-H bound: 8K video fits; larger is a typing mistake that would exhaust memory


def _int_in(low: int, high: int | None = None, what: str = ""):
    """argparse type: an integer in low..high; the message states the rule, or ``what`` (argparse adds the
    flag)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            rule = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {what or rule}, got {value}")
        return value
    return parse


def _float_in(low: float, high: float | None = None, *, low_open: bool = False):
    """argparse type: a finite number in low..high (``low_open``: above low, not equal)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad_low = value <= low if low_open else value < low
        if not np.isfinite(value) or bad_low or (high is not None and value > high):
            rule = f"{'above' if low_open else 'at least'} {low:g}"
            if high is not None:
                rule = f"above {low:g} and at most {high:g}" if low_open else f"between {low:g} and {high:g}"
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value
    return parse


_FLAG01 = dict(type=_int_in(0, 1, "0 (off) or 1 (on)"), metavar="{0,1}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where there is a default worth showing (not None, not a bare switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or isinstance(action, argparse._StoreConstAction):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser(prog: str = "facetracker") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=_HelpFormatter,
        description="Track faces from a camera, video or images and stream them to the apps VTubers use: "
                    "OpenSeeFace's UDP format by default (VSeeFace, VTube Studio, Warudo, the OpenSee Unity "
                    "component and others read it unchanged), and with --output also VMC, iFacialMocap, or "
                    "Facewire's msgpack frames over UDP or ZeroMQ, all from the same tracking. Flags are "
                    "OpenSeeFace's facetracker.py flags with the same meanings; its 0/1 switches take 0 or 1.")
    p.add_argument("-i", "--ip", default="127.0.0.1",
                   help="address to send OpenSeeFace records to (when no --output is given)")
    p.add_argument("-p", "--port", type=_int_in(1, 65535), default=11573,
                   help="UDP port to send OpenSeeFace records to (when no --output is given)")
    p.add_argument("--output", action="append", metavar="URL",
                   help="where and in which format to send; repeat it to feed several apps at once: "
                        "osf://HOST:11573 (OpenSeeFace records), vmc://HOST:39539 (VMC protocol), "
                        "ifacialmocap://HOST:49983 (iFacialMocap; ifacialmocap://0.0.0.0:49983?listen answers "
                        "the apps' handshake), msgpack://HOST:11574 (Facewire frames over UDP), "
                        "zmq+tcp://HOST:5555 (the same over ZeroMQ; ?curve=KEY_SECRET_FILE encrypts). "
                        "Default: osf:// to -i/-p")
    p.add_argument("--mesh", action="store_true",
                   help="send the 478-point mesh in the formats that can carry it (msgpack, zmq+tcp)")
    p.add_argument("-c", "--capture", default="0", metavar="SOURCE",
                   help="camera index (0, 1, ...), camera device path (/dev/video2), video file, folder of images "
                        "(name order), or - for raw RGB frames on standard input")
    p.add_argument("-W", "--width", type=_int_in(1, MAX_FRAME_SIDE), default=640, metavar="PIXELS",
                   help="camera width, and raw RGB frame width")
    p.add_argument("-H", "--height", type=_int_in(1, MAX_FRAME_SIDE), default=360, metavar="PIXELS",
                   help="camera height, and raw RGB frame height")
    p.add_argument("-F", "--fps", type=_int_in(1, 1000), default=24, help="camera frames per second")
    p.add_argument("--format", choices=("mjpg", "yuyv", "default"), default="default",
                   help="camera pixel format: mjpg (compressed, higher modes over USB 2), yuyv (raw), or default "
                        "(the format the camera starts with)")
    p.add_argument("-M", "--mirror-input", action="store_true", help="mirror the input horizontally")
    p.add_argument("-l", "--list-cameras", nargs="?", const=1, default=0, **_FLAG01,
                   help="list cameras with their names (and modes, on Linux), then quit (-l alone is the same as -l 1)")
    p.add_argument("--raw-rgb", default=0, **_FLAG01,
                   help="1: read raw RGB frames of -W x -H from standard input (same as -c -)")
    p.add_argument("--repeat-video", default=0, **_FLAG01, help="1: loop a video file or image folder")
    p.add_argument("--pace-video", default=0, **_FLAG01,
                   help="1: play video files at their own frame rate instead of as fast as possible")
    p.add_argument("-m", "--max-threads", type=_int_in(1, 256), default=1, metavar="N",
                   help="threads for each model (more than the CPU cores only slows it down)")
    p.add_argument("-t", "--threshold", type=_float_in(0.0, 1.0), default=0.5, metavar="P",
                   help="minimum face confidence 0..1 (the mesh's face probability) to keep tracking a face")
    p.add_argument("-d", "--detection-threshold", type=_float_in(0.0, 1.0), default=0.6, metavar="P",
                   help="minimum confidence 0..1 of the face detector for a new face")
    p.add_argument("--faces", type=_int_in(1, 64), default=1, metavar="N",
                   help="maximum number of faces to track; face ids are OpenSeeFace's slots 0..N-1")
    p.add_argument("--scan-every", type=_int_in(1), default=3, metavar="FRAMES",
                   help="while fewer faces than --faces are tracked, look for new faces every this many frames")
    p.add_argument("--discard-after", type=_int_in(0), default=10, metavar="FRAMES",
                   help="frames a lost face's track is kept, so it continues (same slot if free) when it comes back")
    p.add_argument("--model", type=int, default=3, choices=range(-3, 5), metavar="{-3..4}",
                   help="speed against quality: 0 and below use the 468-point mesh without irises and send no "
                        "blendshapes (fastest); 1 to 3 the 478-point attention mesh with irises; 4 FaceMesh V2 "
                        "(478 points, about twice as slow, steadier on turned faces, adds tongueOut)")
    p.add_argument("--detector", choices=("auto", "short", "full"), default="auto",
                   help="face detector: short range, full range (small or distant faces), or auto")
    p.add_argument("--gaze-tracking", default=1, **_FLAG01, help="0: send no pupils or blinks")
    p.add_argument("--max-feature-updates", type=_int_in(0), default=900, metavar="SECONDS",
                   help="seconds after which the expression features stop adapting to the user (0: never stop)")
    p.add_argument("--face-id-offset", type=int, default=0, metavar="N",
                   help="added to every face id (the slot number)")
    p.add_argument("-v", "--visualize", type=_int_in(0, 3), default=0, metavar="{0..3}",
                   help="1 shows a window with the tracking, 2 adds face ids, 3 adds point numbers")
    p.add_argument("-P", "--pnp-points", default=0, **_FLAG01,
                   help="1: also draw OpenSeeFace's 3D face model as fitted to the landmarks (yellow)")
    p.add_argument("-s", "--silent", default=0, **_FLAG01, help="1: print only warnings and errors")
    p.add_argument("--video-out", type=Path, default=None, metavar="FILE.avi",
                   help="write the annotated tracking video to this .avi file")
    p.add_argument("--video-scale", type=_float_in(0.0, 8.0, low_open=True), default=1.0, metavar="SCALE",
                   help="scale of the --video-out video (above 0, at most 8)")
    p.add_argument("--video-fps", type=_float_in(0.0, 1000.0, low_open=True), default=24.0, metavar="FPS",
                   help="frame rate of the --video-out video")
    p.add_argument("--log-data", type=Path, default=None, metavar="FILE.csv",
                   help="write OpenSeeFace's per-face CSV log to this file")
    p.add_argument("--log-blendshapes", type=Path, default=None, metavar="FILE.csv",
                   help="write the 52 ARKit blendshapes of every face in every frame to this CSV file (frame, time, "
                        "face_id, track_id, then Apple's names); needs the 478-point mesh (--model 1 to 4)")
    p.add_argument("--benchmark", default=0, **_FLAG01, help="1: time every stage on the input's first frames and quit")
    p.add_argument("--frames", type=_int_in(0), default=0, metavar="N",
                   help="stop after N frames (0: no limit, run until the input ends)")
    p.add_argument("--web", nargs="?", const="127.0.0.1:8765", default=None, metavar="HOST:PORT",
                   help="serve a live dashboard (tracking, blendshapes, outputs, and controls: re-learn the neutral "
                        "face, smoothing, pause sending, mirror) to open in a browser; --web alone serves "
                        "http://127.0.0.1:8765/ on this PC; another address (0.0.0.0:8765 for the LAN) prints a URL "
                        "with an access token. Needs the web extra: pip install 'facewire[web]'")
    p.add_argument("--verbose", action="store_true", help="log debugging detail")
    add_smoothing_arguments(p)
    # Help spells the settings with hyphens: an underscored upper-case word reads as argparse's dest name.
    for action in p._actions:
        if action.dest.startswith("smooth_"):
            action.metavar = "MIN-CUTOFF,BETA[,D-CUTOFF]"
    for group in p._action_groups:
        if group.title == "smoothing" and group.description:
            group.description = group.description.replace("MIN_CUTOFF", "MIN-CUTOFF").replace("D_CUTOFF", "D-CUTOFF")
    return p


def config_from_args(args: argparse.Namespace) -> DaemonConfig:
    raw = bool(args.raw_rgb) or args.capture == "-"
    capture = CaptureConfig(
        source="-" if raw else args.capture,
        width=args.width, height=args.height, fps=args.fps,
        fourcc=None if args.format == "default" else args.format.upper(),
        mirror=args.mirror_input, repeat_video=bool(args.repeat_video), pace=bool(args.pace_video), raw_rgb=raw)
    tracking = TrackingConfig(
        max_faces=args.faces, scan_every=args.scan_every, discard_after=args.discard_after,
        presence_threshold=args.threshold,
        detection_threshold=args.detection_threshold, detector=args.detector, mesh=mesh_for_model(args.model),
        threads=args.max_threads)
    records = RecordOptions(gaze=bool(args.gaze_tracking), face_id_offset=args.face_id_offset,
                            feature_config=FeatureConfig(max_feature_updates_s=float(args.max_feature_updates)))
    for path, flag in ((args.log_data, "--log-data"), (args.video_out, "--video-out"),
                       (args.log_blendshapes, "--log-blendshapes")):
        if path is not None:
            check_output_file(path, flag)
    if args.log_blendshapes is not None and mesh_for_model(args.model) == "mesh":
        raise ValueError(f"--log-blendshapes needs the 478-point mesh, and --model {args.model} tracks the "
                         "468-point mesh; use --model 1 to 4")
    urls = tuple(args.output or ())
    OutputGroup.from_urls(urls, mesh=args.mesh)      # a mistyped URL stops here (exit 2), before the models load
    if urls and (args.ip, args.port) != ("127.0.0.1", 11573):
        log.warning("-i/-p are not used with --output; to also send OpenSeeFace records there, add --output %s",
                    default_output_url(args.ip, args.port))
    if args.mesh and "mesh" not in OutputGroup.from_urls(urls, mesh=True).needs:
        log.warning("--mesh: none of the outputs can carry the mesh (msgpack:// and zmq+tcp:// can)")
    output = OutputConfig(ip=args.ip, port=args.port, urls=urls, mesh=args.mesh,
                          visualize=args.visualize, pnp_points=args.pnp_points,
                          video_out=args.video_out, video_scale=args.video_scale, video_fps=args.video_fps,
                          log_data=args.log_data, log_blendshapes=args.log_blendshapes, silent=bool(args.silent))
    web = parse_web_address(args.web) if args.web is not None else None
    return DaemonConfig(capture, tracking, records, output, max_frames=args.frames or None,
                        smoothing=smoothing_config_from_args(args), web=web)


def quiet_video_decoders() -> None:
    """Keep OpenCV's and FFmpeg's decoder messages ("[h264 @ 0x...] Invalid NAL unit size") off stderr.

    FFmpeg's messages bypass OpenCV's log level: OpenCV's FFmpeg backend sets FFmpeg's own level from
    OPENCV_FFMPEG_LOGLEVEL (-8 = AV_LOG_QUIET) when it first opens a video, so this must run before any
    VideoCapture in the process. A value the user set is kept.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the system reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


@dataclass
class RunStats:
    """Per-frame timings, for the status line and the closing summary."""

    frames: int = 0
    frames_with_faces: int = 0
    processing_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    started: float = field(default_factory=time.perf_counter)

    def summary(self) -> str:
        elapsed = time.perf_counter() - self.started
        if not self.processing_ms:
            return f"{self.frames} frames, no timings yet"
        return (f"{self.frames} frames ({self.frames_with_faces} with faces) at {self.frames / elapsed:.1f} fps; "
                f"processing median {statistics.median(self.processing_ms):.2f} ms, capture-to-send latency median "
                f"{statistics.median(self.latency_ms):.2f} ms")


RATE_WINDOW = 30     # frames the window's rate and processing time are taken over


def rate_label(arrivals: deque, processing_ms: deque) -> str:
    """"25.0 fps, processing 3.1 ms": the rate frames really arrive at (capture times of the last frames)
    and the median time spent on each of them, two different things on a paced video or a camera."""
    recent = list(itertools.islice(reversed(processing_ms), RATE_WINDOW))
    processing = f"processing {statistics.median(recent):.1f} ms" if recent else "processing -"
    if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
        return f"- fps, {processing}"
    return f"{(len(arrivals) - 1) / (arrivals[-1] - arrivals[0]):.1f} fps, {processing}"


class Annotator:
    """The --visualize window and the --video-out file."""

    WINDOW = "Facewire tracking"

    def __init__(self, output: OutputConfig) -> None:
        self.level = output.visualize
        self.writer: cv2.VideoWriter | None = None
        self.output = output
        if self.level and not has_display():
            log.warning("--visualize needs a display and none was found (DISPLAY is not set); tracking "
                        "continues without the window")
            self.level = 0

    @property
    def active(self) -> bool:
        return bool(self.level) or self.output.video_out is not None

    def show(self, image: np.ndarray, faces, label: str, poses: dict | None = None) -> bool:
        """Draw and show/write one frame with ``label`` (see ``rate_label``) in the corner; False when the
        user closed the window (q or Esc).

        ``poses``: OpenSeeFace's fitted pose per track id, for ``-P`` (its 3D model points, in yellow).
        """
        canvas = image.copy()
        h, w = image.shape[:2]
        for face in faces:
            draw_points(canvas, face.mesh.points, (0, 0, 255), 1)
            pose = (poses or {}).get(face.track_id)
            if self.output.pnp_points and pose is not None:
                draw_points(canvas, osf_model_points_image(pose, (w, h)), (0, 255, 255), 2)
            if self.level >= 2 or self.output.video_out is not None:
                draw_label(canvas, f"id {face.id} (track {face.track_id})",
                           (int(face.box[0]), max(12, int(face.box[1]) - 6)))
            if self.level >= 3:
                for k, (x, y, _) in enumerate(face.mesh.points[::8]):
                    cv2.putText(canvas, str(k * 8), (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, 0.25, (255, 255, 0))
        draw_label(canvas, label, (8, 16))
        if self.output.video_out is not None:
            self._write(canvas)
        if self.level:
            cv2.imshow(self.WINDOW, canvas)
            return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)
        return True

    def _write(self, canvas: np.ndarray) -> None:
        scale = self.output.video_scale
        if scale != 1.0:
            canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if self.writer is None:
            path = self.output.video_out
            self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), self.output.video_fps,
                                          (canvas.shape[1], canvas.shape[0]))
            if not self.writer.isOpened():
                raise CaptureError(f"cannot write the video {path} (unwritable folder or unsupported name; use .avi)")
        self.writer.write(canvas)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if self.level:
            cv2.destroyAllWindows()


def check_output_file(path: Path, flag: str) -> None:
    """Fail before start-up, not after it, when an output file cannot be created where asked."""
    if path.is_dir():
        raise ValueError(f"{flag} {path}: that is a folder; give a file name inside it")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path}: no permission to write in {folder}")


def _open_log(path: Path, flag: str = "--log-data"):
    try:
        return open(path, "w", newline="")  # noqa: SIM115 - closed by run()
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot write it ({exc.strerror})") from exc


def outputs_summary(stats: dict) -> str:
    """Datagrams (ZeroMQ: messages) each output has sent, e.g. "osf://127.0.0.1:11573 150 datagrams"."""
    parts = []
    for name, s in stats.items():
        text = f"{name} {s.datagrams} datagram{'s' * (s.datagrams != 1)}"
        if s.errors:
            text += f" ({s.errors} failed)"
        parts.append(text)
    return "; ".join(parts)


ATTENTION_POINTS = 478      # the blendshape model reads the 478-point meshes (irises included)

#: What ResultStage calls per face: (the face's mesh, whether the image is mirrored) -> 52 scores in
#: ARKIT_NAMES order.
MeshBlendshapes = Callable[[MeshResult, bool], np.ndarray]


def blendshapes_for_run(config: DaemonConfig, needs: frozenset[str]) -> MeshBlendshapes | None:
    """The per-face blendshape step of this run, or None when no output needs it or the mesh cannot feed it.

    The model loads only here, so a run whose outputs (and dashboard) send no blendshapes never pays for it. In a
    mirrored image (--mirror-input, or the dashboard's mirror) the face is mirrored, so Left/Right are swapped
    back to the subject's sides; FaceMesh V2 (--model 4) adds its tongue-out score. A hook in
    ``config.blendshapes`` replaces the model.
    """
    if "blendshapes" not in needs or config.tracking.mesh == "mesh":
        return None
    if config.blendshapes is not None:
        hook = config.blendshapes
        return lambda mesh, _mirrored: hook(mesh.points)
    model = BlendshapeModel(threads=config.tracking.threads)
    return lambda mesh, mirrored: model(mesh.points, tongue_out=mesh.tongue_out, mirrored=mirrored).scores


class ResultStage:
    """Tracked faces -> the frame's one ``FrameResult``, doing only the optional work the outputs need.

    The OpenSeeFace record is always built (it holds OpenSeeFace's per-user features and eye openness,
    which the ``FaceResult`` carries for every format); our head pose, the blendshapes and the mesh copy
    only when ``needs`` says so: the outputs' needs, plus the dashboard's while a page is open (``extra``
    per frame).
    """

    def __init__(self, needs: frozenset[str], records: RecordBuilder, face_id_offset: int = 0,
                 blendshapes: MeshBlendshapes | None = None, mirrored: bool = False) -> None:
        self.records = records
        self.results = ResultBuilder(face_id_offset=face_id_offset)
        self.needs = needs
        self._poses: PoseEstimator | None = None
        self.blendshapes = blendshapes
        self.mirrored = mirrored        # the image is mirrored (Left/Right of the blendshapes swapped back)

    def __call__(self, number: int, frame: Frame, faces: list[TrackedFace],
                 extra: frozenset[str] = frozenset()) -> FrameResult:
        needs = self.needs | extra if extra else self.needs
        h, w = frame.image.shape[:2]
        size = (w, h)
        if "pose" in needs and self._poses is None:
            self._poses = PoseEstimator()
        with_mesh = "mesh" in needs
        blendshape_step = self.blendshapes if "blendshapes" in needs else None
        results = []
        for face in faces:
            record = self.records.build(face, size, frame.timestamp, frame.monotonic)
            pose = self._poses.estimate(face.mesh.points, size) if "pose" in needs else None
            blendshapes = None
            if blendshape_step is not None and len(face.mesh.points) == ATTENTION_POINTS:
                blendshapes = blendshape_step(face.mesh, self.mirrored)
            results.append(self.results.face(record.id, face, record, pose, blendshapes, with_mesh))
        return ResultBuilder.frame(number, frame.timestamp, frame.monotonic, time.time(), size, results)


#: Strength -> One Euro settings: 0.5 is the configured filter (the --smooth-* flags), 1 divides its
#: min_cutoff and beta by STRENGTH_RANGE (steadier, more lag), towards 0 multiplies them by it; 0 is off.
STRENGTH_RANGE = 4.0
DEFAULT_STRENGTH = 0.5

# The FaceResult fields each smoother filters, with the signal group whose settings (and strength) it uses.
# points68 and the mesh are both "points" but filtered apart, so each keeps its own face-size scale.
_PARTS = {"points68": "points", "mesh": "points", "pose": "pose", "blendshapes": "blendshapes", "gaze": "gaze"}


def scaled_params(params: OneEuroParams, strength: float) -> OneEuroParams:
    """The One Euro settings for a smoothing strength in (0, 1] (see STRENGTH_RANGE)."""
    factor = STRENGTH_RANGE ** (1.0 - 2.0 * float(strength))
    return OneEuroParams(params.min_cutoff * factor, params.beta * factor, params.d_cutoff)


def _readonly(array: np.ndarray, dtype=np.float32) -> np.ndarray:
    out = np.array(array, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


class ResultSmoother:
    """The smoothing stage between tracking and the outputs: One Euro filters (``tracker/smoothing.py``) over
    each face's 68 points, mesh, head pose (quaternion + translation, and the yaw/pitch/roll angles),
    blendshapes and gaze, per track id (``FaceResult.id``), returning a new ``FrameResult``.

    The OpenSeeFace record (``FaceResult.osf``) is left as OpenSeeFace computes and sends it, unsmoothed:
    OpenSeeFace's own consumers smooth its records themselves, and our ``osf://`` output stays byte-for-byte
    what OpenSeeFace would send. The eye openness and features, which come from that record, are left too.

    Each signal group has a strength (the dashboard's sliders): 0 passes it through unchanged, 0.5 is the
    configured filter, 1 the steadiest (``scaled_params``). Changing a group's strength restarts only that
    group's filters, so its next frame is the raw value and the filter settles again from there.
    """

    def __init__(self, config: SmoothingConfig, strengths: Mapping[str, float] | None = None) -> None:
        self.config = config
        self._strengths: dict[str, float] = {}
        self._smoothers: dict[str, FaceSmoother | None] = {}
        start = DEFAULT_STRENGTH if config.enabled else 0.0
        self.set_strengths({group: start for group in GROUPS} | dict(strengths or {}))

    @property
    def strengths(self) -> dict[str, float]:
        return dict(self._strengths)

    def set_strengths(self, strengths: Mapping[str, float]) -> None:
        """Change the strength of the groups named (0..1); unnamed groups keep theirs."""
        for group, value in strengths.items():
            if group not in GROUPS:
                raise ValueError(f"unknown smoothing group {group!r}; the groups are {', '.join(GROUPS)}")
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"smoothing strength of {group} must lie between 0 and 1, not {value}")
            if self._strengths.get(group) == value:
                continue
            self._strengths[group] = value
            for part, part_group in _PARTS.items():
                if part_group == group:
                    self._smoothers[part] = None if value == 0.0 else FaceSmoother(
                        replace(SmoothingConfig(), **{group: scaled_params(self.config.params(group), value)}))

    def __call__(self, frame_result: FrameResult, timestamp_s: float, new_ids: set[int] | frozenset[int] = frozenset(),
                 live_ids: set[int] | None = None) -> FrameResult:
        """Smooth one frame at ``timestamp_s`` seconds. ``new_ids``: faces whose track starts (or returns) in this
        frame, whose filters restart; ``live_ids``: the ids still tracked (lost but kept included), the others'
        filters are dropped (default: the faces of this frame)."""
        live = {f.id for f in frame_result.faces} if live_ids is None else set(live_ids)
        smoothers = [sm for sm in self._smoothers.values() if sm is not None]
        for smoother in smoothers:
            smoother.forget_except(live)
            for face_id in new_ids:
                smoother.reset(face_id)
        if not smoothers or not frame_result.faces:
            return frame_result
        return replace(frame_result, faces=tuple(self._face(face, timestamp_s) for face in frame_result.faces))

    def _face(self, face: FaceResult, t: float) -> FaceResult:
        sm, changes = self._smoothers, {}
        if sm["points68"] is not None:
            changes["points68"] = _readonly(sm["points68"].apply(face.id, t, {"points": face.points68})["points"])
        if sm["mesh"] is not None and face.mesh is not None:
            changes["mesh"] = _readonly(sm["mesh"].apply(face.id, t, {"points": face.mesh})["points"])
        if sm["pose"] is not None and face.pose is not None:
            p = face.pose
            out = sm["pose"].apply(face.id, t, {"pose": np.concatenate([p.quaternion, p.translation]),
                                                "angles": np.array([p.yaw, p.pitch, p.roll], np.float64)})
            yaw, pitch, roll = (float(a) for a in out["angles"])
            changes["pose"] = Pose(yaw, pitch, roll, _readonly(out["pose"][:4], np.float64),
                                   _readonly(out["pose"][4:], np.float64))
        if sm["blendshapes"] is not None and face.blendshapes is not None:
            out = sm["blendshapes"].apply(face.id, t, {"blendshapes": face.blendshapes})["blendshapes"]
            changes["blendshapes"] = _readonly(out)
        if sm["gaze"] is not None:
            gaze = sm["gaze"].apply(face.id, t, {"gaze": np.stack([face.gaze_right, face.gaze_left])})["gaze"]
            changes["gaze_right"], changes["gaze_left"] = _readonly(gaze[0]), _readonly(gaze[1])
        return replace(face, **changes)


def _strengths_of(config: SmoothingConfig) -> dict[str, float]:
    """The dashboard's starting smoothing strengths: the configured filters, or off under --no-smoothing."""
    return {group: DEFAULT_STRENGTH if config.enabled else 0.0 for group in GROUPS}


def _apply_controls(state: ControlState, config: DaemonConfig, tracker: FaceTracker, builder: RecordBuilder,
                    results: ResultStage, smoother: ResultSmoother) -> None:
    """A new dashboard control state, taken up at the start of a frame."""
    smoother.set_strengths(state.smoothing)
    if state.relearn_neutral:
        # The expression features learn each user's neutral face per track: new state, learning afresh.
        builder.forget_except(set())
        log.info("re-learning the neutral face (dashboard)")
    if state.mirror != results.mirrored:
        results.mirrored = state.mirror
        tracker.reset()           # every face jumps to its mirror image: find them again
        log.info("mirror input %s (dashboard)", "on" if state.mirror else "off")


def _dashboard_stats(stats: RunStats, arrivals: deque, reader: LatestFrameReader | None,
                     outputs: OutputGroup) -> DashboardStats:
    recent = list(itertools.islice(reversed(stats.processing_ms), RATE_WINDOW))
    latency = list(itertools.islice(reversed(stats.latency_ms), RATE_WINDOW))
    fps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) >= 2 and arrivals[-1] > arrivals[0] else 0.0
    return DashboardStats(fps=fps, processing_ms=statistics.median(recent) if recent else 0.0,
                          latency_ms=statistics.median(latency) if latency else 0.0,
                          dropped_frames=reader.dropped if reader is not None else 0,
                          outputs=outputs.stats(), failed_outputs=tuple(o.name for o in outputs.failed))


def _warn_about_blendshapes(config: DaemonConfig, outputs: OutputGroup) -> None:
    """Say once, at start, when outputs ask for blendshapes that this run cannot compute (--model 0)."""
    wanting = [o.name for o in outputs.outputs if "blendshapes" in o.needs]
    if not wanting or config.tracking.mesh != "mesh":
        return
    why = "blendshapes need a 478-point mesh, and --model 0 and below track the 468-point mesh"
    log.warning("%s; %s send%s without them (README, \"Outputs\": what each format sends then)", why,
                ", ".join(wanting), "s" * (len(wanting) == 1))


def _frames(source, reader: LatestFrameReader | None, stop: threading.Event):
    if reader is None:
        for frame in source:
            if stop.is_set():
                return
            yield frame
        return
    while not stop.is_set():
        frame = reader.get(timeout=0.2)
        if frame is None:
            if reader.finished:
                return
            continue
        yield frame


def run(config: DaemonConfig, stop: threading.Event | None = None, ready: threading.Event | None = None) -> int:
    """Run the daemon until the input ends, ``stop`` is set, or --frames is reached.

    ``ready`` is set once start-up (models, source, socket, files) is done and tracking begins.
    """
    stop = stop or threading.Event()
    with contextlib.ExitStack() as resources:      # whatever start-up opened is closed, however it ends
        # Outputs first: a taken port or a bad key file stops the run before the models load.
        outputs = OutputGroup.from_urls(config.output.output_urls, mesh=config.output.mesh)
        outputs.open()
        resources.callback(outputs.close)
        _warn_about_blendshapes(config, outputs)
        controls = dashboard = None
        if config.web is not None:     # before the models load: the page can be opened while they do
            controls = TrackerControls(_strengths_of(config.smoothing), mirror=config.capture.mirror)
            dashboard = Dashboard(config.web[0], config.web[1], controls)
            url = dashboard.start()
            resources.callback(dashboard.close)
            print(f"dashboard: {url}", file=sys.stderr, flush=True)     # printed even with -s: the user needs it
        tracker = FaceTracker(config.tracking)
        builder = RecordBuilder(config.records)
        logged = frozenset({"blendshapes"}) if config.output.log_blendshapes else frozenset()
        may_need = outputs.needs | logged | (frozenset({"blendshapes"}) if dashboard is not None else frozenset())
        results = ResultStage(outputs.needs | logged, builder, config.records.face_id_offset,
                              blendshapes_for_run(config, may_need), mirrored=config.capture.mirror)
        source = open_source(config.capture, stop=stop)
        live = isinstance(source, CameraSource) or config.capture.pace
        reader = LatestFrameReader(source) if live else None
        # The reader owns a live source: it closes it, and never waits on a read stuck in the driver.
        resources.callback(source.close if reader is None else reader.close)
        annotator = Annotator(config.output)
        resources.callback(annotator.close)
        log_file = _open_log(config.output.log_data) if config.output.log_data else None
        if log_file:
            resources.callback(log_file.close)
        log_writer = OsfLogWriter(log_file, float(config.capture.fps or 0)) if log_file else None
        shapes_log = None
        if config.output.log_blendshapes:
            shapes_file = _open_log(config.output.log_blendshapes, "--log-blendshapes")
            resources.callback(shapes_file.close)
            shapes_log = BlendshapeCsvWriter(shapes_file)
        smoother = ResultSmoother(config.smoothing, None if controls is None else controls.state.smoothing)
        # Only the OpenSeeFace record is read by an osf-only run, and it is never smoothed: skip the stage there.
        smoothed_read = (dashboard is not None or shapes_log is not None
                         or any(o.target.scheme != "osf" for o in outputs.outputs))
        control_version = 0
        frame_s = 1.0 / (source.fps or 30.0)     # an unpaced video's or images' own time between frames
        offset = config.records.face_id_offset
        stats = RunStats()
        arrivals: deque[float] = deque(maxlen=RATE_WINDOW)     # for the window's label only
        arrivals_web: deque[float] = deque(maxlen=RATE_WINDOW)  # for the dashboard's frame rate
        last_status = time.perf_counter()
        log.info("tracking %s, sending to %s", source.name, ", ".join(o.name for o in outputs.outputs))
        if ready is not None:
            ready.set()
        for frame in _frames(source, reader, stop):
            started = time.perf_counter()
            state = controls.read(stats.frames + 1) if controls is not None else None
            if state is not None:
                if state.version != control_version:
                    control_version = state.version
                    _apply_controls(state, config, tracker, builder, results, smoother)
                if state.mirror != config.capture.mirror:     # the page's mirror differs from the source's
                    frame = replace(frame, image=cv2.flip(frame.image, 1))
            faces = tracker.update(frame.image)
            extra = dashboard.needs if dashboard is not None else frozenset()
            raw = results(stats.frames + 1, frame, faces, extra)
            new_ids = {result.id for face, result in zip(faces, raw.faces) if face.new}
            frame_result = raw if not smoothed_read else smoother(
                raw, frame.monotonic if live else (stats.frames + 1) * frame_s, new_ids,
                {track_id + offset for track_id in tracker.track_ids()})
            if state is None or not state.paused:
                outputs.send(frame_result)
            sent = time.perf_counter()
            builder.forget_except(tracker.track_ids())
            stats.frames += 1
            stats.frames_with_faces += bool(faces)
            stats.processing_ms.append((sent - started) * 1000)
            stats.latency_ms.append((sent - frame.monotonic) * 1000)
            if dashboard is not None:
                dashboard.publish(frame_result, frame.image,
                                  lambda: _dashboard_stats(stats, arrivals_web, reader, outputs))
                arrivals_web.append(frame.monotonic)
            if shapes_log is not None:
                shapes_log.write(frame_result)
            if log_writer:
                for k, (face, result) in enumerate(zip(faces, frame_result.faces)):
                    pose = builder.pose_of(face.track_id)
                    log_writer.write(stats.frames, k, result.osf, pose.rvec if pose else np.zeros(3))
            if annotator.active:
                arrivals.append(frame.monotonic)
                label = rate_label(arrivals, stats.processing_ms)
                poses = {f.track_id: builder.pose_of(f.track_id) for f in faces}
                if not annotator.show(frame.image, faces, label, poses):
                    break
            if sent - last_status > STATUS_EVERY_S:
                last_status = sent
                log.info("%s; faces now: %s; sent: %s", stats.summary(), [f.slot for f in frame_result.faces] or "none",
                         outputs_summary(outputs.stats()))
            if config.max_frames and stats.frames >= config.max_frames:
                break
    if stats.frames == 0 and not stop.is_set():
        raise CaptureError(f"no frame could be read from {source.name}: the input ended before its first frame")
    log.info("done: %s; sent: %s", stats.summary(), outputs_summary(outputs.stats()))
    return EXIT_OK


def facetracker_main(argv: list[str] | None = None, prog: str = "facetracker") -> int:
    """The ``facetracker`` command: 0 when the input ended or it was stopped, 2 on bad input, 130 when
    interrupted while starting (before tracking began)."""
    try:
        return _facetracker(argv, prog)
    except KeyboardInterrupt:
        log.info("interrupted while starting")
        return EXIT_INTERRUPTED


def _facetracker(argv: list[str] | None, prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.silent else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    if not args.verbose:   # our own messages say what went wrong; OpenCV's backend chatter only confuses
        quiet_video_decoders()
    cores = available_cores()
    if args.max_threads > cores:
        log.warning("--max-threads %d is more than the %d CPU core%s this process may use; the models will run "
                    "slower, not faster (try -m %d or less)", args.max_threads, cores, "s" * (cores != 1), cores)
    if args.list_cameras:
        print(format_camera_list(list_cameras()))
        return EXIT_OK
    try:
        config = config_from_args(args)
        if args.benchmark:
            from .benchmark import run_stage_benchmark
            print(run_stage_benchmark(config))
            return EXIT_OK
        stop, ready = threading.Event(), threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            def on_signal(signum, _frame):
                if not ready.is_set():        # still loading models or opening the source: stop right here
                    if signum == signal.SIGINT:
                        raise KeyboardInterrupt
                    log.info("stopped while starting (%s)", signal.Signals(signum).name)
                    raise SystemExit(128 + signum)
                log.info("stopping (%s)", signal.Signals(signum).name)
                stop.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            return run(config, stop, ready)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    except CameraNotFoundError as exc:
        log.error("%s\nTo try Facewire without a camera, give a video file: %s -c VIDEO.mp4", exc, prog)
        return EXIT_ERROR
    except (CaptureError, ModelError, TransportError, ValueError, WebUnavailableError, DashboardError) as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    except MemoryError:
        log.error("not enough memory to run with these settings (frame size %dx%d, --faces %d)",
                  args.width, args.height, args.faces)
        return EXIT_ERROR
