"""Eye and lip contours taken from the 478-point attention mesh, and their resampling.

A face gives three segments: the subject's right eye, the subject's left eye and the lips. Each segment
holds open contours (eyelids; outer and inner lips) that run from the subject's right end to the subject's
left end (image left to image right for an unmirrored camera), and named semantic points where the contours
meet or peak (eye corners; lip corners and upper/lower lip centres). The mesh vertex loops are MediaPipe's
public FaceMesh contour lists (FACEMESH_LEFT_EYE, FACEMESH_RIGHT_EYE, FACEMESH_LIPS).

Resampling puts ``n`` points between every pair of neighbouring semantic points along a contour, evenly by
arc length, so every frame has the same number of points whatever the mesh or an annotator gave.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SEGMENTS = ("right_eye", "left_eye", "lips")
DEFAULT_RESAMPLE = 20


class ContourError(ValueError):
    """Contours or semantic points that do not fit together (wrong segment, counts, shapes)."""


@dataclass(frozen=True)
class ContourSpec:
    """One contour of a segment: its mesh vertices in order and the semantic points it passes through."""

    name: str
    vertices: tuple[int, ...]
    semantic: tuple[str, ...]      # names of the semantic points on it, in contour order (ends included)


# Mesh vertices (subject's right eye is on the image's left). Every contour runs subject's right -> left.
_RIGHT_EYE = (
    ContourSpec("upper", (33, 246, 161, 160, 159, 158, 157, 173, 133), ("outer_corner", "inner_corner")),
    ContourSpec("lower", (33, 7, 163, 144, 145, 153, 154, 155, 133), ("outer_corner", "inner_corner")),
)
_LEFT_EYE = (
    ContourSpec("upper", (362, 398, 384, 385, 386, 387, 388, 466, 263), ("inner_corner", "outer_corner")),
    ContourSpec("lower", (362, 382, 381, 380, 374, 373, 390, 249, 263), ("inner_corner", "outer_corner")),
)
_LIPS = (
    ContourSpec("outer_upper", (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291),
                ("right_corner", "upper_centre", "left_corner")),
    ContourSpec("outer_lower", (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291),
                ("right_corner", "lower_centre", "left_corner")),
    ContourSpec("inner_upper", (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308),
                ("inner_right_corner", "inner_upper_centre", "inner_left_corner")),
    ContourSpec("inner_lower", (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308),
                ("inner_right_corner", "inner_lower_centre", "inner_left_corner")),
)
SPECS: dict[str, tuple[ContourSpec, ...]] = {"right_eye": _RIGHT_EYE, "left_eye": _LEFT_EYE, "lips": _LIPS}
INNER_LIP_CONTOURS = ("inner_upper", "inner_lower")

# Closed loops of a segment, as (contour, reversed?) pieces: the upper contour forward, then the lower one
# backwards, gives a loop around the eye or the mouth. Personalisation and error measures work on loops.
LOOPS: dict[str, dict[str, tuple[str, str]]] = {
    "right_eye": {"eye": ("upper", "lower")},
    "left_eye": {"eye": ("upper", "lower")},
    "lips": {"outer": ("outer_upper", "outer_lower"), "inner": ("inner_upper", "inner_lower")},
}


def semantic_names(segment: str) -> tuple[str, ...]:
    """The semantic point names of a segment, each once, in contour order."""
    names: list[str] = []
    for spec in _specs(segment):
        names += [n for n in spec.semantic if n not in names]
    return tuple(names)


def _specs(segment: str) -> tuple[ContourSpec, ...]:
    try:
        return SPECS[segment]
    except KeyError:
        raise ContourError(f"unknown segment {segment!r}; segments are {', '.join(SEGMENTS)}") from None


@dataclass(frozen=True)
class Segment:
    """One segment's contours (name -> (n, 2) float64 pixels) and semantic points (name -> (2,) pixels)."""

    name: str
    contours: dict[str, np.ndarray]
    semantic: dict[str, np.ndarray] = field(default_factory=dict)

    def points(self) -> np.ndarray:
        """Every contour point of the segment, contours in spec order, stacked (for bounds and drawing)."""
        return np.concatenate([self.contours[k] for k in self.contours])


