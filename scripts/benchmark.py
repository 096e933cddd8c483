#!/usr/bin/env python3
"""Speed of the tracker on a video: per-stage milliseconds and end-to-end frames per second, one thread.

The video is decoded into memory first, so decoding never counts. When ``mediapipe==0.10.14`` is
installed in the same environment, MediaPipe's FaceMesh (refine_landmarks=True, i.e. the same
attention mesh with irises) runs on the same frames, alternating frame by frame with ours so both
see the same machine load, and the ratio is printed.

Usage: ``python scripts/benchmark.py VIDEO [--frames N] [--repeat R] [--no-pin]`` (the run is pinned to
one core unless ``--no-pin``).
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from facewire.client.protocol import encode_datagram  # noqa: E402
from facewire.tracker.benchmark import format_stage_table, read_frames, time_end_to_end, time_stages  # noqa: E402
from facewire.tracker.packets import RecordBuilder  # noqa: E402
from facewire.tracker.tracking import FaceTracker, TrackingConfig  # noqa: E402

cv2.setNumThreads(1)


def mediapipe_face_mesh():
    """MediaPipe's legacy FaceMesh solution with irises, or None when mediapipe is not installed."""
    try:
        import mediapipe as mp
    except ImportError:
        return None
    return mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                           min_detection_confidence=0.5, min_tracking_confidence=0.5)


def alternate_with_mediapipe(frames: list[np.ndarray], mesh, repeat: int) -> dict[str, np.ndarray | int]:
    """Per-frame wall and CPU milliseconds of ours and MediaPipe's, interleaved frame by frame.

    CPU time (all threads of the process) shows whether a side uses more than one core: MediaPipe's
    graph may run its inference on several threads, ours runs on one.
    """
    tracker, builder = FaceTracker(TrackingConfig()), RecordBuilder()
    ours, theirs, ours_cpu, theirs_cpu, found = [], [], [], [], 0
    for _ in range(repeat):
        tracker.reset()
        for image in frames:
            t, c = time.perf_counter(), time.process_time()
            h, w = image.shape[:2]
            faces = tracker.update(image)
            if faces:
                encode_datagram([builder.build(f, (w, h), time.time(), time.monotonic()) for f in faces])
            ours.append((time.perf_counter() - t) * 1000)
            ours_cpu.append((time.process_time() - c) * 1000)
            t, c = time.perf_counter(), time.process_time()
            result = mesh.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
            theirs.append((time.perf_counter() - t) * 1000)
            theirs_cpu.append((time.process_time() - c) * 1000)
            found += result.multi_face_landmarks is not None
    return {"ours": np.array(ours), "theirs": np.array(theirs), "ours_cpu": np.array(ours_cpu),
            "theirs_cpu": np.array(theirs_cpu), "found": found}


PLAIN_MESH_TFLITE = Path(__file__).resolve().parents[1] / ".cache" / "mediapipe" / "face_landmark.tflite"


def runtime_comparison(frames: list[np.ndarray], repeat: int = 300) -> tuple[float, float] | None:
    """Median ms of the plain 468-point mesh in onnxruntime (our conversion) and in TFLite with
    XNNPACK (the original), alternating on the same real crop; None without ai-edge-litert or the
    extracted .tflite (scripts/convert_models.py leaves it in .cache/mediapipe)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    if not PLAIN_MESH_TFLITE.exists():
        return None
    from facewire.tracker.landmarks import Landmarker, roi_from_landmarks
    tracker = FaceTracker(TrackingConfig(mesh="mesh"))
    faces = next((f for f in map(tracker.update, frames[:30]) if f), None)
    if not faces:
        return None
    landmarker = Landmarker("mesh")
    crop = Landmarker.preprocess(frames[29], roi_from_landmarks(faces[0].mesh.points))
    interpreter = Interpreter(model_path=str(PLAIN_MESH_TFLITE), num_threads=1)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    ours, theirs = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        landmarker.infer(crop)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        interpreter.set_tensor(index, crop)
        interpreter.invoke()
        theirs.append(time.perf_counter() - t)
    return float(np.median(ours)) * 1000, float(np.median(theirs)) * 1000


def pin_to_one_core() -> int | None:
    """Keep the whole run on one core (Linux), so the scheduler cannot move it between frames.

    A move lands the next frame on cold caches; pinning makes runs repeatable and is fair to both
    sides of the MediaPipe comparison, which then share that core too. Returns the core, or None.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = max(os.sched_getaffinity(0))   # the last core: the first usually takes more interrupts
    os.sched_setaffinity(0, {core})
    return core


def processor_description() -> str:
    """The processor and the vector extensions onnxruntime can use: figures only mean something with it.

    Our machines differ (some have AVX-512, some only AVX2), and absolute times differ with them;
    the ratio to MediaPipe measured in the same run is what carries across machines.
    """
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2" if flags else "unknown"
    return f"{name}, {vector}, {os.cpu_count()} logical cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--frames", type=int, default=None, help="use only the first N frames")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the frames for the end-to-end figures")
    parser.add_argument("--no-pin", action="store_true", help="let the scheduler move the run between cores")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not args.video.is_file():
        print(f"error: {args.video} is not a file", file=sys.stderr)
        return 2
    frames = read_frames(str(args.video), args.frames)
    if not frames:
        print(f"error: no frames could be decoded from {args.video}", file=sys.stderr)
        return 2
    h, w = frames[0].shape[:2]
    core = None if args.no_pin else pin_to_one_core()
    where = f"pinned to core {core}" if core is not None else "not pinned to a core"
    print(f"processor: {processor_description()}")
    print(f"{args.video.name}: {len(frames)} frames of {w}x{h}, decoded into memory; one thread, {where}\n")
    stages = time_stages(frames)
    end_to_end = time_end_to_end(frames, repeat=args.repeat)
    print(format_stage_table(stages, end_to_end))
    both = runtime_comparison(frames)
    if both is not None:
        print(f"\nplain 468-point mesh alone, same crop: onnxruntime (our conversion) {both[0]:.3f} ms, "
              f"TFLite XNNPACK (the original) {both[1]:.3f} ms")
    mesh = mediapipe_face_mesh()
    if mesh is None:
        print("\nmediapipe is not installed here: no comparison (pip install mediapipe==0.10.14)")
        return 0
    r = alternate_with_mediapipe(frames, mesh, args.repeat)
    ours, theirs = r["ours"], r["theirs"]
    print(f"\nalternating frame by frame with MediaPipe FaceMesh (refine_landmarks=True), {args.repeat} passes:\n"
          f"  facewire : mean {ours.mean():.3f} ms, median {np.median(ours):.3f} ms = {1000 / ours.mean():.0f} fps; "
          f"CPU {r['ours_cpu'].mean():.3f} ms/frame\n"
          f"  mediapipe: mean {theirs.mean():.3f} ms, median {np.median(theirs):.3f} ms = {1000 / theirs.mean():.0f} fps; "
          f"CPU {r['theirs_cpu'].mean():.3f} ms/frame (face found in {r['found']} of {len(theirs)} frames)\n"
          f"  ratio    : facewire is {theirs.mean() / ours.mean():.2f}x MediaPipe's speed (wall clock), "
          f"{r['theirs_cpu'].mean() / r['ours_cpu'].mean():.2f}x per CPU time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
