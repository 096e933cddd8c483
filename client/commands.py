"""The client's command-line tools: ``monitor``, ``calibrate``, ``expressions`` and ``keys``.

They only listen to the UDP stream (any OpenSeeFace-compatible tracker), so they need none of the
tracker's dependencies. ``facewire`` registers them through :func:`add_client_commands`; without the
tracker installed they also run as ``python -m facewire.client.commands COMMAND``.

Exit codes follow ``facewire``: 0 success, 1 nothing arrived or training failed, 2 bad input or
environment (unreadable model file, port in use), 130 interrupted where that loses work (calibrate).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import queue
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .calibration import CalibrationError, ExpressionCalibrator, ModelFileError, NotEnoughDataError
from .monitor import FORMATS, MonitorConfig, StreamAddressError, parse_stream, run_monitor
from .protocol import OpenSeeFaceRecord
from .receiver import OpenSeeFaceReceiver, ReceiverError

__all__ = ["CalibrationPlan", "add_client_commands", "main", "record_expressions"]

_log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
_POLL_SECONDS = 0.1
_PROGRESS_SECONDS = 0.25


def _add_stream_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for trackers on other machines)")
    parser.add_argument("--port", type=_port, default=11573,
                        help="UDP port the tracker sends to, 1-65535 (default 11573)")


def _port(text: str) -> int:
    """A UDP port number; the socket layer would silently wrap 99999 to 34463 and read 65536 as "any port"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, not {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in the range 1-65535, not {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be zero or a positive number of seconds, not {text}")
    return value


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _expression_names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if any(not name for name in names):
        raise argparse.ArgumentTypeError(f"empty expression name in {text!r} (use e.g. neutral,smile,surprise)")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"an expression is listed twice in {text!r}")
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"calibration needs at least 2 expressions, got {text!r}")
    return names


