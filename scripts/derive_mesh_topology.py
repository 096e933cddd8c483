#!/usr/bin/env python3
"""Derive which mesh vertices the attention model's lip, eye and iris heads refine.

The attention mesh outputs the 468-vertex mesh plus separate point sets for the lips (80), each eye
region (71) and each iris (5). Its graph does not say which mesh vertex each refined point replaces
(MediaPipe keeps those index lists in compiled code), but the answer is in the model's behaviour:
each refined point lands within a fraction of a pixel of the mesh vertex it refines. So we run the
model on many real face crops, and assign each refined point the mesh vertex whose mean distance to
it is smallest. The assignment must be one-to-one and clear-cut (the runner-up vertex at least twice
as far); the script fails otherwise.

For the irises, which have no mesh vertex, we also record the eye-contour vertices nearest the iris
centre: the tracker gives an iris the mean depth (z) of those vertices.

Writes ``models/mesh_topology.npz``. Needs ``../shared/data`` (photos and videos of real faces).
Usage: ``python scripts/derive_mesh_topology.py [--data ../shared/data]``
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from facewire.tracker.detection import FaceDetector
from facewire.tracker.landmarks import Landmarker, roi_from_detection, roi_from_landmarks
from facewire.tracker.runtime import ModelRunner

log = logging.getLogger("derive_mesh_topology")
REPO = Path(__file__).resolve().parents[1]
HEADS = ("lips", "left_eye", "right_eye", "left_iris", "right_iris")
IRIS_DEPTH_VERTICES = 16
# Facts from MediaPipe's published lip refinement list (first entries, lower outer lip from the
# corner): used only as a cross-check of what the data says.
KNOWN_LIPS_PREFIX = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)


def face_crops(data: Path, per_video: int = 25) -> list[tuple[np.ndarray, object]]:
    """(image, roi) pairs: every annotated photo and frames spread through each video."""
    detector = FaceDetector("auto")
    mesh = Landmarker("mesh")
    images = [cv2.imread(str(p)) for p in sorted((data / "images").glob("*.jpg")) + sorted(
        (data / "images").glob("*.png"))]
    for video in sorted((data / "videos").glob("*.mp4")):
        cap = cv2.VideoCapture(str(video))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for k in np.linspace(0, total - 1, per_video).astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(k))
            ok, frame = cap.read()
            if ok:
                images.append(frame)
        cap.release()
    crops = []
    for image in images:
        if image is None:
            continue
        for det in detector.detect(image):
            first = mesh(image, roi_from_detection(det))
            if first.presence > 0.9:
                crops.append((image, roi_from_landmarks(first.points)))
    return crops


def derive(data: Path) -> dict[str, np.ndarray]:
    runner = ModelRunner.load("face_landmark_with_attention")
    crops = face_crops(data)
    if len(crops) < 20:
        raise SystemExit(f"only {len(crops)} usable faces found under {data}; need at least 20")
    log.info("running the attention mesh on %d face crops", len(crops))
    sums = {h: None for h in HEADS}
    for image, roi in crops:
        outputs = runner(Landmarker.preprocess(image, roi))
        mesh = outputs[0].reshape(468, 3)[:, :2]
        # Scale-free: distances in units of the crop's eye-corner distance.
        unit = np.linalg.norm(mesh[263] - mesh[33])
        for head, out in zip(HEADS, outputs[1:6]):
            pts = out.reshape(-1, 2)
            d2 = (np.linalg.norm(pts[:, None, :] - mesh[None, :, :], axis=2) / unit) ** 2
            sums[head] = d2 if sums[head] is None else sums[head] + d2
    result = {}
    for head in ("lips", "left_eye", "right_eye"):
        mean = sums[head] / len(crops)
        rows, best = linear_sum_assignment(mean)
        rms = np.sqrt(mean[rows, best])
        log.info("%s: %d points, rms distance to their vertex: median %.4f, worst %.4f eye widths", head,
                 len(best), np.median(rms), rms.max())
        result[head] = best.astype(np.int16)
    if tuple(result["lips"][:len(KNOWN_LIPS_PREFIX)].tolist()) != KNOWN_LIPS_PREFIX:
        raise SystemExit(f"lip mapping {result['lips'][:11].tolist()} disagrees with the published list")
    # Which iris head belongs to which eye: the one nearer the eye head's vertices.
    for iris, eye in (("left_iris", "left_eye"), ("right_iris", "right_eye")):
        mean = sums[iris] / len(crops)
        centre_to_eye = np.sqrt(mean[0, result[eye]])
        result[f"{iris}_depth"] = result[eye][np.argsort(centre_to_eye)[:IRIS_DEPTH_VERTICES]].astype(np.int16)
    # The subject's right eye has vertex 33 (image left); record which head that is.
    right_has_33 = 33 in result["right_eye"].tolist()
    result["right_eye_is_subject_right"] = np.array(right_has_33)
    log.info("output_right_eye covers vertex 33 (subject's right eye): %s", right_has_33)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "models" / "mesh_topology.npz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not (args.data / "images").is_dir():
        log.error("no face data at %s (expected images/ and videos/ inside)", args.data)
        return 2
    topology = derive(args.data)
    np.savez(args.out, **topology)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
