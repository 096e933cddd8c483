"""Pictures of frames with their contours drawn: all segments in colour, or one in colour and the rest grey;
the whole image or a crop around the face; scaled."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .contours import SEGMENTS, Segment

COLOURS = {"right_eye": (255, 160, 0), "left_eye": (0, 200, 0), "lips": (40, 40, 255)}   # BGR
GREY = (150, 150, 150)
SEMANTIC = (0, 230, 255)


class RenderError(ValueError):
    """Render settings that cannot be met."""


@dataclass(frozen=True)
class RenderOptions:
    highlight: str | None = None      # one segment in colour, the others grey; None: all in colour
    crop: bool = False                # a crop around the face instead of the full image
    margin: float = 0.3               # crop margin, as a fraction of the contours' extent
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.highlight is not None and self.highlight not in SEGMENTS:
            raise RenderError(f"--highlight must be one of {', '.join(SEGMENTS)}, not {self.highlight!r}")
        if not self.scale > 0:
            raise RenderError(f"--scale must be positive, not {self.scale}")
        if self.margin < 0:
            raise RenderError("--margin cannot be negative")


def render(image: np.ndarray, segments: dict[str, Segment], options: RenderOptions = RenderOptions()) -> np.ndarray:
    """A new BGR picture: the image (or its face crop), scaled, with the contours drawn anti-aliased."""
    x0, y0 = 0.0, 0.0
    canvas = image
    if options.crop and segments:
        pts = np.concatenate([s.points() for s in segments.values()])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        pad = (hi - lo).max() * options.margin
        h, w = image.shape[:2]
        x0, y0 = max(0, int(lo[0] - pad)), max(0, int(lo[1] - pad))
        x1, y1 = min(w, int(np.ceil(hi[0] + pad)) + 1), min(h, int(np.ceil(hi[1] + pad)) + 1)
        canvas = image[y0:y1, x0:x1]
    s = options.scale
    out = cv2.resize(canvas, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA) \
        if s != 1 else canvas.copy()
    thickness = max(1, int(round(s)))
    shift = 4                       # fixed-point sub-pixel drawing
    order = sorted(segments, key=lambda n: n == options.highlight)     # the highlighted one on top
    for name in order:
        seg = segments[name]
        colour = COLOURS[name] if options.highlight in (None, name) else GREY
        for line in seg.contours.values():
            p = ((line - (x0, y0) + 0.5) * s - 0.5) * (1 << shift)
            cv2.polylines(out, [np.round(p).astype(np.int32)], False, colour, thickness, cv2.LINE_AA, shift)
        for point in seg.semantic.values():
            q = ((point - (x0, y0) + 0.5) * s - 0.5) * (1 << shift)
            cv2.circle(out, tuple(int(v) for v in np.round(q)), (thickness + 1) << shift,
                       SEMANTIC if options.highlight in (None, name) else GREY, -1, cv2.LINE_AA, shift)
    return out


def write_picture(path, picture: np.ndarray, quality: int = 90) -> None:
    """PNG or JPEG by the file's extension; ``quality`` 1..100 for JPEG."""
    suffix = str(path).lower().rsplit(".", 1)[-1]
    if suffix in ("jpg", "jpeg"):
        if not 1 <= quality <= 100:
            raise RenderError(f"--quality must lie in 1..100, not {quality}")
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif suffix == "png":
        params = []
    else:
        raise RenderError(f"{path}: pictures are written as .png or .jpg")
    if not cv2.imwrite(str(path), picture, params):
        raise RenderError(f"could not write {path}")