def add_client_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``monitor``, ``calibrate``, ``expressions`` and ``keys`` (each with ``func(args) -> exit code``)."""
    p = subparsers.add_parser(
        "monitor", help="live terminal view of the faces a tracker sends (pose, eyes, mouth, features, blendshapes)",
        description="Show every face arriving from a tracker: id, receive rate, head angles, eye openness, mouth, "
                    "the 14 expression features, the strongest blendshapes when the stream carries them, dropped "
                    "packets, and with --model the detected expression. Reads OpenSeeFace records (default), "
                    "Facewire's msgpack frames, its ZeroMQ stream or iFacialMocap (--format). Redraws in place on "
                    "a terminal; prints plain snapshots when piped. Ctrl-C quits.")
    _add_stream_options(p)
    p.set_defaults(port=None)          # the --format's own port unless one is given
    for action in p._actions:          # the same options, read per format here
        if action.dest == "host":
            action.help = ("address to listen on (default 127.0.0.1; 0.0.0.0 for trackers on other machines); "
                           "with --format zmq, the tracker's address to connect to")
        elif action.dest == "port":
            action.help = "port of the stream (default: the --format's own port)"
    p.add_argument("--format", default="osf", metavar="FORMAT|URL",
                   help=f"the stream to read: {', '.join(FORMATS)} (default osf), on --host and --port (default: "
                        f"the format's port: " + ", ".join(f"{k} {v[0]}" for k, v in FORMATS.items()) + "; zmq "
                        "connects to the tracker's address), or a URL as given to the tracker's --output, e.g. "
                        "msgpack://127.0.0.1:11574 or zmq+tcp://192.168.1.20:5555")
    p.add_argument("--server-key", type=Path, metavar="FILE",
                   help="zmq with CURVE: the tracker's public key file (facewire.key from 'facewire keys')")
    p.add_argument("--model", type=Path, metavar="FILE", help="expression model from 'facewire calibrate'")
    p.add_argument("--once", action="store_true",
                   help="print one view a second after the first face arrives, then exit")
    p.add_argument("--duration", type=_positive, metavar="S", help="exit after S seconds")
    p.add_argument("--interval", type=_positive, metavar="S",
                   help="seconds between redraws (default 0.1 on a terminal, 1 when piped)")
    p.set_defaults(func=cmd_monitor)

    p = subparsers.add_parser(
        "calibrate", help="record your expressions from the live stream and train an expression model",
        description="Guides you through each expression in turn: a countdown, then S seconds of recording "
                    "while you hold the expression (turning your head a little helps the model ignore pose). "
                    "Then trains the classifier, prints its cross-validated statistics and saves it.")
    _add_stream_options(p)
    p.add_argument("--expressions", type=_expression_names, required=True, metavar="A,B,...",
                   help="comma-separated names, in recording order, e.g. neutral,smile,surprise")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to save the model")
    p.add_argument("--seconds", type=_positive, default=5.0, metavar="S",
                   help="recording time per expression (default 5)")
    p.add_argument("--skip", type=_at_least_one, default=2, metavar="N",
                   help="keep every N-th frame while recording (default 2)")
    p.add_argument("--countdown", type=_non_negative, default=3.0, metavar="S",
                   help="seconds to get ready before each expression (default 3; 0 for none)")
    p.add_argument("--face", type=int, default=None, metavar="ID",
                   help="face id to record (default: the lowest id in each frame)")
    p.add_argument("--min-samples", type=_at_least_one, default=10, metavar="N",
                   help="fewest samples per expression that training accepts (default 10)")
    p.add_argument("--wait", type=_positive, default=30.0, metavar="S",
                   help="how long to wait for the tracker's first packet (default 30)")
    p.set_defaults(func=cmd_calibrate)

    p = subparsers.add_parser(
        "expressions", help="print the detected expression live, using a model from 'facewire calibrate'",
        description="Classify every face arriving over UDP with an expression model and print each change "
                    "of expression, then a summary per face.")
    _add_stream_options(p)
    p.add_argument("--model", type=Path, required=True, metavar="FILE", help="model from 'facewire calibrate'")
    p.add_argument("--duration", type=_positive, metavar="S", help="exit after S seconds")
    p.add_argument("--until-idle", type=_positive, metavar="S",
                   help="exit once no packet has arrived for S seconds (after the first one), e.g. when a "
                        "tracker run over a video ends")
    p.add_argument("--hold", type=_at_least_one, default=3, metavar="N",
                   help="announce a new expression once it was detected in N frames in a row (default 3)")
    p.add_argument("--log", type=Path, metavar="CSV",
                   help="also write one line per face and frame: expression and every probability")
    p.set_defaults(func=cmd_expressions)

    p = subparsers.add_parser(
        "keys", help="make a CURVE key pair for an encrypted ZeroMQ stream",
        description="Write FOLDER/facewire.key (the public key: copy it to every machine that may subscribe) "
                    "and FOLDER/facewire.key_secret (the secret key: keep it on the tracking PC, readable only "
                    "by you). Then: facetracker --output \"zmq+tcp://0.0.0.0:5555?curve=FOLDER/facewire.key_secret\"; "
                    "subscribers give the public key (facewire monitor --format zmq+tcp://HOST:5555 --server-key "
                    "FOLDER/facewire.key). A subscriber without it receives nothing.")
    p.add_argument("folder", type=Path, metavar="FOLDER", help="where to write the pair (created if missing)")
    p.add_argument("--force", action="store_true", help="replace an existing pair in FOLDER")
    p.set_defaults(func=cmd_keys)


# --- shared helpers ----------------------------------------------------------------------------


def _load_model(path: Path) -> ExpressionCalibrator | None:
    try:
        calibrator = ExpressionCalibrator.load(path)
    except (ModelFileError, OSError) as exc:
        _log.error("cannot use the expression model: %s", exc)
        return None
    if not calibrator.trained:
        _log.error("%s holds recorded samples but no trained model; run 'facewire calibrate' again", path)
        return None
    return calibrator


def _open_receiver(host: str, port: int, frames: queue.Queue | None = None) -> OpenSeeFaceReceiver | None:
    try:
        return OpenSeeFaceReceiver(host, port, on_frame=None if frames is None else frames.put)
    except ReceiverError as exc:
        _log.error("%s", exc)
        return None


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# --- monitor -----------------------------------------------------------------------------------


def cmd_monitor(args: argparse.Namespace) -> int:
    try:
        stream, host, port = parse_stream(args.format, args.host, args.port)
    except StreamAddressError as exc:
        _log.error("%s", exc)
        return EXIT_BAD_INPUT
    if args.model is not None and stream != "osf":
        _log.error("--model classifies OpenSeeFace records; it cannot be used with --format %s", stream)
        return EXIT_BAD_INPUT
    if args.server_key is not None and stream != "zmq":
        _log.error("--server-key is for the ZeroMQ stream (--format zmq), not %s", stream)
        return EXIT_BAD_INPUT
    model = None
    if args.model is not None:
        model = _load_model(args.model)
        if model is None:
            return EXIT_BAD_INPUT
    out = sys.stdout
    config = MonitorConfig(host=host, port=port, model=model, once=args.once, duration=args.duration,
                           interval=args.interval, ansi=_is_terminal(out), stream=stream,
                           server_key=None if args.server_key is None else str(args.server_key))
    try:
        return run_monitor(config, out)
    except (ReceiverError, ValueError) as exc:      # ValueError: an unusable --server-key file
        _log.error("%s", exc)
        return EXIT_BAD_INPUT


# --- keys --------------------------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    from .zmq_stream import CurveKeyError, make_keypair
    folder: Path = args.folder
    if folder.exists() and not folder.is_dir():
        _log.error("%s is a file, not a folder; give the folder to write the keys into", folder)
        return EXIT_BAD_INPUT
    existing = [folder / name for name in ("facewire.key", "facewire.key_secret") if (folder / name).exists()]
    if existing and not args.force:
        _log.error("%s already exists; trackers and subscribers may be using it. Use --force to replace the "
                   "pair, or another folder", existing[0])
        return EXIT_BAD_INPUT
    try:
        public, secret = make_keypair(folder)
    except CurveKeyError as exc:
        _log.error("%s", exc)
        return EXIT_BAD_INPUT
    except OSError as exc:
        _log.error("cannot write the keys into %s: %s", folder, exc.strerror or exc)
        return EXIT_BAD_INPUT
    print(f"public key (give it to subscribers): {public}\n"
          f"secret key (keep it on the tracking PC): {secret}\n"
          f"use: facetracker --output \"zmq+tcp://0.0.0.0:5555?curve={secret}\"", flush=True)
    return EXIT_OK


# --- calibrate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationPlan:
    """How to record: which expressions in which order, for how long, and which face."""

    expressions: tuple[str, ...]
    seconds: float = 5.0
    countdown: float = 3.0
    face_id: int | None = None
    wait: float = 30.0


class NoPacketsError(CalibrationError):
    """Nothing arrived from the tracker."""


def _pick_face(frame: list[OpenSeeFaceRecord], face_id: int | None) -> OpenSeeFaceRecord | None:
    if face_id is None:
        return min(frame, key=lambda r: r.id, default=None)
    return next((r for r in frame if r.id == face_id), None)


def _drain(frames: queue.Queue) -> None:
    while True:
        try:
            frames.get_nowait()
        except queue.Empty:
            return


def record_expressions(frames: queue.Queue, calibrator: ExpressionCalibrator, plan: CalibrationPlan,
                       address: tuple[str, int], out: TextIO) -> None:
    """Walk the user through ``plan``, feeding the frames that arrive in ``frames`` to ``calibrator``.

    ``frames`` receives lists of records (one datagram each), as the receiver's ``on_frame`` delivers them.
    """
    terminal = _is_terminal(out)
    host, port = address
    try:
        frames.get(timeout=min(plan.wait, 2.0))
    except queue.Empty:
        print(f"waiting for packets on {host}:{port} ... (start the tracker, e.g. facetracker -c 0 -p {port})",
              file=out, flush=True)
        try:
            frames.get(timeout=max(plan.wait - 2.0, 0.0))
        except queue.Empty:
            raise NoPacketsError(f"no packets arrived on {host}:{port} within {plan.wait:g} s; is the tracker "
                                 f"running and sending to port {port}?") from None
    total = len(plan.expressions)
    print(f"Calibrating {total} expressions, {plan.seconds:g} s each. Hold each expression while it records; "
          "turn your head a little as you do.", file=out, flush=True)
    for index, name in enumerate(plan.expressions, start=1):
        print(f"[{index}/{total}] {name}: make this expression and hold it", file=out, flush=True)
        _countdown(plan.countdown, out)
        _drain(frames)
        seen, kept = _record_one(frames, calibrator, name, plan, out, terminal)
        print(f"  {name}: {seen} frames, {kept} samples", file=out, flush=True)
        if kept == 0:
            print(f"  no usable face arrived while recording {name}", file=out, flush=True)


def _countdown(seconds: float, out: TextIO) -> None:
    if seconds <= 0:
        return
    remaining = seconds
    print("  recording in", end="", file=out, flush=True)
    while remaining > 1e-9:
        print(f" {math.ceil(remaining - 1e-9)}...", end="", file=out, flush=True)
        step = min(1.0, remaining)
        time.sleep(step)
        remaining -= step
    print(" now", file=out, flush=True)


def _record_one(frames: queue.Queue, calibrator: ExpressionCalibrator, name: str, plan: CalibrationPlan,
                out: TextIO, terminal: bool) -> tuple[int, int]:
    started = time.monotonic()
    end = started + plan.seconds
    seen = kept = 0
    last_progress = 0.0
    while (now := time.monotonic()) < end:
        try:
            frame = frames.get(timeout=min(_POLL_SECONDS, end - now))
        except queue.Empty:
            frame = None
        if frame is not None:
            rec = _pick_face(frame, plan.face_id)
            if rec is not None:
                seen += 1
                kept += calibrator.record(name, rec)
        if terminal and now - last_progress >= _PROGRESS_SECONDS:
            last_progress = now
            done = min(1.0, (now - started) / plan.seconds)
            bar = "#" * round(done * 20) + "." * (20 - round(done * 20))
            print(f"\r  recording {name} [{bar}] {now - started:4.1f}/{plan.seconds:g} s  {seen} frames, "
                  f"{kept} samples", end="", file=out, flush=True)
    if terminal:
        print("\r\x1b[K", end="", file=out, flush=True)
    return seen, kept


def cmd_calibrate(args: argparse.Namespace) -> int:
    out = sys.stdout
    if not args.out.parent.is_dir():
        _log.error("the folder of --out %s does not exist; create it first", args.out)
        return EXIT_BAD_INPUT
    plan = CalibrationPlan(expressions=args.expressions, seconds=args.seconds, countdown=args.countdown,
                           face_id=args.face, wait=args.wait)
    calibrator = ExpressionCalibrator(skip=args.skip, min_samples=args.min_samples)
    frames: queue.Queue = queue.Queue()
    receiver = _open_receiver(args.host, args.port, frames)
    if receiver is None:
        return EXIT_BAD_INPUT
    try:
        record_expressions(frames, calibrator, plan, receiver.address, out)
    except NoPacketsError as exc:
        _log.error("%s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ncalibration cancelled; nothing was saved", file=out, flush=True)
        return EXIT_INTERRUPTED
    finally:
        receiver.close()
    print("training ...", file=out, flush=True)
    try:
        stats = calibrator.train()
    except NotEnoughDataError as exc:
        _log.error("%s", exc)
        return EXIT_FAILED
    print(stats.format(), file=out)
    calibrator.save(args.out)
    print(f"saved the expression model to {args.out}", file=out, flush=True)
    return EXIT_OK


# --- expressions -------------------------------------------------------------------------------


class _Announcer:
    """Per face: the expression last announced, and the run of frames agreeing on a new one."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.announced: dict[int, str] = {}
        self.runs: dict[int, tuple[str, int]] = {}

    def update(self, face_id: int, expression: str) -> bool:
        """Whether ``expression`` should be announced for ``face_id`` now."""
        previous, count = self.runs.get(face_id, (expression, 0))
        count = count + 1 if previous == expression else 1
        self.runs[face_id] = (expression, count)
        if count >= self.hold and self.announced.get(face_id) != expression:
            self.announced[face_id] = expression
            return True
        return False


