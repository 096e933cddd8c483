"""How fast does ``facewire dataset`` go, and what would a million videos cost?

Runs the dataset job over the given videos (default: every file in ../shared/data/videos) on a local
process pool and on a local Dask cluster (``distributed.LocalCluster`` on loopback, one thread per
worker process) with 1 and 2 workers, each time from scratch into a temporary folder, and prints
videos per minute and frames per second. Then it times one frame's labelling in this process (decode,
tracking, 68 points, pose, gaze, crop, without and with the uncertainty), which is what sizes a cluster:
worker-hours = videos x frames per video x seconds per frame / 3600.

    python scripts/benchmark_dataset.py [VIDEO ...] [--max-frames 300] [--workers 1 2] [--no-dask]
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from facewire.tracker.offline.dataset import DatasetOptions, label_video
from facewire.tracker.offline.runner import run_dask, run_local

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = REPO.parent / "shared" / "data" / "videos"


def processor() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def frame_cost(video: Path, options: DatasetOptions, frames: int) -> tuple[float, float]:
    """(wall, CPU) milliseconds per frame of ``label_video`` in this process, model loading excluded.

    On a machine shared with other jobs the wall time grows with their load; the process's CPU time
    much less, so it is the better figure for sizing a cluster of dedicated cores.
    """
    with tempfile.TemporaryDirectory() as out:
        label_video(video, out, DatasetOptions(max_frames=5, uncertainty=options.uncertainty, crop=options.crop))
        start, cpu = time.perf_counter(), time.process_time()
        result = label_video(video, out, DatasetOptions(**{**options.__dict__, "max_frames": frames, "overwrite": True}))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        return wall * 1000 / result.frames_read, cpu * 1000 / result.frames_read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--max-frames", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--crop", action="store_true", help="store 256x256 face crops (default: whole frames)")
    args = parser.parse_args(argv)
    videos = args.videos or sorted(p for p in DEFAULT_VIDEOS.iterdir() if p.suffix in (".mp4", ".avi"))
    options = DatasetOptions(max_frames=args.max_frames, crop=args.crop)
    print(f"processor: {processor()}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.1f} "
          f"(shared machine); python {platform.python_version()}, opencv {cv2.__version__}")
    print(f"{len(videos)} videos, at most {args.max_frames} frames each, crop={args.crop}\n")
    print(f"{'engine':<8} {'workers':>7} {'videos':>6} {'frames':>7} {'kept':>6} {'seconds':>8} {'frames/s':>9} "
          f"{'videos/min':>10}")
    backends = [("local", None)] + ([] if args.no_dask else [("dask", "dask")])
    for name, _ in backends:
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as out:
                if name == "local":
                    report = run_local(videos, Path(out), options, workers)
                else:
                    from distributed import Client, LocalCluster
                    with LocalCluster(n_workers=workers, processes=True, threads_per_worker=1, host="127.0.0.1",
                                      dashboard_address=None) as cluster, Client(cluster) as client:
                        client.run(lambda: __import__("facewire.tracker.offline.dataset"))   # imports, not timed
                        report = run_dask(videos, Path(out), options, client)
            kept = sum(r.kept for r in report.results)
            print(f"{name:<8} {workers:>7} {len(report.results):>6} {report.frames:>7} {kept:>6} "
                  f"{report.elapsed:>8.1f} {report.frames / report.elapsed:>9.1f} "
                  f"{60 * len(report.results) / report.elapsed:>10.2f}"
                  + (f"  ({len(report.failures)} failed)" if report.failures else ""), flush=True)

    longest = max(videos, key=lambda v: cv2.VideoCapture(str(v)).get(cv2.CAP_PROP_FRAME_COUNT))
    plain_wall, plain = frame_cost(longest, options, args.max_frames)
    u_wall, with_u = frame_cost(longest, DatasetOptions(max_frames=args.max_frames, crop=args.crop, uncertainty=True),
                                min(args.max_frames, 100))
    print(f"\none frame ({longest.name}, one process, models loaded): {plain:.2f} ms CPU ({plain_wall:.2f} ms wall); "
          f"with --uncertainty {with_u:.2f} ms CPU ({u_wall:.2f} ms wall)\n"
          f"load average now {os.getloadavg()[0]:.1f}; sizing below from the CPU time")
    for frames in (300, 1800):
        hours = 1e6 * frames * plain / 1000 / 3600
        print(f"a million videos of {frames} frames: {hours:,.0f} worker-hours "
              f"({hours / 24 / 100:,.1f} days on 100 single-core workers); with --uncertainty "
              f"{hours * with_u / plain:,.0f} worker-hours")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