def segment_from_mesh(points: np.ndarray, segment: str) -> Segment:
    """The segment's contours straight from the mesh vertices (no resampling), in pixels."""
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[0] < 468 or pts.shape[1] < 2:
        raise ContourError(f"expected mesh points of shape (468 or 478, 2 or 3), got {pts.shape}")
    contours, semantic = {}, {}
    for spec in _specs(segment):
        contours[spec.name] = pts[list(spec.vertices), :2].copy()
        ends = (spec.vertices[0], spec.vertices[-1])
        centre = spec.vertices[len(spec.vertices) // 2]
        where = [ends[0], centre, ends[1]] if len(spec.semantic) == 3 else list(ends)
        for name, vertex in zip(spec.semantic, where):
            semantic[name] = pts[vertex, :2].copy()
    return Segment(segment, contours, semantic)


def _mesh_pieces() -> tuple[dict[int, np.ndarray], list[tuple[str, str, list[tuple[int, int]]]]]:
    """Every contour's pieces between neighbouring semantic points as mesh vertex rows, grouped by length
    (so the whole face resamples in two batched passes), and where each piece lands."""
    groups: dict[int, list[list[int]]] = {}
    layout = []
    for seg in SEGMENTS:
        for spec in SPECS[seg]:
            v = list(spec.vertices)
            cuts = [0, len(v) // 2, len(v) - 1] if len(spec.semantic) == 3 else [0, len(v) - 1]
            places = []
            for a, b in zip(cuts[:-1], cuts[1:]):
                piece = v[a:b + 1]
                groups.setdefault(len(piece), []).append(piece)
                places.append((len(piece), len(groups[len(piece)]) - 1))
            layout.append((seg, spec.name, places))
    return {k: np.array(g) for k, g in groups.items()}, layout


_PIECES, _LAYOUT = _mesh_pieces()


def arc_resample_batch(lines: np.ndarray, count: int) -> np.ndarray:
    """``arc_resample`` of B open polylines of V points at once: (B, V, 2) -> (B, count, 2)."""
    step = np.linalg.norm(np.diff(lines, axis=1), axis=2)                     # (B, V-1)
    s = np.concatenate([np.zeros((len(lines), 1)), np.cumsum(step, axis=1)], axis=1)
    total = np.maximum(s[:, -1:], 1e-12)
    t = total * np.linspace(0.0, 1.0, count)[None]                            # (B, count)
    idx = np.clip((s[:, None, :-1] <= t[:, :, None]).sum(axis=2) - 1, 0, lines.shape[1] - 2)
    s0 = np.take_along_axis(s, idx, axis=1)
    seg = np.maximum(np.take_along_axis(step, idx, axis=1), 1e-12)
    frac = np.clip((t - s0) / seg, 0.0, 1.0)[..., None]
    rows = np.arange(len(lines))[:, None]
    return lines[rows, idx] * (1 - frac) + lines[rows, idx + 1] * frac


def face_segments(points: np.ndarray, resample: int | None = DEFAULT_RESAMPLE) -> dict[str, Segment]:
    """All three segments of one face's mesh, resampled to ``resample`` points per semantic pair (None: raw).

    Same result as ``resample_segment(segment_from_mesh(...))`` for each segment, batched for speed."""
    raw = {name: segment_from_mesh(points, name) for name in SEGMENTS}
    if resample is None:
        return raw
    if resample < 0:
        raise ContourError(f"--resample must be 0 or more, not {resample}")
    pts = np.asarray(points, np.float64)[:, :2]
    done = {k: arc_resample_batch(pts[rows], resample + 2) for k, rows in _PIECES.items()}
    contours: dict[str, dict[str, np.ndarray]] = {name: {} for name in SEGMENTS}
    for seg, contour, places in _LAYOUT:
        parts = [done[k][i] if j == 0 else done[k][i][1:] for j, (k, i) in enumerate(places)]
        contours[seg][contour] = np.concatenate(parts)
    return {name: Segment(name, contours[name], raw[name].semantic) for name in SEGMENTS}


def arc_resample(polyline: np.ndarray, count: int) -> np.ndarray:
    """``count`` points (ends included) evenly spaced by arc length along an open polyline."""
    line = np.asarray(polyline, np.float64)
    if count < 2:
        raise ContourError(f"need at least the two end points, not {count}")
    if len(line) < 2:
        return np.repeat(line[:1], count, axis=0)
    step = np.linalg.norm(np.diff(line, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(step)])
    if s[-1] <= 0:
        return np.repeat(line[:1], count, axis=0)
    t = np.linspace(0.0, s[-1], count)
    return np.stack([np.interp(t, s, line[:, 0]), np.interp(t, s, line[:, 1])], axis=1)


def _closest_index(polyline: np.ndarray, point: np.ndarray) -> int:
    return int(np.argmin(np.linalg.norm(polyline - point, axis=1)))


def resample_contour(contour: np.ndarray, anchors: list[np.ndarray], n: int) -> np.ndarray:
    """Resample an open contour: its anchor points (semantic points, in order, ends included) kept, ``n``
    points evenly by arc length between each neighbouring pair. The contour is cut at the vertex nearest
    each inner anchor; the anchor replaces that vertex."""
    if n < 0:
        raise ContourError(f"--resample must be 0 or more, not {n}")
    line = np.asarray(contour, np.float64)
    cuts = [0] + [_closest_index(line, a) for a in anchors[1:-1]] + [len(line) - 1]
    if any(b <= a for a, b in zip(cuts[:-1], cuts[1:])):
        raise ContourError("the semantic points do not lie in order along the contour")
    pieces = []
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        piece = line[a:b + 1].copy()
        piece[0], piece[-1] = anchors[i], anchors[i + 1]
        res = arc_resample(piece, n + 2)
        pieces.append(res if i == 0 else res[1:])
    return np.concatenate(pieces)


def resample_segment(segment: Segment, n: int) -> Segment:
    """Every contour of the segment with ``n`` points between neighbouring semantic points."""
    specs = {s.name: s for s in _specs(segment.name)}
    contours = {}
    for name, contour in segment.contours.items():
        anchors = [segment.semantic[s] for s in specs[name].semantic]
        contours[name] = resample_contour(contour, anchors, n)
    return Segment(segment.name, contours, dict(segment.semantic))


def loop_points(segment: Segment, loop: str) -> np.ndarray:
    """A closed loop of the segment (upper contour forward, lower contour back, shared ends once), (m, 2)."""
    upper, lower = LOOPS[segment.name][loop]
    a, b = segment.contours[upper], segment.contours[lower]
    return np.concatenate([a, b[-2:0:-1]])


def polyline_distance(points: np.ndarray, polyline: np.ndarray, closed: bool = False) -> np.ndarray:
    """Distance from each point (k, 2) to the nearest place on a polyline (m, 2)."""
    p = np.asarray(points, np.float64)[:, None, :]
    line = np.asarray(polyline, np.float64)
    if closed:
        line = np.concatenate([line, line[:1]])
    a, b = line[:-1][None], line[1:][None]
    ab = b - a
    denom = np.maximum((ab ** 2).sum(-1), 1e-12)
    t = np.clip(((p - a) * ab).sum(-1) / denom, 0.0, 1.0)
    nearest = a + t[..., None] * ab
    return np.linalg.norm(p - nearest, axis=-1).min(axis=1)
