"""``contours compute``: train each segment's correction from the project's annotations and write a
computed file for every precomputed frame in the range."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .annotations import AnnotationError, TrainingFrame, load_annotations, missing_images
from .contour_json import ContourFrame, Project, select_frames
from .contours import SEGMENTS
from .personalise import ComputeSettings, SegmentModel, train_segment
from .sequence import Sequence, read_frame_image

log = logging.getLogger(__name__)


def _resample_of(frame: ContourFrame) -> int:
    """The --resample a precomputed frame was made with (points between an eye's two corners, minus 2)."""
    for name in ("right_eye", "left_eye"):
        if name in frame.segments:
            return len(frame.segments[name].contours["upper"]) - 2
    lips = frame.segments["lips"].contours["outer_upper"]
    return (len(lips) - 3) // 2


def frame_image(project: Project, name: str, cache: dict[str, np.ndarray] | None = None) -> np.ndarray:
    entry = project.entry(name)
    if cache is not None and name in cache:
        return cache[name]
    image = read_frame_image(project.sequence, entry.index, entry.image)
    if cache is not None:
        cache[name] = image
    return image


def train_models(project: Project, frames: list[TrainingFrame], segments: tuple[str, ...] | None,
                 settings: ComputeSettings) -> dict[str, SegmentModel]:
    """One model per segment that has training frames (or per requested segment; each must have them)."""
    missing = missing_images([f for f in frames if f.enabled])
    if missing:
        raise AnnotationError("training frames whose images do not exist (remap them with 'contours annotations "
                              "import --remap OLD=NEW'): " + ", ".join(f"{f.name} ({f.image})" for f in missing))
    wanted = segments or tuple(s for s in SEGMENTS if any(f.segment == s for f in frames))
    if not wanted:
        raise AnnotationError(f"{project.annotations_path} holds no training frames")
    models = {}
    images: dict[str, np.ndarray] = {}
    for seg in wanted:
        mine = [f for f in frames if f.segment == seg]
        detected, resample = {}, None
        for f in mine:
            if not f.enabled:
                continue
            pre = project.load("precomputed", f.name)
            if pre is None or seg not in pre.segments:
                raise AnnotationError(f"segment {seg}: training frame {f.name} has no precomputed {seg} (no "
                                      f"face found there, or the frame was never detected)")
            detected[f.name] = pre.segments[seg]
            resample = _resample_of(pre)
            if settings.iterations:
                frame_image(project, f.name, images)
        if resample is None:
            raise AnnotationError(f"segment {seg}: no enabled training frames")
        models[seg] = train_segment(seg, mine, detected, images if settings.iterations else None, resample,
                                    settings)
    return models


def compute_project(project: Project, frame_range: str | None = None, segments: tuple[str, ...] | None = None,
                    settings: ComputeSettings = ComputeSettings(), annotations: Path | None = None,
                    progress: Callable[[int], None] | None = None) -> int:
    """Write computed/NAME.json for every precomputed frame in the range; returns how many were written."""
    frames = load_annotations(annotations or project.annotations_path)
    models = train_models(project, frames, segments, settings)
    entries = select_frames(project, frame_range)
    images = _images_for(project, entries) if settings.iterations else None
    written = 0
    for entry in entries:
        pre = project.load("precomputed", entry.name)
        if pre is not None:
            image = next(images) if images is not None else None
            corrected = {name: model.correct(pre.segments[name], image)
                         for name, model in models.items() if name in pre.segments}
            project.save(ContourFrame(pre.name, "computed", pre.image_size, corrected, pre.frame_index, pre.source))
            written += 1
        elif images is not None:
            next(images)
        if progress:
            progress(1)
    return written


def _images_for(project: Project, entries: list) -> Iterator[np.ndarray]:
    """The frames' pixels in order: one pass through a video, or each image file."""
    if entries[0].image is not None:
        for e in entries:
            yield read_frame_image(project.sequence, e.index, e.image)
        return
    wanted = {e.index for e in entries}
    for frame in Sequence(project.sequence, min(wanted), max(wanted) + 1):
        if frame.index in wanted:
            yield frame.image
