"""Inner lip contours: measured by the mesh, synthesised from the outer contour, or left out.

Synthesis puts control points between the mouth centre (the mean of the outer corners and centres) and
the outer contour: ``c + w * (p - c)`` for an outer point p, with a weight per kind of point (1 = on the
outer contour, 0 = at the centre). "corner and middle" uses the corners and the upper/lower centres;
"corner, arc and middle" adds the outer contour's halfway point between each corner and centre. The inner
contour passes through the control points, straight (a rhombus with corner-and-middle) or smoothed by a
Catmull-Rom curve, and is resampled like every other contour.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .contours import INNER_LIP_CONTOURS, ContourError, Segment, arc_resample, resample_contour

MODES = ("mesh", "synthesize", "off")
POINT_SETS = ("corner-middle", "corner-arc-middle")


@dataclass(frozen=True)
class InnerLipOptions:
    mode: str = "mesh"
    points: str = "corner-arc-middle"
    corner_weight: float = 0.95
    arc_weight: float = 0.55
    middle_weight: float = 0.35
    smooth: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ContourError(f"inner lips mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.points not in POINT_SETS:
            raise ContourError(f"inner lip points must be one of {', '.join(POINT_SETS)}, not {self.points!r}")
        for name in ("corner_weight", "arc_weight", "middle_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ContourError(f"{name.replace('_', ' ')} must lie in 0..1 (0 = mouth centre, 1 = outer "
                                   f"contour), not {getattr(self, name)}")


PRESETS = {
    "smooth": InnerLipOptions("synthesize", "corner-arc-middle", 0.95, 0.55, 0.35, True),
    "rhombus": InnerLipOptions("synthesize", "corner-middle", 0.95, 0.55, 0.35, False),
}


def catmull_rom(points: np.ndarray, per_span: int = 16) -> np.ndarray:
    """A dense centripetal Catmull-Rom curve through ``points`` (open, ends kept)."""
    p = np.asarray(points, np.float64)
    if len(p) < 3:
        return p
    ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    out = [p[:1]]
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        t0 = 0.0
        t1 = t0 + max(np.linalg.norm(p1 - p0) ** 0.5, 1e-6)
        t2 = t1 + max(np.linalg.norm(p2 - p1) ** 0.5, 1e-6)
        t3 = t2 + max(np.linalg.norm(p3 - p2) ** 0.5, 1e-6)
        t = np.linspace(t1, t2, per_span + 1)[1:, None]
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        out.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    return np.concatenate(out)


def _halfway(contour: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The point halfway by arc length along the contour between the vertices nearest start and end."""
    i = int(np.argmin(np.linalg.norm(contour - start, axis=1)))
    j = int(np.argmin(np.linalg.norm(contour - end, axis=1)))
    a, b = min(i, j), max(i, j)
    return arc_resample(contour[a:b + 1], 3)[1]


def apply_inner_lips(lips: Segment, options: InnerLipOptions, resample: int | None) -> Segment:
    """The lips segment with its inner contours as ``options`` ask (mesh: unchanged)."""
    if options.mode == "mesh":
        return lips
    contours = {k: v for k, v in lips.contours.items() if k not in INNER_LIP_CONTOURS}
    semantic = {k: v for k, v in lips.semantic.items() if not k.startswith("inner_")}
    if options.mode == "off":
        return Segment(lips.name, contours, semantic)
    s = lips.semantic
    right, left, up, low = s["right_corner"], s["left_corner"], s["upper_centre"], s["lower_centre"]
    centre = (right + left + up + low) / 4.0

    def toward(p: np.ndarray, w: float) -> np.ndarray:
        return centre + w * (p - centre)

    ir, il = toward(right, options.corner_weight), toward(left, options.corner_weight)
    semantic.update(inner_right_corner=ir, inner_left_corner=il)
    for name, outer, mid, key in (("inner_upper", "outer_upper", up, "inner_upper_centre"),
                                  ("inner_lower", "outer_lower", low, "inner_lower_centre")):
        m = toward(mid, options.middle_weight)
        semantic[key] = m
        ctrl = [ir, m, il]
        if options.points == "corner-arc-middle":
            arc_r = toward(_halfway(lips.contours[outer], right, mid), options.arc_weight)
            arc_l = toward(_halfway(lips.contours[outer], mid, left), options.arc_weight)
            ctrl = [ir, arc_r, m, arc_l, il]
        line = catmull_rom(np.array(ctrl)) if options.smooth else np.array(ctrl)
        n = 20 if resample is None else resample
        contours[name] = resample_contour(line, [ir, m, il], n)
    return Segment(lips.name, contours, semantic)
