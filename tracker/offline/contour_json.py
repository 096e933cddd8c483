"""The per-frame contour JSON format (version 1), the project folder that holds it, and export/import.

One file per frame::

    {"format": "facewire-contours", "version": 1, "kind": "precomputed" | "computed" | "training",
     "frame": "000123", "frame_index": 123, "source": "clip.mp4", "image_size": [width, height],
     "coordinates": "normalized" | "pixels", "face": true,
     "segments": {"right_eye": {"contours": {"upper": [[x, y], ...], "lower": [...]},
                                "semantic_points": {"outer_corner": [x, y], "inner_corner": [x, y]}},
                  "left_eye": {...}, "lips": {...}}}

Pixel coordinates are zero-based with the centre of the top-left pixel at (0, 0). Normalised coordinates
map the image's outer edges to -1 and +1: x = -1 is the left edge of the leftmost pixel column, x = +1 the
right edge of the rightmost one, y = -1 the top edge, y = +1 the bottom edge (y grows downwards, as in
pixels). So pixel x maps to 2 (x + 0.5) / width - 1, and the centre of pixel column i lies at
(2 i + 1) / width - 1.

A project folder (``contours detect --out DIR``) holds ``project.json`` (the sequence and its frame
names), ``precomputed/NAME.json`` from the detector, ``computed/NAME.json`` from ``contours compute``,
and ``annotations.json`` (the training frames; see ``annotations``). Files inside a project are always in
normalised coordinates; exports choose.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .contours import SEGMENTS, Segment

log = logging.getLogger(__name__)

FORMAT = "facewire-contours"
PROJECT_FORMAT = "facewire-contour-project"
VERSION = 1
KINDS = ("precomputed", "computed", "training")
COORDINATES = ("normalized", "pixels")
PREFERENCES = {   # which kinds an export may take for a frame, best first
    "training": ("training", "computed", "precomputed"),
    "computed": ("computed", "precomputed"),
    "precomputed": ("precomputed",),
}


class ContourFormatError(ValueError):
    """A contour JSON file or project folder is malformed, or an import/export request cannot be met."""


@dataclass(frozen=True)
class ContourFrame:
    """One frame's result in pixels: which frame, which kind of result, and its segments."""

    name: str
    kind: str
    image_size: tuple[int, int]                 # (width, height)
    segments: dict[str, Segment] = field(default_factory=dict)
    frame_index: int | None = None
    source: str | None = None

    @property
    def face(self) -> bool:
        return bool(self.segments)


