#!/usr/bin/env python3
"""What the Face Landmarker models cost per face: blendshapes, and FaceMesh V2 against the attention mesh.

Faces are tracked on real photos first (attention mesh, points in image pixels); then each stage runs
on them in turns, so load from other processes touches every stage alike. Prints the median and the
best of the per-run means, in milliseconds, on one onnxruntime thread pinned to one core (``--no-pin``
to let it move). With ``ai-edge-litert`` (the ``convert`` extra) and the extracted ``.tflite`` files in
``.cache/mediapipe`` it also times the original blendshape model in TFLite's XNNPACK on the same inputs.

Usage: ``python scripts/benchmark_blendshapes.py ../shared/data/images [--runs 30] [--no-pin]``
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TFLITE = REPO / ".cache" / "mediapipe" / "face_landmarker" / "face_blendshapes.tflite"

log = logging.getLogger("benchmark_blendshapes")


def tracked_faces(folder: Path, limit: int):
    """(image, mesh result) for the first face of up to ``limit`` photos in ``folder``."""
    import cv2

    from facewire.tracker.detection import FaceDetector
    from facewire.tracker.landmarks import Landmarker, roi_from_detection, roi_from_landmarks

    detector, attention = FaceDetector("auto"), Landmarker("attention")
    faces = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:limit]:
        image = cv2.imread(str(path))
        found = detector.detect(image)
        if found:
            first = attention(image, roi_from_detection(found[0]))
            faces.append((image, attention(image, roi_from_landmarks(first.points))))
    return faces


def stages(faces):
    """name -> function running that stage once on every face."""
    from facewire.tracker.blendshapes import BlendshapeModel, model_input
    from facewire.tracker.landmarks import Landmarker

    blendshapes, attention, v2 = BlendshapeModel(), Landmarker("attention"), Landmarker("v2")
    points = [mesh.points for _, mesh in faces]
    result = {
        "blendshapes (52 ARKit scores from 478 points)": lambda: [blendshapes(p) for p in points],
        "attention mesh (192x192 crop, model + points)": lambda: [attention(i, m.roi) for i, m in faces],
        "FaceMesh V2 (256x256 crop, model + points)": lambda: [v2(i, m.roi) for i, m in faces],
    }
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        log.info("ai-edge-litert not installed: no TFLite comparison")
        return result
    if not TFLITE.exists():
        log.info("%s missing (run scripts/convert_models.py): no TFLite comparison", TFLITE)
        return result
    interpreter = Interpreter(model_path=str(TFLITE), num_threads=1)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    inputs = [model_input(p) for p in points]

    def tflite():
        for x in inputs:
            interpreter.set_tensor(index, x)
            interpreter.invoke()
    result["blendshape model in TFLite XNNPACK (model only)"] = tflite
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, help="folder of face photos (.jpg/.png)")
    parser.add_argument("--runs", type=int, default=30, help="runs over all faces per stage (30)")
    parser.add_argument("--faces", type=int, default=12, help="photos to take faces from (12)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one core")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.images.is_dir():
        print(f"error: {args.images} is not a folder of photos", file=sys.stderr)
        return 2
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    faces = tracked_faces(args.images, args.faces)
    if not faces:
        print(f"error: no face found in {args.images}", file=sys.stderr)
        return 2
    timed = stages(faces)
    per_face: dict[str, list[float]] = {name: [] for name in timed}
    for name, run in timed.items():     # warm-up
        run()
    for _ in range(args.runs):
        for name, run in timed.items():
            start = time.perf_counter()
            run()
            per_face[name].append((time.perf_counter() - start) * 1e3 / len(faces))
    print(f"{len(faces)} faces, {args.runs} runs each, one thread{'' if args.no_pin else ', pinned to one core'}")
    print(f"{'stage':<52} {'median ms':>10} {'best ms':>9}")
    for name, values in per_face.items():
        print(f"{name:<52} {np.median(values):>10.3f} {min(values):>9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
