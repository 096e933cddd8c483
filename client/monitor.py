"""``facewire monitor``: a live terminal view of the faces arriving over UDP.

Per face: id, receive rate, head angles, eye openness, mouth, the 14 expression features and (with an
expression model) the detected expression; plus packet counters with the reasons for dropped packets.
On a terminal the view is redrawn in place with plain ANSI escapes about ten times a second; when the
output is a pipe or a file, a plain snapshot is printed every ``interval`` seconds instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

from .calibration import CalibrationError, ExpressionCalibrator, Prediction
from .protocol import OpenSeeFaceRecord
from .receiver import OpenSeeFaceReceiver, ReceiverStats
from .views import HeadAngles, has_pose, head_angles

__all__ = ["FaceView", "MonitorConfig", "face_view", "render", "render_waiting", "run_monitor"]

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
    pnp_error: float
    confidence: float               # mean landmark confidence
    expression: Prediction | None   # None without a model or for an unusable frame


@dataclass(frozen=True)
class MonitorConfig:
    host: str = "127.0.0.1"
    port: int = 11573
    model: ExpressionCalibrator | None = None
    once: bool = False              # print one view a second after faces first arrive, then exit
    duration: float | None = None   # stop after this many seconds
    interval: float | None = None   # seconds between redraws; default 0.1 on a terminal, 1.0 otherwise
    ansi: bool = False              # redraw in place (a terminal) rather than print snapshots


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


def _bar(value: float) -> str:
    filled = round(min(max(value, 0.0), 1.0) * _BAR_WIDTH)
    return "#" * filled + "." * (_BAR_WIDTH - filled)


def _render_face(view: FaceView) -> list[str]:
    f = view.features
    if view.angles is None:
        pose = "head pose unavailable"
    else:
        a = view.angles
        pose = f"yaw {a.yaw:+6.1f}  pitch {a.pitch:+6.1f}  roll {a.roll:+6.1f} deg"
    lines = [
        f"face {view.id:<3} {view.rate:5.1f} fps   {pose}   fit error {view.pnp_error:.2f}  "
        f"confidence {view.confidence:.2f}",
        f"  eyes        left {view.eye_left:.2f} [{_bar(view.eye_left)}]  right {view.eye_right:.2f} "
        f"[{_bar(view.eye_right)}]",
        f"  mouth       open {f['mouth_open']:+.2f} [{_bar(f['mouth_open'])}]  wide {f['mouth_wide']:+.2f}  "
        f"corners up/down l {f['mouth_corner_updown_l']:+.2f} r {f['mouth_corner_updown_r']:+.2f}  "
        f"in/out l {f['mouth_corner_inout_l']:+.2f} r {f['mouth_corner_inout_r']:+.2f}",
        f"  eyebrows    up/down l {f['eyebrow_updown_l']:+.2f} r {f['eyebrow_updown_r']:+.2f}  "
        f"steepness l {f['eyebrow_steepness_l']:+.2f} r {f['eyebrow_steepness_r']:+.2f}  "
        f"quirk l {f['eyebrow_quirk_l']:+.2f} r {f['eyebrow_quirk_r']:+.2f}",
        f"  eye feature l {f['eye_l']:+.2f} r {f['eye_r']:+.2f}",
    ]
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


def render(views: list[FaceView], stats: ReceiverStats, address: tuple[str, int], elapsed: float) -> str:
    """The whole view for the faces currently live."""
    host, port = address
    lines = [
        f"Facewire monitor  {host}:{port}  {len(views)} face{'s' if len(views) != 1 else ''}  "
        f"{_packets_line(stats)}  [{elapsed:.0f} s, Ctrl-C quits]",
        "",
    ]
    for view in views:
        lines += _render_face(view) + [""]
    return "\n".join(lines)


def render_waiting(stats: ReceiverStats, address: tuple[str, int], waited: float) -> str:
    """The view while no face is live: what is being waited for, and why nothing shows."""
    host, port = address
    if stats.received == 0:
        return (
            f"waiting for packets on {host}:{port} ... ({waited:.0f} s)\n"
            f"Start a tracker that sends there, e.g.: facetracker -c 0 -p {port}"
        )
    if stats.accepted == 0:
        return (
            f"packets arrive on {host}:{port} but none is valid OpenSeeFace data: {_packets_line(stats)}\n"
            "Is the sender speaking another protocol?"
        )
    return f"no face tracked for {waited:.0f} s on {host}:{port}  ({_packets_line(stats)})"


def run_monitor(config: MonitorConfig, out: TextIO) -> int:
    """Show the live view until Ctrl-C, ``duration`` or (with ``once``) the first view; 0 if faces were seen."""
    interval = config.interval if config.interval is not None else (0.1 if config.ansi else 1.0)
    receiver = OpenSeeFaceReceiver(config.host, config.port)
    started = time.monotonic()
    last_face = started
    first_face: float | None = None
    printed_waiting = False  # with once, the waiting message is printed a single time
    if config.ansi:
        out.write(_HIDE_CURSOR)
    try:
        while True:
            now = time.monotonic()
            records = sorted(receiver.faces().values(), key=lambda r: r.id)
            stats = receiver.stats()
            if records:
                last_face = now
                first_face = now if first_face is None else first_face
                views = [face_view(r, stats.face_rates.get(r.id, 0.0), config.model) for r in records]
                text = render(views, stats, receiver.address, now - started)
            else:
                text = render_waiting(stats, receiver.address, now - last_face)
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