def to_normalized(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Zero-based pixel points -> -1..1 of the image (edges at -1 and +1; see the module docstring)."""
    w, h = size
    p = np.asarray(points, np.float64)
    return np.stack([2.0 * (p[..., 0] + 0.5) / w - 1.0, 2.0 * (p[..., 1] + 0.5) / h - 1.0], axis=-1)


def to_pixels(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """-1..1 normalised points -> zero-based pixels (inverse of ``to_normalized``)."""
    w, h = size
    p = np.asarray(points, np.float64)
    return np.stack([(p[..., 0] + 1.0) * w / 2.0 - 0.5, (p[..., 1] + 1.0) * h / 2.0 - 0.5], axis=-1)


def frame_to_dict(frame: ContourFrame, coordinates: str = "normalized",
                  segments: tuple[str, ...] | None = None) -> dict:
    """The JSON document of a frame (only ``segments`` when given)."""
    if coordinates not in COORDINATES:
        raise ContourFormatError(f"coordinates must be one of {', '.join(COORDINATES)}, not {coordinates!r}")
    digits = 6 if coordinates == "normalized" else 3
    chosen = [(name, seg) for name, seg in frame.segments.items() if segments is None or name in segments]
    # Every point of the frame converted and rounded in one pass, then cut back into contours.
    arrays = [a.reshape(-1, 2) for _, seg in chosen for a in (*seg.contours.values(), *seg.semantic.values())]
    segs: dict = {}
    if arrays:
        allp = np.concatenate(arrays)
        q = to_normalized(allp, frame.image_size) if coordinates == "normalized" else allp.astype(np.float64)
        flat = np.round(q, digits).tolist()
        at = 0
        for name, seg in chosen:
            contours = {}
            for k, v in seg.contours.items():
                contours[k] = flat[at:at + len(v)]
                at += len(v)
            semantic = {}
            for k in seg.semantic:
                semantic[k] = flat[at]
                at += 1
            segs[name] = {"contours": contours, "semantic_points": semantic}
    return {"format": FORMAT, "version": VERSION, "kind": frame.kind, "frame": frame.name,
            "frame_index": frame.frame_index, "source": frame.source,
            "image_size": [int(frame.image_size[0]), int(frame.image_size[1])],
            "coordinates": coordinates, "face": frame.face, "segments": segs}


def _points(value, where: str, single: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ContourFormatError(f"{where}: expected numbers") from None
    ok = arr.shape == (2,) if single else (arr.ndim == 2 and arr.shape[1] == 2 and len(arr) >= 2)
    if not ok or not np.isfinite(arr).all():
        want = "one [x, y] pair" if single else "a list of at least two [x, y] pairs"
        raise ContourFormatError(f"{where}: expected {want} of finite numbers")
    return arr


def frame_from_dict(doc: dict, where: str = "contour file", coordinates: str | None = None) -> ContourFrame:
    """Parse and check a frame document. ``coordinates`` states the file's coordinates when it omits them
    (and must agree when it states them)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ContourFormatError(f"{where}: not a facewire contour file (format is not {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ContourFormatError(f"{where}: format version {doc.get('version')!r} is not supported (only {VERSION})")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ContourFormatError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    stated = doc.get("coordinates")
    if stated is None:
        if coordinates is None:
            raise ContourFormatError(f"{where}: the file does not say its coordinates; state them "
                                     f"(--coordinates normalized|pixels)")
        stated = coordinates
    elif coordinates is not None and stated != coordinates:
        raise ContourFormatError(f"{where}: the file says its coordinates are {stated!r}, not {coordinates!r}")
    if stated not in COORDINATES:
        raise ContourFormatError(f"{where}: coordinates {stated!r} is not one of {', '.join(COORDINATES)}")
    size = doc.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ContourFormatError(f"{where}: image_size must be [width, height] in whole pixels")
    name = doc.get("frame")
    if not isinstance(name, str) or not name:
        raise ContourFormatError(f"{where}: 'frame' must name the frame")
    size_t = (size[0], size[1])

    def conv(p: np.ndarray) -> np.ndarray:
        return to_pixels(p, size_t) if stated == "normalized" else p

    segments = {}
    raw = doc.get("segments", {})
    if not isinstance(raw, dict):
        raise ContourFormatError(f"{where}: 'segments' must be an object")
    for seg_name, body in raw.items():
        if seg_name not in SEGMENTS:
            raise ContourFormatError(f"{where}: unknown segment {seg_name!r} (expected {', '.join(SEGMENTS)})")
        if not isinstance(body, dict) or not isinstance(body.get("contours"), dict):
            raise ContourFormatError(f"{where}: segment {seg_name} has no 'contours' object")
        contours = {k: conv(_points(v, f"{where}: {seg_name}.{k}")) for k, v in body["contours"].items()}
        semantic = {k: conv(_points(v, f"{where}: {seg_name}.semantic_points.{k}", single=True))
                    for k, v in body.get("semantic_points", {}).items()}
        segments[seg_name] = Segment(seg_name, contours, semantic)
    index = doc.get("frame_index")
    return ContourFrame(name, kind, size_t, segments, index if isinstance(index, int) else None, doc.get("source"))


def write_frame(path: Path, frame: ContourFrame, coordinates: str = "normalized",
                segments: tuple[str, ...] | None = None) -> None:
    path.write_text(json.dumps(frame_to_dict(frame, coordinates, segments), separators=(",", ":")))


def read_frame(path: Path, coordinates: str | None = None) -> ContourFrame:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ContourFormatError(f"{path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContourFormatError(f"{path} is not valid JSON ({exc})") from None
    return frame_from_dict(doc, str(path), coordinates)


# ---------------------------------------------------------------------------------------------- projects

@dataclass(frozen=True)
class FrameEntry:
    """A frame of the sequence: its name, its index in the sequence and, for image folders, its file."""

    name: str
    index: int
    image: str | None = None


@dataclass(frozen=True)
class Project:
    """A project folder: the sequence it was detected from and the names of its frames, in order."""

    root: Path
    sequence: str
    frames: tuple[FrameEntry, ...]

    def folder(self, kind: str) -> Path:
        if kind not in ("precomputed", "computed"):
            raise ContourFormatError(f"no folder for kind {kind!r}")
        return self.root / kind

    @property
    def annotations_path(self) -> Path:
        return self.root / "annotations.json"

    def names(self) -> list[str]:
        return [f.name for f in self.frames]

    def entry(self, name: str) -> FrameEntry:
        for f in self.frames:
            if f.name == name:
                return f
        raise ContourFormatError(f"frame {name!r} is not in the project {self.root}")

    def frame_path(self, kind: str, name: str) -> Path:
        return self.folder(kind) / f"{name}.json"

    def load(self, kind: str, name: str) -> ContourFrame | None:
        path = self.frame_path(kind, name)
        return read_frame(path) if path.exists() else None

    def save(self, frame: ContourFrame) -> Path:
        path = self.frame_path(frame.kind, frame.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_frame(path, frame)
        return path

    def write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {"format": PROJECT_FORMAT, "version": VERSION, "sequence": self.sequence,
               "frames": [{"name": f.name, "index": f.index, **({"image": f.image} if f.image else {})}
                          for f in self.frames]}
        (self.root / "project.json").write_text(json.dumps(doc, indent=0))

    @classmethod
    def open(cls, root: Path) -> "Project":
        root = Path(root)
        path = root / "project.json"
        if not path.exists():
            raise ContourFormatError(f"{root} is not a contour project (no project.json; make one with "
                                     f"'facewire contours detect SEQUENCE --out {root}')")
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ContourFormatError(f"{path} is not valid JSON ({exc})") from None
        if doc.get("format") != PROJECT_FORMAT or doc.get("version") != VERSION:
            raise ContourFormatError(f"{path}: not a version {VERSION} facewire contour project")
        frames = tuple(FrameEntry(f["name"], int(f["index"]), f.get("image")) for f in doc["frames"])
        return cls(root, doc["sequence"], frames)


def parse_range(text: str | None) -> tuple[int, int | None]:
    """``A:B`` -> (A, B) frame indices, B exclusive; ``A:`` or ``:B`` leave an end open."""
    if text is None:
        return 0, None
    a, sep, b = text.partition(":")
    try:
        start = int(a) if a.strip() else 0
        stop = int(b) if b.strip() else None
    except ValueError:
        start = stop = -1
    if not sep or start < 0 or (stop is not None and stop <= start):
        raise ContourFormatError(f"--range {text!r} must be A:B with 0 <= A < B (frame indices, B exclusive; "
                                 f"either end may be left out)")
    return start, stop


def select_frames(project: Project, frame_range: str | None) -> list[FrameEntry]:
    """The project's frames whose sequence index falls in ``--range``; an empty selection is an error."""
    start, stop = parse_range(frame_range)
    chosen = [f for f in project.frames if f.index >= start and (stop is None or f.index < stop)]
    if not chosen:
        last = project.frames[-1].index if project.frames else -1
        raise ContourFormatError(f"--range {frame_range} selects no frame of {project.root} "
                                 f"(its frames run from index 0 to {last})")
    return chosen


# ------------------------------------------------------------------------------------------ export/import

def pick_result(candidates: dict[str, ContourFrame], kinds: tuple[str, ...], prefer: str) -> ContourFrame | None:
    """The frame result an export writes: the best allowed kind present, per ``prefer``."""
    if prefer not in PREFERENCES:
        raise ContourFormatError(f"--prefer must be one of {', '.join(PREFERENCES)}, not {prefer!r}")
    for kind in PREFERENCES[prefer]:
        if kind in kinds and kind in candidates:
            return candidates[kind]
    return None


def merge_frames(old: ContourFrame | None, new: ContourFrame, whole: bool) -> ContourFrame:
    """An imported frame over an existing one: the whole frame, or only the segments and contours it holds."""
    if whole or old is None:
        return new
    segments = dict(old.segments)
    for name, seg in new.segments.items():
        base = segments.get(name)
        if base is None:
            segments[name] = seg
        else:
            segments[name] = Segment(name, {**base.contours, **seg.contours}, {**base.semantic, **seg.semantic})
    return replace(old, segments=segments, kind=new.kind)


def match_import_files(paths: list[Path], names: list[str]) -> tuple[dict[str, Path], list[Path]]:
    """Import files matched to project frames by file stem; returns (name -> file, files matching none)."""
    known = set(names)
    matched, unmatched = {}, []
    for p in paths:
        (matched.__setitem__(p.stem, p) if p.stem in known else unmatched.append(p))
    return matched, unmatched
