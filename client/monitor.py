"""``facewire monitor``: a live terminal view of the faces a tracker streams, in any of its formats.

Per face: id, receive rate, head angles, eye openness, mouth, the 14 expression features, the
strongest blendshapes when the stream carries them, and (OpenSeeFace records, with an expression
model) the detected expression; plus packet counters with the reasons for dropped packets. The
stream is OpenSeeFace's records (``osf``, UDP 11573), Facewire's msgpack frames (``msgpack``, UDP
11574), the same over ZeroMQ (``zmq``, connects to tcp://HOST:5555) or iFacialMocap (``ifacialmocap``,
UDP 49983). On a terminal the view is redrawn in place with plain ANSI escapes about ten times a
second; when the output is a pipe or a file, a plain snapshot is printed every ``interval`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from .calibration import CalibrationError, ExpressionCalibrator, Prediction
from .protocol import OpenSeeFaceRecord
from .receiver import DatagramReceiver, OpenSeeFaceReceiver, ReceiverStats
from .views import HeadAngles, has_pose, head_angles

__all__ = ["FORMATS", "FaceView", "MonitorConfig", "StreamAddressError", "face_view", "ifacialmocap_face_view",
           "msgpack_face_view", "open_stream", "parse_stream", "render", "render_waiting", "run_monitor"]

#: The streams the monitor reads: format -> (default port, what it is called in messages).
FORMATS: dict[str, tuple[int, str]] = {
    "osf": (11573, "OpenSeeFace"),
    "msgpack": (11574, "Facewire msgpack"),
    "zmq": (5555, "Facewire ZeroMQ"),
    "ifacialmocap": (49983, "iFacialMocap"),
}
_SCHEMES = {"osf": "osf", "msgpack": "msgpack", "zmq": "zmq", "zmq+tcp": "zmq", "tcp": "zmq",
            "ifacialmocap": "ifacialmocap"}
TOP_BLENDSHAPES = 6     # how many of the strongest blendshapes a face's view lists


class StreamAddressError(ValueError):
    """A ``--format`` value (a format name or URL) or port the monitor cannot use; the message says why."""


def parse_stream(text: str, host: str = "127.0.0.1", port: int | None = None) -> tuple[str, str, int]:
    """(format, host, port) from a format name (``msgpack``: ``host`` and ``port`` or the format's default
    port) or a URL (``msgpack://127.0.0.1:11574``, ``zmq+tcp://192.168.1.20:5555``; the same URLs as the
    tracker's ``--output``)."""
    text = text.strip()
    if "://" not in text:
        name = text.lower()
        if name not in _SCHEMES:
            raise StreamAddressError(f"--format {text}: unknown stream format; use one of {', '.join(FORMATS)} or a "
                                     f"URL such as msgpack://127.0.0.1:11574")
        kind = _SCHEMES[name]
        port = FORMATS[kind][0] if port is None else port
    else:
        parts = urlsplit(text)
        kind = _SCHEMES.get(parts.scheme.lower())
        if kind is None:
            raise StreamAddressError(f"--format {text}: unknown kind of stream {parts.scheme}://; use osf://, "
                                     f"msgpack://, zmq+tcp:// or ifacialmocap://")
        try:
            url_port = parts.port
        except ValueError:
            raise StreamAddressError(f"--format {text}: the port must be a number from 1 to 65535") from None
        if parts.path not in ("", "/") or parts.query:
            raise StreamAddressError(f"--format {text}: write the stream as SCHEME://HOST:PORT, nothing after the "
                                     f"port")
        if url_port is not None and port is not None and url_port != port:
            raise StreamAddressError(f"--format {text}: the URL says port {url_port} and --port says {port}; give "
                                     f"one")
        host = parts.hostname or host
        port = url_port if url_port is not None else port if port is not None else FORMATS[kind][0]
    if not 1 <= port <= 65535:
        raise StreamAddressError(f"port {port} ({'--format ' + text if '://' in text else '--port'}): must be a "
                                 f"number from 1 to 65535")
    return kind, host, port

_log = logging.getLogger(__name__)

_HOME_CLEAR = "\x1b[H\x1b[J"
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
_BAR_WIDTH = 10


@dataclass(frozen=True)
class FaceView:
    """What the monitor shows for one face."""

    id: int
    rate: float                     # records per second received for this face
    angles: HeadAngles | None       # None when the record has no usable pose
    eye_left: float
    eye_right: float
    features: Mapping[str, float]
    pnp_error: float | None         # OpenSeeFace's fit error (None: the stream has none)
    confidence: float | None        # mean landmark confidence, or the face probability (None: not sent)
    expression: Prediction | None   # None without a model or for an unusable frame
    blendshapes: Mapping[str, float] | None = None    # ARKit names -> 0..1, when the stream carries them
    carries_blendshapes: bool = False                 # the format has room for them (msgpack, zmq, iFacialMocap)


@dataclass(frozen=True)
class MonitorConfig:
    host: str = "127.0.0.1"
    port: int = 11573
    model: ExpressionCalibrator | None = None
    once: bool = False              # print one view a second after faces first arrive, then exit
    duration: float | None = None   # stop after this many seconds
    interval: float | None = None   # seconds between redraws; default 0.1 on a terminal, 1.0 otherwise
    ansi: bool = False              # redraw in place (a terminal) rather than print snapshots
    stream: str = "osf"             # osf, msgpack, zmq or ifacialmocap (FORMATS)
    server_key: str | None = None   # zmq with CURVE: the tracker's public key file (facewire keys)


def face_view(rec: OpenSeeFaceRecord, rate: float, model: ExpressionCalibrator | None = None) -> FaceView:
    """Everything shown for ``rec``; the expression comes from ``model`` when given."""
    expression = None
    if model is not None:
        try:
            expression = model.predict(rec)
        except CalibrationError as exc:
            _log.debug("no expression for face %d: %s", rec.id, exc)
    return FaceView(
        id=rec.id,
        rate=rate,
        angles=head_angles(rec) if has_pose(rec) else None,
        eye_left=rec.eye_left,
        eye_right=rec.eye_right,
        features=rec.features,
        pnp_error=rec.pnp_error,
        confidence=float(rec.confidence[:66].mean()),
        expression=expression,
    )


def msgpack_face_view(face: Any, rate: float, _model: ExpressionCalibrator | None = None) -> FaceView:
    """The view of a face from Facewire's msgpack frames (``MsgpackFace``, UDP or ZeroMQ)."""
    return FaceView(id=face.id, rate=rate, angles=HeadAngles(face.yaw, face.pitch, face.roll),
                    eye_left=face.eye_open_left, eye_right=face.eye_open_right, features=face.features,
                    pnp_error=None, confidence=face.confidence, expression=None, blendshapes=face.blendshapes,
                    carries_blendshapes=True)


def ifacialmocap_face_view(frame: Any, rate: float, _model: ExpressionCalibrator | None = None) -> FaceView:
    """The view of an iFacialMocap frame: ARKit angles back to the README's (rx = -pitch, ry = yaw,
    rz = -roll), eye openness as 1 - eyeBlink; the format has no OpenSeeFace features."""
    rx, ry, rz = frame.head_rotation
    shapes = frame.blendshapes
    return FaceView(id=0, rate=rate, angles=HeadAngles(ry, -rx, -rz), eye_left=1.0 - shapes.get("eyeBlinkLeft", 0.0),
                    eye_right=1.0 - shapes.get("eyeBlinkRight", 0.0), features=None, pnp_error=None,
                    confidence=None, expression=None, blendshapes=shapes, carries_blendshapes=True)


def _bar(value: float) -> str:
    filled = round(min(max(value, 0.0), 1.0) * _BAR_WIDTH)
    return "#" * filled + "." * (_BAR_WIDTH - filled)


def _blendshapes_line(view: FaceView) -> list[str]:
    if view.blendshapes is None:
        return ["  blendshapes none in this stream (the tracker computes none yet)"] if view.carries_blendshapes else []
    top = sorted(((n, v) for n, v in view.blendshapes.items() if v > 0), key=lambda item: -item[1])[:TOP_BLENDSHAPES]
    return ["  blendshapes " + ("  ".join(f"{name} {value:.2f}" for name, value in top) if top else "all 0")]


def _render_face(view: FaceView) -> list[str]:
    f = view.features
    if view.angles is None:
        pose = "head pose unavailable"
    else:
        a = view.angles
        pose = f"yaw {a.yaw:+6.1f}  pitch {a.pitch:+6.1f}  roll {a.roll:+6.1f} deg"
    first = f"face {view.id:<3} {view.rate:5.1f} fps   {pose}"
    if view.pnp_error is not None:
        first += f"   fit error {view.pnp_error:.2f}"
    if view.confidence is not None:
        first += f"  confidence {view.confidence:.2f}"
    lines = [
        first,
        f"  eyes        left {view.eye_left:.2f} [{_bar(view.eye_left)}]  right {view.eye_right:.2f} "
        f"[{_bar(view.eye_right)}]",
    ]
    if f is None:
        return lines + _blendshapes_line(view)
    lines += [
        f"  mouth       open {f['mouth_open']:+.2f} [{_bar(f['mouth_open'])}]  wide {f['mouth_wide']:+.2f}  "
        f"corners up/down l {f['mouth_corner_updown_l']:+.2f} r {f['mouth_corner_updown_r']:+.2f}  "
        f"in/out l {f['mouth_corner_inout_l']:+.2f} r {f['mouth_corner_inout_r']:+.2f}",
        f"  eyebrows    up/down l {f['eyebrow_updown_l']:+.2f} r {f['eyebrow_updown_r']:+.2f}  "
        f"steepness l {f['eyebrow_steepness_l']:+.2f} r {f['eyebrow_steepness_r']:+.2f}  "
        f"quirk l {f['eyebrow_quirk_l']:+.2f} r {f['eyebrow_quirk_r']:+.2f}",
        f"  eye feature l {f['eye_l']:+.2f} r {f['eye_r']:+.2f}",
    ]
    lines += _blendshapes_line(view)
    if view.expression is not None:
        e = view.expression
        others = ", ".join(
            f"{name} {p * 100:.0f}%"
            for name, p in sorted(e.probabilities.items(), key=lambda item: -item[1])
            if name != e.expression
        )
        lines.append(f"  expression  {e.expression} {e.probability * 100:.0f}%" + (f"  ({others})" if others else ""))
    return lines


def _packets_line(stats: ReceiverStats) -> str:
    line = f"packets: {stats.accepted} accepted, {stats.dropped_total} dropped"
    if stats.dropped:
        line += " (" + ", ".join(f"{reason} {n}" for reason, n in sorted(stats.dropped.items())) + ")"
    if stats.kernel_dropped:
        line += f", {stats.kernel_dropped} lost in the kernel (receive buffer full: reading fell behind)"
    return line


def render(views: list[FaceView], stats: ReceiverStats, address: tuple[str, int], elapsed: float,
           stream: str = "osf") -> str:
    """The whole view for the faces currently live."""
    host, port = address
    label = "" if stream == "osf" else f"{FORMATS[stream][1]}  "
    lines = [
        f"Facewire monitor  {label}{host}:{port}  {len(views)} face{'s' if len(views) != 1 else ''}  "
        f"{_packets_line(stats)}  [{elapsed:.0f} s, Ctrl-C quits]",
        "",
    ]
    for view in views:
        lines += _render_face(view) + [""]
    return "\n".join(lines)


_TRACKER_HINT = {
    "osf": "facetracker -c 0 -p {port}",
    "msgpack": "facetracker -c 0 --output msgpack://{host}:{port}",
    "zmq": "facetracker -c 0 --output zmq+tcp://{host}:{port}",
    "ifacialmocap": "facetracker -c 0 --output ifacialmocap://{host}:{port}",
}


def render_waiting(stats: ReceiverStats, address: tuple[str, int], waited: float, stream: str = "osf") -> str:
    """The view while no face is live: what is being waited for, and why nothing shows."""
    host, port = address
    where = f"from tcp://{host}:{port}" if stream == "zmq" else f"on {host}:{port}"
    if stats.received == 0:
        hint = _TRACKER_HINT[stream].format(host=host, port=port)
        return (
            f"waiting for {'' if stream == 'osf' else FORMATS[stream][1] + ' '}packets {where} ... ({waited:.0f} s)\n"
            f"Start a tracker that sends there, e.g.: {hint}"
        )
    if stats.accepted == 0:
        return (
            f"packets arrive {where} but none is valid {FORMATS[stream][1]} data: {_packets_line(stats)}\n"
            "Is the sender speaking another protocol? (facewire monitor --format osf|msgpack|zmq|ifacialmocap)"
        )
    return f"no face tracked for {waited:.0f} s {where}  ({_packets_line(stats)})"


def open_stream(stream: str, host: str, port: int, server_key: str | None = None) -> DatagramReceiver:
    """The receiver for a stream format (raises ReceiverError when it cannot listen or connect)."""
    if stream == "osf":
        return OpenSeeFaceReceiver(host, port)
    if stream == "msgpack":
        from .msgpack_receiver import MsgpackReceiver
        return MsgpackReceiver(host, port)
    if stream == "ifacialmocap":
        from .ifacialmocap_receiver import IFacialMocapReceiver
        return IFacialMocapReceiver(host, port)
    if stream == "zmq":
        from .zmq_stream import ZmqSubscriber
        return ZmqSubscriber(f"tcp://{host}:{port}", server_key=server_key)
    raise StreamAddressError(f"unknown stream format {stream!r}")


_VIEWS: dict[str, Callable[..., FaceView]] = {"osf": face_view, "msgpack": msgpack_face_view, "zmq": msgpack_face_view,
                                              "ifacialmocap": ifacialmocap_face_view}


def run_monitor(config: MonitorConfig, out: TextIO) -> int:
    """Show the live view until Ctrl-C, ``duration`` or (with ``once``) the first view; 0 if faces were seen."""
    interval = config.interval if config.interval is not None else (0.1 if config.ansi else 1.0)
    receiver = open_stream(config.stream, config.host, config.port, config.server_key)
    view_of = _VIEWS[config.stream]
    started = time.monotonic()
    last_face = started
    first_face: float | None = None
    printed_waiting = False  # with once, the waiting message is printed a single time
    if config.ansi:
        out.write(_HIDE_CURSOR)
    try:
        while True:
            now = time.monotonic()
            records = sorted(receiver.faces().items(), key=lambda item: item[0])      # (face id, record)
            stats = receiver.stats()
            if records:
                last_face = now
                first_face = now if first_face is None else first_face
                views = [view_of(r, stats.face_rates.get(key, 0.0), config.model) for key, r in records]
                text = render(views, stats, receiver.address, now - started, config.stream)
            else:
                text = render_waiting(stats, receiver.address, now - last_face, config.stream)
            done = config.duration is not None and now - started >= config.duration
            show_once = config.once and first_face is not None and now - first_face >= 1.0
            if config.ansi:
                out.write(_HOME_CLEAR + text + "\n")
            elif not config.once or show_once or done or (not records and not printed_waiting):
                out.write(text + "\n\n")
                printed_waiting = printed_waiting or not records
            out.flush()
            if done or show_once:
                break
            time.sleep(interval if config.duration is None else
                       max(0.0, min(interval, started + config.duration - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        if config.ansi:
            out.write(_SHOW_CURSOR)
            out.flush()
        receiver.close()
    return 0 if first_face is not None else 1