def cmd_expressions(args: argparse.Namespace) -> int:
    out = sys.stdout
    model = _load_model(args.model)
    if model is None:
        return EXIT_BAD_INPUT
    try:
        log_file = open(args.log, "w", newline="") if args.log else None  # noqa: SIM115 - closed in finally
    except OSError as exc:
        _log.error("cannot write the --log file: %s", exc)
        return EXIT_BAD_INPUT
    frames: queue.Queue = queue.Queue()
    receiver = _open_receiver(args.host, args.port, frames)
    if receiver is None:
        if log_file:
            log_file.close()
        return EXIT_BAD_INPUT
    host, port = receiver.address
    names = model.model_expressions
    log = csv.writer(log_file) if log_file else None
    if log:
        log.writerow(["frame", "time", "face", "expression", *(f"p_{name}" for name in names)])
    counts: dict[int, Counter] = {}
    announcer = _Announcer(args.hold)
    started = last_arrival = time.monotonic()
    waiting_shown = False
    frame_number = 0
    print(f"detecting {', '.join(names)} on {host}:{port} (Ctrl-C quits)", file=out, flush=True)
    try:
        while args.duration is None or time.monotonic() - started < args.duration:
            try:
                frame = frames.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                idle = time.monotonic() - last_arrival
                if args.until_idle is not None and frame_number and idle >= args.until_idle:
                    break
                if not waiting_shown and not frame_number and idle > 2.0:
                    print(f"waiting for packets on {host}:{port} ...", file=out, flush=True)
                    waiting_shown = True
                continue
            last_arrival = time.monotonic()
            for rec in frame:
                try:
                    prediction = model.predict(rec)
                except CalibrationError as exc:
                    _log.debug("face %d not classified: %s", rec.id, exc)
                    continue
                counts.setdefault(rec.id, Counter())[prediction.expression] += 1
                if log:
                    log.writerow([frame_number, f"{rec.time:.6f}", rec.id, prediction.expression,
                                  *(f"{prediction.probabilities[n]:.4f}" for n in names)])
                if announcer.update(rec.id, prediction.expression):
                    print(f"{time.monotonic() - started:8.2f} s  face {rec.id}: {prediction.expression} "
                          f"{prediction.probability * 100:.0f}%", file=out, flush=True)
            frame_number += 1
    except KeyboardInterrupt:
        pass
    finally:
        receiver.close()
        if log_file:
            log_file.close()
    _print_summary(counts, out)
    return EXIT_OK if counts else EXIT_FAILED


def _print_summary(counts: dict[int, Counter], out: TextIO) -> None:
    if not counts:
        print("no face was classified", file=out, flush=True)
        return
    for face_id in sorted(counts):
        total = sum(counts[face_id].values())
        shares = ", ".join(f"{name} {n / total * 100:.1f}%" for name, n in counts[face_id].most_common())
        print(f"face {face_id}: {total} frames: {shares}", file=out, flush=True)


# --- standalone entry point --------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m facewire.client.commands COMMAND ...`` (the same commands as ``facewire COMMAND``)."""
    parser = argparse.ArgumentParser(prog="python -m facewire.client.commands",
                                     description="Facewire client tools (no tracker needed).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_client_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
