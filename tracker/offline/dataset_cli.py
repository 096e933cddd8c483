"""``facewire dataset``: labelled .npz files from videos, on a local process pool or a Dask cluster."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("facewire")

EXIT_BAD_INPUT = 2

DESCRIPTION = """\
Track the face through each video and write OUT/NAME.npz per video: the frames as RGB (colorImages),
box corners, the 68 points in 2D and 3D, head pose (yaw, pitch, roll in degrees) and gaze vectors,
frame numbers and JSON metadata; with --mesh the 478 points, with --uncertainty the per-point spread
in pixels. Frames without a face or with a failed label are dropped and counted. Files appear
atomically; a rerun skips videos whose file exists (--overwrite to redo them). Videos run in
parallel on --workers local processes, or as tasks on a Dask cluster with --scheduler (the output
folder must then be reachable by every worker). A failed video is retried once and never stops the
others. Exit code 0 when every video has its file, 1 when some failed, 2 for bad arguments."""


def add_dataset_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="labelled .npz training files from face videos (local pool or Dask)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video files")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the .npz files (created)")
    p.add_argument("--crop", action="store_true",
                   help="store a square crop around the face (1.5x its box) instead of the whole frame")
    p.add_argument("--size", type=int, metavar="PIXELS",
                   help="side of the stored crop (default 256 with --crop); without --crop, the frame's "
                        "longer side (default: frames kept at their size)")
    p.add_argument("--max-frames", type=int, metavar="N", help="read at most the first N frames of each video")
    p.add_argument("--mesh", action="store_true", help="also store the 478-point mesh (landmarks478)")
    p.add_argument("--uncertainty", action="store_true",
                   help="also store per-point uncertainty in pixels (uncertainty68, uncertainty478; "
                        "8 extra mesh runs per frame)")
    p.add_argument("--compress", action="store_true",
                   help="deflate the arrays (np.savez_compressed): smaller files, slower to write and read")
    p.add_argument("--overwrite", action="store_true", help="redo videos whose file exists")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="local worker processes (default 1)")
    p.add_argument("--scheduler", metavar="tcp://HOST:8786",
                   help="run on this Dask scheduler instead of locally (needs the dask extra)")
    p.set_defaults(func=cmd_dataset)


def _print_progress(p) -> None:
    from .dataset import VideoResult
    last = p.last
    if last is None:
        what, name = "running", ""
    elif isinstance(last, VideoResult):
        what = "exists, skipped" if last.skipped else (
            f"{last.kept} frames kept, {sum(last.dropped.values())} dropped")
        name = Path(last.video).name
    else:
        what, name = "FAILED", Path(last.video).name
    print(f"[{p.done}/{p.total}] {name + ': ' if name else ''}{what} | {p.frames} frames, {p.frames_per_second:.1f} frames/s, "
          f"{p.videos_per_minute:.2f} videos/min over all workers", file=sys.stderr, flush=True)


def cmd_dataset(args: argparse.Namespace) -> int:
    from .dataset import DatasetError, DatasetOptions, check_output_folder, output_path
    from .runner import SchedulerError, connect, run_dask, run_local

    try:
        options = DatasetOptions(crop=args.crop, size=args.size, max_frames=args.max_frames, mesh=args.mesh,
                                 uncertainty=args.uncertainty, overwrite=args.overwrite,
                                 compress=args.compress)
        if args.workers < 1:
            raise ValueError(f"--workers must be at least 1, not {args.workers}")
        names = [output_path(v, args.out) for v in args.videos]
        if len(set(names)) != len(names):
            raise ValueError("two videos share a file name (the output is named after it); rename one")
        check_output_folder(args.out)
        client = connect(args.scheduler) if args.scheduler else None
    except (ValueError, DatasetError, SchedulerError) as exc:
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    if client is not None:
        with client:
            report = run_dask(args.videos, args.out, options, client, _print_progress)
    else:
        report = run_local(args.videos, args.out, options, args.workers, _print_progress)

    made = [r for r in report.results if not r.skipped]
    kept = sum(r.kept for r in made)
    no_face = sum(r.dropped.get("no_face", 0) for r in made)
    failed_labels = sum(r.dropped.get("label_failed", 0) for r in made)
    minutes = report.elapsed / 60
    print(f"\n{len(made)} file(s) written, {len(report.results) - len(made)} skipped (existed), "
          f"{len(report.failures)} video(s) failed, {report.retries} retried\n"
          f"frames: {report.frames} read, {kept} kept, {no_face} without a face, {failed_labels} failed labels\n"
          f"time: {report.elapsed:.1f} s, {report.frames / report.elapsed if report.elapsed else 0:.1f} frames/s, "
          f"{len(made) / minutes if minutes else 0:.2f} videos/min")
    for f in report.failures:
        print(f"FAILED {f.video}: {f.error}")
    return 1 if report.failures else 0
