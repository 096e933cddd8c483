"""Export a project's frames to one JSON per frame, and import such files back into a project."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .annotations import load_annotations, training_segment
from .compute import _resample_of
from .contour_json import KINDS, ContourFormatError, ContourFrame, Project, frame_from_dict, merge_frames, \
    match_import_files, pick_result, select_frames, write_frame
from .contours import SEGMENTS


def training_frames(project: Project) -> dict[str, ContourFrame]:
    """The annotated training frames as contour frames of kind "training" (resampled like the detections)."""
    if not project.annotations_path.exists():
        return {}
    result: dict[str, ContourFrame] = {}
    for tf in load_annotations(project.annotations_path):
        pre = project.load("precomputed", tf.name)
        n = _resample_of(pre) if pre is not None and pre.segments else 20
        seg = training_segment(tf, n)
        old = result.get(tf.name)
        segs = {**(old.segments if old else {}), tf.segment: seg}
        result[tf.name] = ContourFrame(tf.name, "training", tf.image_size, segs, tf.frame_index,
                                       Path(tf.image).name)
    return result


def export_project(project: Project, out: Path, kinds: tuple[str, ...] = KINDS, prefer: str = "training",
                   segments: tuple[str, ...] = SEGMENTS, coordinates: str = "normalized",
                   frame_range: str | None = None, progress: Callable[[int], None] | None = None) -> int:
    """One file per frame that has a result of an allowed kind; per segment the preferred kind wins. The
    file's kind is the best kind it holds."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ContourFormatError(f"--frames takes kinds from {', '.join(KINDS)}, not {', '.join(bad) or 'none'}")
    bad = [s for s in segments if s not in SEGMENTS]
    if bad:
        raise ContourFormatError(f"--segments takes {', '.join(SEGMENTS)} or all, not {', '.join(bad)}")
    training = training_frames(project) if "training" in kinds else {}
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for entry in select_frames(project, frame_range):
        if progress:
            progress(1)
        cands = {k: f for k in ("precomputed", "computed") if k in kinds
                 and (f := project.load(k, entry.name)) is not None}
        if entry.name in training:
            cands["training"] = training[entry.name]
        if not cands:
            continue
        chosen, kinds_used = {}, []
        for seg in segments:
            with_seg = {k: f for k, f in cands.items() if seg in f.segments}
            best = pick_result(with_seg, kinds, prefer)
            if best is not None:
                chosen[seg] = best.segments[seg]
                kinds_used.append(best.kind)
        base = pick_result(cands, kinds, prefer)
        if base is None:
            continue
        kind = min(kinds_used, key=("training", "computed", "precomputed").index) if kinds_used else base.kind
        frame = ContourFrame(entry.name, kind, base.image_size, chosen, base.frame_index, base.source)
        write_frame(out / f"{entry.name}.json", frame, coordinates)
        written += 1
    return written


def import_files(project: Project, paths: list[Path], as_kind: str, coordinates: str | None = None,
                 whole: bool = False) -> list[str]:
    """Read contour files into the project as ``as_kind``; returns the frame names imported.

    Files are matched to frames by file stem; any file matching no frame stops the import before anything
    is written, and the error names those files."""
    if as_kind not in ("precomputed", "computed"):
        raise ContourFormatError(f"--as must be precomputed or computed, not {as_kind!r}")
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.glob("*.json"))
        elif p.exists():
            files.append(p)
        else:
            raise ContourFormatError(f"{p} does not exist")
    if not files:
        raise ContourFormatError("no .json files to import")
    matched, unmatched = match_import_files(files, project.names())
    if unmatched:
        raise ContourFormatError(f"{len(unmatched)} file(s) match no frame of {project.root}: "
                                 + ", ".join(str(p) for p in unmatched[:20]) + (" ..." if len(unmatched) > 20 else ""))
    parsed = []
    for name, path in matched.items():
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ContourFormatError(f"{path} is not valid JSON ({exc})") from None
        frame = frame_from_dict(doc, str(path), coordinates)
        if frame.name != name:
            raise ContourFormatError(f"{path} is named for frame {name} but says it holds frame {frame.name}")
        parsed.append(frame)
    for frame in parsed:
        old = project.load(as_kind, frame.name)
        new = ContourFrame(frame.name, as_kind, frame.image_size, frame.segments,
                           project.entry(frame.name).index, frame.source)
        project.save(merge_frames(old, new, whole))
    return [f.name for f in parsed]


