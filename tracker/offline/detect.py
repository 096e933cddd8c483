"""``contours detect``: run the tracker over a sequence and write one precomputed contour file per frame.

Videos go through the live tracker (each frame's crop from the previous frame's landmarks, the detector
only when the face is lost); image folders are independent photos, so every image gets the detector.
One face per frame (the tracker's first). A frame without a face is still written, with no segments, so
every frame of the range has its file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .contour_json import ContourFormatError, ContourFrame, FrameEntry, Project
from .contours import DEFAULT_RESAMPLE, SEGMENTS, Segment, face_segments
from .inner_lips import InnerLipOptions, apply_inner_lips
from .sequence import Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectOptions:
    resample: int = DEFAULT_RESAMPLE
    inner_lips: InnerLipOptions = InnerLipOptions()


def segments_from_mesh(points: np.ndarray, options: DetectOptions) -> dict[str, Segment]:
    segs = face_segments(points, options.resample)
    segs["lips"] = apply_inner_lips(segs["lips"], options.inner_lips, options.resample)
    return {name: segs[name] for name in SEGMENTS}


class MeshSource:
    """Mesh points per frame: the tracker for videos, detection on every image for photo folders."""

    def __init__(self, video: bool) -> None:
        self.video = video
        if video:
            from ..tracking import FaceTracker, TrackingConfig
            self.tracker = FaceTracker(TrackingConfig())
        else:
            from ..analysis import AnalyzerConfig, FaceAnalyzer
            self.analyzer = FaceAnalyzer(AnalyzerConfig(max_faces=1))

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        if self.video:
            faces = self.tracker.update(image)
            return faces[0].mesh.points if faces else None
        faces = self.analyzer.analyze(image)
        return faces[0].landmarks if faces else None


def detect_sequence(sequence: str | Path, out: str | Path, start: int = 0, stop: int | None = None,
                    options: DetectOptions = DetectOptions(),
                    progress: Callable[[int], None] | None = None) -> Project:
    """Detect contours on frames ``start..stop`` of a sequence into the project folder ``out``.

    An existing project for the same sequence keeps its other frames (their names join the list)."""
    seq = Sequence(sequence, start, stop)
    out = Path(out)
    entries: dict[str, FrameEntry] = {}
    if (out / "project.json").exists():
        old = Project.open(out)
        if Path(old.sequence).resolve() != seq.path.resolve():
            raise ContourFormatError(f"{out} is the project of another sequence ({old.sequence}); detect into "
                                     f"a new folder")
        entries = {f.name: f for f in old.frames}
    project = Project(out, str(seq.path.resolve()), ())
    project.folder("precomputed").mkdir(parents=True, exist_ok=True)
    source = MeshSource(seq.is_video)
    missing = 0
    for frame in seq:
        points = source(frame.image)
        h, w = frame.image.shape[:2]
        segs = segments_from_mesh(points, options) if points is not None else {}
        missing += points is None
        project.save(ContourFrame(frame.name, "precomputed", (w, h), segs, frame.index, seq.path.name))
        entries[frame.name] = FrameEntry(frame.name, frame.index, frame.path)
        if progress:
            progress(1)
    if missing:
        log.warning("no face found in %d of %d frames (their files have no segments)", missing, len(seq))
    project = Project(out, project.sequence, tuple(sorted(entries.values(), key=lambda f: f.index)))
    project.write()
    return project
