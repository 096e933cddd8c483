"""Speed measurement: per-stage milliseconds and end-to-end frames per second on pre-decoded frames.

Used by ``scripts/benchmark.py`` and ``facetracker --benchmark 1``. Frames are decoded before timing
starts, so video decoding never counts; everything runs on the calling thread.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from facewire.client.protocol import encode_datagram

from .capture import CaptureConfig, open_source
from .detection import FaceDetector
from .ibug68 import to_ibug68
from .landmarks import Landmarker, roi_from_landmarks
from .packets import RecordBuilder, RecordOptions
from .pose import PoseEstimator
from .tracking import FaceTracker, TrackingConfig


def read_frames(source: str, limit: int | None = None) -> list[np.ndarray]:
    frames = []
    with open_source(CaptureConfig(source=source)) as src:
        for frame in src:
            frames.append(frame.image)
            if limit and len(frames) >= limit:
                break
    return frames


@dataclass(frozen=True)
class StageTiming:
    name: str
    times_ms: np.ndarray

    @property
    def median(self) -> float:
        return float(np.median(self.times_ms))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.times_ms, 90))


def _timed(fn: Callable, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1000


def time_stages(frames: list[np.ndarray], tracking: TrackingConfig | None = None) -> list[StageTiming]:
    """Each stage of a tracked frame, timed separately on every frame where a face is tracked."""
    tracking = tracking or TrackingConfig()
    detector = FaceDetector(tracking.detector, tracking.detection_threshold)
    landmarker = Landmarker(tracking.mesh)
    pose_estimator = PoseEstimator()
    names = ("detector (when it runs)", "crop + colour", "mesh model", "mesh to image points", "68-point view",
             "head pose (ours, analysis only)", "OpenSeeFace record", "encode datagram")
    times: dict[str, list[float]] = {n: [] for n in names}
    tracker = FaceTracker(tracking, detector, landmarker)
    builder = RecordBuilder()
    for image in frames:
        faces = tracker.update(image)
        if not faces:
            continue
        h, w = image.shape[:2]
        _, ms = _timed(detector.detect, image)
        times[names[0]].append(ms)
        roi = roi_from_landmarks(faces[0].mesh.points)
        tensor, ms = _timed(landmarker.prepare, image, roi)
        times[names[1]].append(ms)
        outputs, ms = _timed(landmarker.infer, tensor)
        times[names[2]].append(ms)
        t = time.perf_counter()
        points = roi.points_to_image(landmarker.assemble(outputs), 192)
        times[names[3]].append((time.perf_counter() - t) * 1000)
        _, ms = _timed(to_ibug68, points)
        times[names[4]].append(ms)
        _, ms = _timed(pose_estimator.estimate, points, (w, h))
        times[names[5]].append(ms)
        # The record: 68-point view again, OpenSeeFace's pose fit, 3D points, features, record fields.
        record, ms = _timed(builder.build, faces[0], (w, h), time.time(), time.monotonic())
        times[names[6]].append(ms)
        _, ms = _timed(encode_datagram, [record])
        times[names[7]].append(ms)
    return [StageTiming(n, np.array(v)) for n, v in times.items() if v]


def time_end_to_end(frames: list[np.ndarray], tracking: TrackingConfig | None = None,
                    records: RecordOptions | None = None, repeat: int = 1) -> np.ndarray:
    """Milliseconds per frame of the whole daemon step: track, build records, encode (no capture, no send)."""
    tracker = FaceTracker(tracking or TrackingConfig())
    builder = RecordBuilder(records)
    out = []
    for _ in range(repeat):
        tracker.reset()
        for image in frames:
            t = time.perf_counter()
            h, w = image.shape[:2]
            faces = tracker.update(image)
            if faces:
                encode_datagram([builder.build(f, (w, h), time.time(), time.monotonic()) for f in faces])
            out.append((time.perf_counter() - t) * 1000)
    return np.array(out)


def format_stage_table(stages: list[StageTiming], end_to_end_ms: np.ndarray) -> str:
    lines = [f"{'stage':<32} {'median ms':>10} {'p90 ms':>8}"]
    tracked_total = 0.0
    for s in stages:
        lines.append(f"{s.name:<32} {s.median:10.3f} {s.p90:8.3f}")
        if not s.name.startswith(("detector", "head pose", "68-point")):
            tracked_total += s.median
    lines.append(f"{'sum of tracked-frame stages':<32} {tracked_total:10.3f}")
    lines.append(f"end to end: median {np.median(end_to_end_ms):.3f} ms/frame, mean {end_to_end_ms.mean():.3f} ms "
                 f"= {1000 / end_to_end_ms.mean():.0f} frames per second on one thread")
    return "\n".join(lines)


def run_stage_benchmark(config) -> str:
    """``facetracker --benchmark 1``: time the stages on the first frames of the configured input."""
    if config.capture.is_raw:
        raise ValueError("--benchmark needs a video file, image folder or camera, not raw frames on stdin")
    frames = read_frames(config.capture.source, limit=config.max_frames or 200)
    if not frames:
        raise ValueError(f"no frames could be read from {config.capture.source}")
    stages = time_stages(frames, config.tracking)
    return format_stage_table(stages, time_end_to_end(frames, config.tracking, config.records))
