"""Does the per-point uncertainty mean something? Compare it with the actual error on annotated photos.

For every photo with a ``.pts`` annotation (iBUG 68, zero-based) the face is analysed as
``facewire analyze`` does, its 68 points' uncertainty (spread over jittered crops) is measured, and the
actual per-point error against the annotation is taken. Both are divided by the annotation's outer-eye
-corner distance (the NME normaliser) so that faces of every size pool together. Printed:

* Spearman rank correlation of uncertainty and error over all points of all photos, and per photo
  (across its 68 points: median and how many photos correlate positively);
* per photo, mean uncertainty against NME (rank correlation), and how well the mean uncertainty flags
  the failures (NME > 10%): the area under the ROC curve and the failures caught by the top-k ranking;
* the cost of the uncertainty per face (median milliseconds).

    python scripts/measure_uncertainty.py ../shared/data/images [--crops 8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from facewire.tracker.analysis import FaceAnalyzer, load_image
from facewire.tracker.evaluation import FAILURE_NME, annotated_images, match_face
from facewire.tracker.ibug68 import OUTER_EYE_CORNERS, read_pts
from facewire.tracker.landmarks import roi_from_landmarks
from facewire.tracker.offline.uncertainty import JitterConfig, point_uncertainty, ranks, spearman


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    r = ranks(scores)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def measure(folder: Path, crops: int = 8) -> dict:
    analyzer = FaceAnalyzer()
    config = JitterConfig(crops=crops)
    rows = []
    for image_path, pts_path in annotated_images(folder):
        truth = read_pts(pts_path)
        image = load_image(image_path)
        face = match_face(analyzer.analyze(image), truth)
        if face is None:
            rows.append({"image": image_path.name, "found": False})
            continue
        start = time.perf_counter()
        u = point_uncertainty(image, roi_from_landmarks(face.landmarks), analyzer.landmarker, config)
        ms = (time.perf_counter() - start) * 1000
        norm = float(np.linalg.norm(truth[OUTER_EYE_CORNERS[0]] - truth[OUTER_EYE_CORNERS[1]]))
        error = np.linalg.norm(face.ibug68 - truth, axis=1) / norm
        rows.append({"image": image_path.name, "found": True, "nme": float(error.mean()), "ms": ms,
                     "uncertainty": (u.ibug68 / norm).tolist(), "error": error.tolist(),
                     "mean_uncertainty": float((u.ibug68 / norm).mean()),
                     "spearman": spearman(u.ibug68, error)})
    found = [r for r in rows if r["found"]]
    unc = np.concatenate([r["uncertainty"] for r in found])
    err = np.concatenate([r["error"] for r in found])
    per_image = np.array([r["spearman"] for r in found])
    mean_u = np.array([r["mean_uncertainty"] for r in found])
    nmes = np.array([r["nme"] for r in found])
    failed = nmes > FAILURE_NME
    order = np.argsort(-mean_u)
    k = int(failed.sum())
    return {
        "images": len(rows), "found": len(found), "no_face": len(rows) - len(found), "crops": crops,
        "spearman_all_points": spearman(unc, err),
        "spearman_per_image_median": float(np.median(per_image)),
        "per_image_positive": int((per_image > 0).sum()),
        "spearman_image_mean_vs_nme": spearman(mean_u, nmes),
        "failures": k, "failure_auc": roc_auc(mean_u, failed),
        "failures_in_top_k": int(failed[order[:k]].sum()),
        "failures_in_top_2k": int(failed[order[:2 * k]].sum()),
        "failure_images": [r["image"] for r, f in zip(found, failed) if f],
        "top_uncertain_images": [found[i]["image"] for i in order[:2 * k]],
        "ms_per_face_median": float(np.median([r["ms"] for r in found])),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--crops", type=int, default=JitterConfig().crops)
    parser.add_argument("--json", type=Path, help="also write every per-photo figure here")
    args = parser.parse_args(argv)
    m = measure(args.folder, args.crops)
    print(f"{m['images']} photos, face found in {m['found']} ({m['crops']} jittered crops per face)")
    print(f"Spearman uncertainty vs error, all {m['found'] * 68} points: {m['spearman_all_points']:.3f}")
    print(f"Spearman per photo over its 68 points: median {m['spearman_per_image_median']:.3f}, "
          f"positive in {m['per_image_positive']} of {m['found']}")
    print(f"Spearman photo mean uncertainty vs NME: {m['spearman_image_mean_vs_nme']:.3f}")
    print(f"failures (NME > 10%) among found faces: {m['failures']} {m['failure_images']}")
    print(f"mean uncertainty flags them: ROC AUC {m['failure_auc']:.3f}; {m['failures_in_top_k']} of "
          f"{m['failures']} among the {m['failures']} most uncertain photos, {m['failures_in_top_2k']} among "
          f"the {2 * m['failures']} most uncertain")
    print(f"cost: {m['ms_per_face_median']:.1f} ms per face (median)")
    if args.json:
        args.json.write_text(json.dumps(m, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
