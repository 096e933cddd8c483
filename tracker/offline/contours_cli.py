"""``facewire contours ...``: detect, annotate, compute, export, import, render, and annotation exchange."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .contour_json import COORDINATES, KINDS, PREFERENCES
from .contours import DEFAULT_RESAMPLE, SEGMENTS

log = logging.getLogger("facewire")
EXIT_BAD_INPUT = 2


def _errors() -> tuple[type[BaseException], ...]:
    from ..runtime import ModelError
    from .annotations import AnnotationError
    from .contour_json import ContourFormatError
    from .contours import ContourError
    from .render import RenderError
    from .sequence import SequenceError
    return AnnotationError, ContourFormatError, ContourError, RenderError, SequenceError, ModelError


def _run(func):
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except _errors() as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return wrapped


def _segments(text: str) -> tuple[str, ...]:
    if text == "all":
        return SEGMENTS
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in names if s not in SEGMENTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"segments are all or {', '.join(SEGMENTS)} (comma-separated), "
                                         f"not {text!r}")
    return names


def _kinds(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in names if s not in KINDS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"kinds are {', '.join(KINDS)} (comma-separated), not {text!r}")
    return names


def _progress(total: int, label: str):
    from .progress import Progress
    return Progress(total, label)


# ------------------------------------------------------------------------------------------ commands

def cmd_detect(args: argparse.Namespace) -> int:
    from .contour_json import parse_range
    from .detect import DetectOptions, detect_sequence
    from .inner_lips import PRESETS, InnerLipOptions
    from .sequence import Sequence

    start, stop = parse_range(args.range)
    if args.inner_preset:
        inner = PRESETS[args.inner_preset]
    else:
        inner = InnerLipOptions(args.inner_lips, args.inner_points, args.corner_weight, args.arc_weight,
                                args.middle_weight, args.inner_smooth == "on")
    if args.resample < 0:
        from .contours import ContourError
        raise ContourError(f"--resample must be 0 or more, not {args.resample}")
    total = len(Sequence(args.sequence, start, stop))
    bar = _progress(total, "detect")
    project = detect_sequence(args.sequence, args.out, start, stop, DetectOptions(args.resample, inner), bar.update)
    bar.close()
    print(f"{total} frames -> {project.folder('precomputed')} ({bar.fps:.0f} frames/s)")
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .annotations import AnnotationError, check_counts, load_annotations, save_annotations, training_from_segment
    from .contour_json import Project

    project = Project.open(args.project)
    frames = load_annotations(project.annotations_path) if project.annotations_path.exists() else []
    by_key = {f.key: f for f in frames}
    key = (args.frame, args.segment)
    if args.set_enabled is not None or args.set_neutral:
        if key not in by_key:
            raise AnnotationError(f"frame {args.frame} has no {args.segment} training frame to change")
        f = by_key[key]
        if args.set_neutral:
            for k, g in list(by_key.items()):
                if g.segment == args.segment:
                    by_key[k] = replace(g, neutral=k == key)
            f = by_key[key]
        if args.set_enabled is not None:
            by_key[key] = replace(f, enabled=args.set_enabled == "on")
        save_annotations(project.annotations_path, list(by_key.values()))
        print(f"updated {args.frame} ({args.segment}) in {project.annotations_path}")
        return 0
    if key in by_key and not args.overwrite:
        raise AnnotationError(f"frame {args.frame} already has a {args.segment} training frame; pass --overwrite "
                              f"to start it again from the precomputed contours")
    pre = project.load("precomputed", args.frame)
    entry = project.entry(args.frame)
    if pre is None or args.segment not in pre.segments:
        raise AnnotationError(f"frame {args.frame} has no precomputed {args.segment} to start from")
    image = entry.image or project.sequence
    tf = training_from_segment(pre.segments[args.segment], args.frame, str(Path(image).resolve()),
                               None if entry.image else entry.index, pre.image_size, args.mode, args.count,
                               args.threshold, args.neutral, not args.disabled)
    if args.neutral:
        by_key = {k: (replace(g, neutral=False) if g.segment == args.segment else g) for k, g in by_key.items()}
    by_key[key] = tf
    check_counts(list(by_key.values()), tf)
    save_annotations(project.annotations_path, list(by_key.values()))
    counts = {k: (len(v.semantic), sum(len(e) for e in v.extra)) for k, v in tf.loops.items()}
    print(f"training frame {args.frame} ({args.segment}): "
          + ", ".join(f"{k}: {s} semantic + {e} extra points" for k, (s, e) in counts.items())
          + f" -> {project.annotations_path}")
    return 0


def cmd_compute(args: argparse.Namespace) -> int:
    from .compute import compute_project
    from .contour_json import Project, select_frames
    from .personalise import ComputeSettings

    project = Project.open(args.project)
    settings = ComputeSettings(args.initial_smoothness, args.final_smoothness, args.regularisation,
                               args.iterations, args.grayscale == "on", args.slide_semantic == "on")
    bar = _progress(len(select_frames(project, args.range)), "compute")
    n = compute_project(project, args.range, args.segments, settings, args.annotations, bar.update)
    bar.close()
    print(f"{n} computed frames -> {project.folder('computed')}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .contour_json import Project, select_frames
    from .exchange import export_project

    project = Project.open(args.project)
    bar = _progress(len(select_frames(project, args.range)), "export")
    n = export_project(project, args.out, args.frames, args.prefer, args.segments, args.coordinates, args.range,
                       bar.update)
    bar.close()
    print(f"{n} frames -> {args.out}")
    return 0 if n else 1


def cmd_import(args: argparse.Namespace) -> int:
    from .contour_json import Project
    from .exchange import import_files

    project = Project.open(args.project)
    names = import_files(project, args.files, args.as_kind, args.coordinates, args.replace == "frame")
    print(f"imported {len(names)} frames as {args.as_kind} into {project.root}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from .contour_json import Project, select_frames
    from .exchange import training_frames
    from .render import RenderOptions, render, write_picture
    from .sequence import Sequence, read_frame_image

    project = Project.open(args.project)
    options = RenderOptions(args.highlight, args.crop, args.margin, args.scale)
    if not 1 <= args.quality <= 100:
        from .render import RenderError
        raise RenderError(f"--quality must lie in 1..100, not {args.quality}")
    entries = select_frames(project, args.range)
    training = training_frames(project) if args.kind in ("best", "training") else {}
    args.out.mkdir(parents=True, exist_ok=True)
    bar = _progress(len(entries), "render")
    if entries[0].image is None:
        wanted = {e.index for e in entries}
        images = (f.image for f in Sequence(project.sequence, min(wanted), max(wanted) + 1) if f.index in wanted)
    else:
        images = (read_frame_image(project.sequence, e.index, e.image) for e in entries)
    written = 0
    for entry, image in zip(entries, images):
        order = ("training", "computed", "precomputed") if args.kind == "best" else (args.kind,)
        segs = {}
        for kind in order:
            frame = training.get(entry.name) if kind == "training" else project.load(kind, entry.name)
            if frame is not None:
                for name, seg in frame.segments.items():
                    segs.setdefault(name, seg)
        write_picture(args.out / f"{entry.name}.{args.format}", render(image, segs, options), args.quality)
        written += 1
        bar.update()
    bar.close()
    print(f"{written} pictures -> {args.out}")
    return 0


def cmd_annotations_export(args: argparse.Namespace) -> int:
    from .annotations import load_annotations, save_annotations
    from .contour_json import Project

    project = Project.open(args.project)
    frames = load_annotations(project.annotations_path)
    save_annotations(args.out, frames)
    print(f"{len(frames)} training frames -> {args.out}")
    return 0


def cmd_annotations_import(args: argparse.Namespace) -> int:
    from .annotations import (AnnotationError, check_counts, load_annotations, merge_annotations,
                              missing_images, parse_remaps, remap_frames, save_annotations)
    from .contour_json import Project

    project = Project.open(args.project)
    theirs = remap_frames(load_annotations(args.file), parse_remaps(args.remap))
    missing = missing_images(theirs)
    if missing:
        raise AnnotationError("training frames whose images do not exist here; remap them with --remap OLD=NEW: "
                              + ", ".join(f"{f.name} ({f.segment}): {f.image}" for f in missing))
    unknown = [f.name for f in theirs if f.name not in set(project.names())]
    if unknown:
        raise AnnotationError(f"training frames not in {project.root}: {', '.join(sorted(set(unknown)))} "
                              f"(detect those frames first)")
    ours = load_annotations(project.annotations_path) if project.annotations_path.exists() else []
    merged = merge_annotations(ours, theirs, args.on_clash, args.neutral)
    check_counts(merged)
    save_annotations(project.annotations_path, merged)
    print(f"{len(theirs)} training frames imported; {len(merged)} in {project.annotations_path}")
    return 0


# ------------------------------------------------------------------------------------------ parser

def add_contour_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``facewire contours`` and its subcommands."""
    top = sub.add_parser("contours", help="offline eye and lip contours per frame, personalised from annotations",
                         description="Offline eye and lip contours: detect them over a video or image folder "
                                     "into a project folder, annotate training frames, compute the per-actor "
                                     "correction, export/import one JSON per frame, render pictures.")
    cs = top.add_subparsers(dest="contours_command", metavar="STEP", required=True,
                            help="detect, annotate, compute, export, import, render or annotations (see STEP --help)")

    p = cs.add_parser("detect", help="precompute contours for every frame of a video or image folder",
                      description="Run the tracker over SEQUENCE and write OUT/precomputed/NAME.json per frame "
                                  "(NAME: the image stem, or the zero-padded frame number of a video) plus "
                                  "OUT/project.json. Coordinates are -1..1 of the image (see the README).")
    p.add_argument("sequence", type=Path, help="video file or folder of images")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="project folder")
    p.add_argument("--range", metavar="A:B", help="frame indices A (inclusive) to B (exclusive)")
    p.add_argument("--resample", type=int, default=DEFAULT_RESAMPLE, metavar="N",
                   help=f"N points between each pair of neighbouring semantic points (default {DEFAULT_RESAMPLE})")
    p.add_argument("--inner-lips", choices=("mesh", "synthesize", "off"), default="mesh",
                   help="inner lip contours from the mesh (default), synthesised from the outer contour, or none")
    p.add_argument("--inner-preset", choices=("smooth", "rhombus"),
                   help="synthesis preset (implies --inner-lips synthesize): smooth = corner, arc and middle, "
                        "smoothed; rhombus = corner and middle, straight")
    p.add_argument("--inner-points", choices=("corner-middle", "corner-arc-middle"), default="corner-arc-middle",
                   help="which control points the synthesis uses")
    for kind, default in (("corner", 0.95), ("arc", 0.55), ("middle", 0.35)):
        p.add_argument(f"--{kind}-weight", type=float, default=default, metavar="W",
                       help=f"{kind} control point: 0 = mouth centre, 1 = on the outer contour (default {default})")
    p.add_argument("--inner-smooth", choices=("on", "off"), default="on", help="smooth synthesised contours")
    p.set_defaults(func=_run(cmd_detect))

    p = cs.add_parser("annotate", help="start a training frame from a precomputed frame, or change its flags",
                      description="Add a training frame (one segment of one frame) to PROJECT/annotations.json, "
                                  "its points taken from the precomputed contours for an annotator to move. "
                                  "Modes: regular = COUNT semantic points evenly around each loop; extra = the "
                                  "corners (and lip centres) with COUNT extra points per pair; auto = the same "
                                  "semantic points and as few extra points as fit the contour within THRESHOLD "
                                  "pixels.")
    p.add_argument("project", type=Path)
    p.add_argument("--frame", required=True, help="frame name")
    p.add_argument("--segment", required=True, choices=SEGMENTS)
    p.add_argument("--mode", choices=("regular", "extra", "auto"), default="extra")
    p.add_argument("--count", type=int, default=4, help="semantic points (regular) or extra points per pair "
                                                        "(extra); default 4")
    p.add_argument("--threshold", type=float, default=0.5, metavar="PX", help="auto mode fit, pixels (0.5)")
    p.add_argument("--neutral", action="store_true", help="this is the segment's neutral frame")
    p.add_argument("--disabled", action="store_true", help="add it disabled (kept, not used for training)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing training frame")
    p.add_argument("--set-enabled", choices=("on", "off"), help="only enable or disable an existing training frame")
    p.add_argument("--set-neutral", action="store_true", help="only make an existing training frame the neutral one")
    p.set_defaults(func=_run(cmd_annotate))

    p = cs.add_parser("compute", help="learn the correction from the training frames and apply it",
                      description="Per segment with training frames (at least two enabled, one of them the "
                                  "enabled neutral frame), learn how the annotated contours differ from the "
                                  "detected ones in the segment's own normalised frame, and write "
                                  "PROJECT/computed/NAME.json for every precomputed frame in the range.")
    p.add_argument("project", type=Path)
    p.add_argument("--range", metavar="A:B")
    p.add_argument("--segments", type=_segments, default=None, help="all (default: those with training frames) "
                                                                     "or a comma-separated list")
    p.add_argument("--annotations", type=Path, help="annotation file (default PROJECT/annotations.json)")
    p.add_argument("--initial-smoothness", type=float, default=0.0, metavar="SIGMA",
                   help="smooth the detected contour first (Gaussian width in points; default 0 = off)")
    p.add_argument("--final-smoothness", type=float, default=3.0, metavar="SIGMA",
                   help="smooth the correction along the contour (Gaussian width in points; default 3)")
    p.add_argument("--regularisation", type=float, default=100.0,
                   help="ridge strength of the expression-dependent term (default 100; small values follow the "
                        "training frames' shapes closely)")
    p.add_argument("--iterations", type=int, default=0,
                   help="rounds of image refinement after the shape correction: each point searches along its "
                        "normal for the intensity profile learnt at the training frames (default 0 = off)")
    p.add_argument("--grayscale", choices=("on", "off"), default="on",
                   help="image refinement on grey levels (on, default) or on the three colour channels")
    p.add_argument("--slide-semantic", choices=("on", "off"), default="off",
                   help="also move the semantic points (corners, lip centres) by their learnt 2-D offsets, "
                        "stretching the contour between them (default off: the correction moves the contour "
                        "along its normals only)")
    p.set_defaults(func=_run(cmd_compute))

    p = cs.add_parser("export", help="write one JSON per frame for other tools",
                      description="Write OUT/NAME.json per frame. Per segment the preferred kind present wins.")
    p.add_argument("project", type=Path)
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--frames", type=_kinds, default=KINDS, metavar="KINDS",
                   help="which results to export: precomputed,computed,training (default all)")
    p.add_argument("--prefer", choices=tuple(PREFERENCES), default="training",
                   help="training: training > computed > precomputed (default); computed: computed > "
                        "precomputed; precomputed: precomputed only")
    p.add_argument("--segments", type=_segments, default=SEGMENTS, help="all (default) or a comma-separated list")
    p.add_argument("--coordinates", choices=COORDINATES, default="normalized")
    p.add_argument("--range", metavar="A:B")
    p.set_defaults(func=_run(cmd_export))

    p = cs.add_parser("import", help="read per-frame JSON files into the project",
                      description="Import contour files, matched to the project's frames by file name; files "
                                  "that match no frame stop the import and are named.")
    p.add_argument("project", type=Path)
    p.add_argument("files", type=Path, nargs="+", help="JSON files or folders of them")
    p.add_argument("--as", dest="as_kind", choices=("precomputed", "computed"), required=True)
    p.add_argument("--coordinates", choices=COORDINATES, help="the files' coordinates, when they do not say")
    p.add_argument("--replace", choices=("contours", "frame"), default="contours",
                   help="replace only the segments and contours present (default) or the whole frame")
    p.set_defaults(func=_run(cmd_import))

    p = cs.add_parser("render", help="pictures of the frames with their contours drawn")
    p.add_argument("project", type=Path)
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--kind", choices=("best", "training", "computed", "precomputed"), default="best",
                   help="which result to draw (best: training > computed > precomputed per segment)")
    p.add_argument("--highlight", choices=SEGMENTS, help="draw this segment in colour and the others grey")
    p.add_argument("--crop", action="store_true", help="a crop around the face instead of the whole image")
    p.add_argument("--margin", type=float, default=0.3, help="crop margin, fraction of the face extent (0.3)")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--format", choices=("png", "jpg"), default="png")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100 (90)")
    p.add_argument("--range", metavar="A:B")
    p.set_defaults(func=_run(cmd_render))

    p = cs.add_parser("annotations", help="export or import a project's training frames")
    asub = p.add_subparsers(dest="annotations_command", metavar="ACTION", required=True)
    q = asub.add_parser("export", help="write the training frames to a file")
    q.add_argument("project", type=Path)
    q.add_argument("--out", type=Path, required=True, metavar="FILE.json")
    q.set_defaults(func=_run(cmd_annotations_export))
    q = asub.add_parser("import", help="add another project's training frames",
                        description="Frames whose images do not exist are reported and block the import until "
                                    "remapped; frames annotated differently in both, and two different neutral "
                                    "frames, need an explicit choice.")
    q.add_argument("project", type=Path)
    q.add_argument("file", type=Path)
    q.add_argument("--remap", action="append", metavar="OLD=NEW", help="replace an image path prefix (repeatable)")
    q.add_argument("--on-clash", choices=("ours", "theirs"), help="which of two different annotations of a frame wins")
    q.add_argument("--neutral", choices=("ours", "theirs"), help="which neutral frame wins when they differ")
    q.set_defaults(func=_run(cmd_annotations_import))
