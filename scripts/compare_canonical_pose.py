#!/usr/bin/env python3
"""Head pose on AFLW2000 photos: our reference face against MediaPipe's canonical face, same alignment.

Issue 9 asks whether MediaPipe's canonical face (``models/canonical_face.npz``) with its 33 weighted
Procrustes landmarks gives a better head pose than our own reference face. This script fits each in
our weak-perspective similarity alignment (``PoseEstimator``), unweighted on our 64 rigid vertices or
on the 33 landmarks, and weighted with MediaPipe's weights, and scores every variant with the
AFLW frame offset re-estimated leaving each photo out (``aflw_angles_leave_one_out``), since each face
has its own frontal pitch against AFLW's.

Usage: ``python scripts/compare_canonical_pose.py [--images ../shared/data/images]``
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from facewire.tracker.analysis import FaceAnalyzer, load_image
from facewire.tracker.evaluation import match_face, read_pose_truth, read_pts
from facewire.tracker.pose import (PoseEstimator, ReferenceFace, aflw_angles_leave_one_out, aflw_pitch_offsets)
from facewire.tracker.runtime import load_data_file


class WeightedPoseEstimator(PoseEstimator):
    """``PoseEstimator``'s alignment with a weight per pose vertex (weighted Umeyama, weak perspective)."""

    def __init__(self, reference: ReferenceFace, weights: np.ndarray) -> None:
        super().__init__(reference=reference, weak_perspective=True)
        self.weights = np.asarray(weights, np.float64) / float(np.sum(weights))
        self._object_mean = self.weights @ self._object
        self._object_centred = self._object - self._object_mean
        self._object_var = float(self.weights @ (self._object_centred ** 2).sum(axis=1))

    def _align(self, target: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = self.weights @ target
        u, sig, vt = np.linalg.svd(((target - mean) * self.weights[:, None]).T @ self._object_centred)
        d = 1.0 if np.linalg.det(u @ vt) > 0 else -1.0
        rotation = u @ np.diag([1.0, 1.0, d]) @ vt
        depth = k[0, 0] / ((sig[0] + sig[1] + d * sig[2]) / self._object_var)
        ray = np.array([(mean[0] - k[0, 2]) / k[0, 0], (mean[1] - k[1, 2]) / k[0, 0], 1.0])
        return rotation, ray * (depth / np.linalg.norm(ray)) - rotation @ self._object_mean


def canonical_reference(pose_vertices: np.ndarray) -> ReferenceFace:
    """MediaPipe's canonical face in our head frame (mm; x to the subject's left, y down, z to the back)."""
    canon = load_data_file("canonical_face.npz")
    ours = load_data_file("reference_face.npz")
    vertices = canon["vertices"].astype(np.float64) * 10.0 * np.array([1.0, -1.0, -1.0])
    mirrored = vertices * np.array([-1.0, 1.0, 1.0])
    mirror = np.argmin(((vertices[:, None, :] - mirrored[None, :, :]) ** 2).sum(-1), axis=1)
    return ReferenceFace(vertices, ours["normals"][:468].astype(np.float64), mirror,
                         np.asarray(pose_vertices, np.int64), float(ours["ipd_mm"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=Path("../shared/data/images"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    truth_csv = args.images / "headpose_aflw2000.csv"
    if not truth_csv.is_file():
        print(f"error: {truth_csv} not found", file=sys.stderr)
        return 2
    rows = [r for r in read_pose_truth(truth_csv) if r.get("in_range_99deg", "1") != "0"]
    images = [load_image(args.images / r["image"]) for r in rows]
    truth = np.array([(float(r["pitch_deg"]), float(r["yaw_deg"]), float(r["roll_deg"])) for r in rows])
    canon = load_data_file("canonical_face.npz")
    ours = load_data_file("reference_face.npz")
    variants = {
        "ours: reference face, 64 rigid vertices": PoseEstimator(weak_perspective=True),
        "canonical face, our 64 rigid vertices": PoseEstimator(reference=canonical_reference(ours["pose_vertices"]),
                                                               weak_perspective=True),
        "canonical face, its 33 landmarks unweighted": PoseEstimator(reference=canonical_reference(canon["procrustes_ids"]),
                                                                     weak_perspective=True),
        "canonical face, its 33 landmarks weighted": WeightedPoseEstimator(
            canonical_reference(canon["procrustes_ids"]), canon["procrustes_weights"]),
    }
    print(f"{'variant':<46} {'pitch':>6} {'yaw':>6} {'roll':>6} {'mean':>6}  frame offset")
    analyzer = FaceAnalyzer()
    for label, estimator in variants.items():
        analyzer.pose_estimator = estimator
        rotations, kept = [], []
        for i, (image, row) in enumerate(zip(images, rows)):
            face = match_face(analyzer.analyze(image), read_pts((args.images / row["image"]).with_suffix(".pts")))
            if face is not None:
                rotations.append(face.pose.rotation)
                kept.append(i)
        error = np.abs(aflw_angles_leave_one_out(rotations, truth[kept]) - truth[kept]).mean(axis=0)
        offset = float(np.median(aflw_pitch_offsets(rotations, truth[kept])))
        print(f"{label:<46} {error[0]:6.2f} {error[1]:6.2f} {error[2]:6.2f} {error.mean():6.2f}  {offset:+.1f} deg"
              f"  ({len(kept)} faces)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
