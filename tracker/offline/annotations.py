"""Training frames: an annotator's contours for some frames, kept in one annotation JSON file.

Every training frame is one segment of one frame. Its contour is a closed loop per part of the segment
(eyes: "eye"; lips: "outer" and, unless inner lips are off, "inner"): the loop's semantic points in order,
and between each semantic point and the next (the last one closing back to the first) a list of extra
points. A loop starts at the segment's end on the subject's right (right eye: outer corner; left eye:
inner corner; lips: right corner) and runs along the upper contour first. Coordinates are image pixels
(zero-based, centre of the top-left pixel at (0, 0)).

File::

    {"format": "facewire-contour-annotations", "version": 1,
     "frames": [{"name": "000120", "image": "/abs/clip.mp4", "frame_index": 120, "image_size": [w, h],
                 "segment": "lips", "neutral": true, "enabled": true,
                 "semantic_points": {"outer": [[x, y], ...], "inner": [...]},
                 "extra_points": {"outer": [[[x, y], ...], ...], "inner": [...]}}]}

``image`` is the frame's image file, or the video with ``frame_index``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .contours import LOOPS, SPECS, Segment, arc_resample, loop_points, polyline_distance, \
    resample_segment

FORMAT = "facewire-contour-annotations"
VERSION = 1
CREATE_MODES = ("regular", "extra", "auto")


class AnnotationError(ValueError):
    """An annotation file or a set of training frames that cannot be used as it is."""


@dataclass(frozen=True)
class Loop:
    semantic: np.ndarray            # (k, 2) pixels
    extra: tuple[np.ndarray, ...]   # k arrays (m_i, 2): points between semantic i and i+1 (the last closes)

    def polygon(self) -> np.ndarray:
        """The loop's points in order (semantic and extra), not repeating the first at the end."""
        parts = []
        for i in range(len(self.semantic)):
            parts.append(self.semantic[i:i + 1])
            parts.append(self.extra[i].reshape(-1, 2))
        return np.concatenate(parts)


@dataclass(frozen=True)
class TrainingFrame:
    name: str
    segment: str
    image: str
    frame_index: int | None
    image_size: tuple[int, int]
    loops: dict[str, Loop]
    neutral: bool = False
    enabled: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.segment

    def same_content(self, other: "TrainingFrame") -> bool:
        return self.loops.keys() == other.loops.keys() and all(
            self.loops[k].polygon().shape == other.loops[k].polygon().shape
            and np.allclose(self.loops[k].polygon(), other.loops[k].polygon(), atol=1e-3) for k in self.loops)


# ------------------------------------------------------------------------------------------ JSON

def _arr(value, where: str) -> np.ndarray:
    try:
        a = np.asarray(value, np.float64).reshape(-1, 2) if len(value) else np.zeros((0, 2))
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: expected a list of [x, y] pairs") from None
    if not np.isfinite(a).all():
        raise AnnotationError(f"{where}: coordinates must be finite numbers")
    return a


def frame_to_dict(tf: TrainingFrame) -> dict:
    def r(a):
        return np.round(a, 3).tolist()
    return {"name": tf.name, "image": tf.image, "frame_index": tf.frame_index,
            "image_size": list(tf.image_size), "segment": tf.segment, "neutral": tf.neutral,
            "enabled": tf.enabled,
            "semantic_points": {k: r(v.semantic) for k, v in tf.loops.items()},
            "extra_points": {k: [r(e) for e in v.extra] for k, v in tf.loops.items()}}


def frame_from_dict(doc: dict, where: str) -> TrainingFrame:
    try:
        name, segment, image = doc["name"], doc["segment"], doc["image"]
        semantic, extra = doc["semantic_points"], doc.get("extra_points", {})
        size = tuple(int(v) for v in doc["image_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationError(f"{where}: a training frame lacks {exc} (needs name, segment, image, image_size, "
                              f"semantic_points)") from None
    where = f"{where}: frame {name} {segment}"
    if segment not in LOOPS:
        raise AnnotationError(f"{where}: unknown segment {segment!r}")
    loops = {}
    for loop, pts in semantic.items():
        if loop not in LOOPS[segment]:
            raise AnnotationError(f"{where}: segment {segment} has no loop {loop!r} "
                                  f"(its loops: {', '.join(LOOPS[segment])})")
        sem = _arr(pts, f"{where} {loop} semantic points")
        if len(sem) < 2:
            raise AnnotationError(f"{where} {loop}: needs at least two semantic points")
        ex = extra.get(loop, [[] for _ in sem])
        if len(ex) != len(sem):
            raise AnnotationError(f"{where} {loop}: {len(sem)} semantic points need {len(sem)} lists of extra "
                                  f"points (one per neighbouring pair, the last closing the loop), not {len(ex)}")
        loops[loop] = Loop(sem, tuple(_arr(e, f"{where} {loop} extra points") for e in ex))
    return TrainingFrame(name, segment, image, doc.get("frame_index"), size, loops,
                         bool(doc.get("neutral", False)), bool(doc.get("enabled", True)))


def load_annotations(path: Path) -> list[TrainingFrame]:
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"annotation file {path} does not exist")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise AnnotationError(f"{path} is not a facewire annotation file (format is not {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise AnnotationError(f"{path}: annotation format version {doc.get('version')!r} is not supported")
    frames = [frame_from_dict(f, str(path)) for f in doc.get("frames", [])]
    keys = [f.key for f in frames]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise AnnotationError(f"{path}: frames annotated twice for the same segment: "
                              + ", ".join(f"{n} ({s})" for n, s in dupes))
    return frames


def save_annotations(path: Path, frames: list[TrainingFrame]) -> None:
    doc = {"format": FORMAT, "version": VERSION,
           "frames": [frame_to_dict(f) for f in sorted(frames, key=lambda f: (f.segment, f.name))]}
    Path(path).write_text(json.dumps(doc, indent=1))


# ------------------------------------------------------------------------------------------ geometry

def loop_segment(segment: str, loops: dict[str, np.ndarray],
                 anchors: dict[str, list[int]] | None = None) -> Segment:
    """A segment (open contours and semantic points) from closed annotated loops.

    The loop's start is its subject's-right end. With ``anchors`` (the loop indices of the annotator's
    canonical semantic points: both corners, and for lips the upper and lower centres between them) those
    are used. Otherwise the far end is the loop point farthest from the start and lip centres are where
    each contour crosses the perpendicular bisector of the corners. The upper contour runs start -> far
    end, the lower one is the rest of the loop reversed.
    """
    contours, semantic = {}, {}
    names = {"eye": ("upper", "lower"), "outer": ("outer_upper", "outer_lower"),
             "inner": ("inner_upper", "inner_lower")}
    for loop, poly in loops.items():
        poly = np.asarray(poly, np.float64)
        given = (anchors or {}).get(loop)
        if given is not None:
            contours.update(_split_at_anchors(segment, loop, poly, given, names[loop], semantic))
            continue
        far = int(np.argmax(np.linalg.norm(poly - poly[0], axis=1)))
        if far == 0 or far == len(poly) - 1 or len(poly) < 3:
            raise AnnotationError(f"a {segment} {loop} loop needs points on both sides of its far corner")
        upper = poly[:far + 1]
        lower = np.concatenate([poly[:1], poly[far:][::-1]])
        up_name, low_name = names[loop]
        contours[up_name], contours[low_name] = upper, lower
        spec = {s.name: s for s in SPECS[segment]}
        ends = spec[up_name].semantic
        semantic[ends[0]], semantic[ends[-1]] = poly[0].copy(), poly[far].copy()
        if len(ends) == 3:
            axis = poly[far] - poly[0]
            mid = (poly[far] + poly[0]) / 2
            for cname in (up_name, low_name):
                line = contours[cname]
                proj = (line - mid) @ axis
                k = int(np.searchsorted(proj, 0.0)) if np.all(np.diff(proj) > 0) else \
                    int(np.argmin(np.abs(proj)))
                k = min(max(k, 1), len(line) - 1)
                a, b = line[k - 1], line[k]
                pa, pb = proj[k - 1], proj[k]
                t = 0.5 if pb == pa else float(np.clip(-pa / (pb - pa), 0.0, 1.0))
                centre = a + t * (b - a)
                cn = spec[cname].semantic[1]
                semantic[cn] = centre
                contours[cname] = np.concatenate([line[:k], centre[None], line[k:]])
    return Segment(segment, contours, semantic)


def _split_at_anchors(segment: str, loop: str, poly: np.ndarray, idx: list[int], names: tuple[str, str],
                      semantic: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    spec = {s.name: s for s in SPECS[segment]}
    up_name, low_name = names
    if len(idx) == 2:
        far = idx[1]
        centres = []
    else:
        far = idx[2]
        centres = [idx[1], idx[3]]
    upper = poly[:far + 1]
    lower = np.concatenate([poly[:1], poly[far:][::-1]])
    ends = spec[up_name].semantic
    semantic[ends[0]], semantic[ends[-1]] = poly[0].copy(), poly[far].copy()
    if centres:
        semantic[spec[up_name].semantic[1]] = poly[centres[0]].copy()
        semantic[spec[low_name].semantic[1]] = poly[centres[1]].copy()
    return {up_name: upper, low_name: lower}


def _anchor_indices(tf: TrainingFrame) -> dict[str, list[int]]:
    """Loop indices of the semantic points when they are the canonical ones (2 per eye, 4 per lip loop)."""
    result = {}
    for name, loop in tf.loops.items():
        want = 2 if name == "eye" else 4
        if len(loop.semantic) == want:
            sizes = [1 + len(e) for e in loop.extra]
            result[name] = [int(v) for v in np.concatenate([[0], np.cumsum(sizes)[:-1]])]
    return result


def training_segment(tf: TrainingFrame, resample: int, smooth: bool = True) -> Segment:
    """The training frame's contours as a resampled segment, comparable point by point with detections.

    With ``smooth`` the contours are smooth curves through the annotated points (an annotator marks points
    on a curved lid or lip, not the corners of a polygon); without, straight lines join them."""
    loops = {k: v.polygon() for k, v in tf.loops.items()}
    seg = loop_segment(tf.segment, loops, _anchor_indices(tf))
    if smooth:
        seg = Segment(seg.name, {k: _smooth_through(v, seg.semantic) for k, v in seg.contours.items()},
                      seg.semantic)
    return resample_segment(seg, resample)


def _smooth_through(line: np.ndarray, semantic: dict[str, np.ndarray]) -> np.ndarray:
    """A dense centripetal Catmull-Rom curve through the annotated points of an open contour, keeping the
    semantic points as vertices (so resampling still finds them)."""
    from .inner_lips import catmull_rom
    if len(line) < 3:
        return line
    dense = catmull_rom(line, 8)
    return dense


def _canonical_loops(seg: Segment) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Each loop of a detected segment as a polygon and the indices of its canonical semantic points."""
    result = {}
    for loop, (upper, lower) in LOOPS[seg.name].items():
        if upper not in seg.contours:
            continue
        poly = loop_points(seg, loop)
        up = seg.contours[upper]
        anchors = [0]
        spec = {s.name: s for s in SPECS[seg.name]}
        if len(spec[upper].semantic) == 3:
            anchors.append(int(np.argmin(np.linalg.norm(up - seg.semantic[spec[upper].semantic[1]], axis=1))))
        anchors.append(len(up) - 1)
        if len(spec[lower].semantic) == 3:
            low = seg.contours[lower]
            j = int(np.argmin(np.linalg.norm(low - seg.semantic[spec[lower].semantic[1]], axis=1)))
            anchors.append(len(up) - 1 + (len(low) - 1 - j))
        result[loop] = (poly, anchors)
    return result


def _closed_piece(poly: np.ndarray, a: int, b: int) -> np.ndarray:
    return poly[a:b + 1] if b > a else np.concatenate([poly[a:], poly[:1]])


def _fit_extra(piece: np.ndarray, threshold: float, limit: int = 50) -> np.ndarray:
    for n in range(limit + 1):
        pts = arc_resample(piece, n + 2)
        if polyline_distance(piece, pts).max() <= threshold:
            return pts[1:-1]
    return arc_resample(piece, limit + 2)[1:-1]


def training_from_segment(seg: Segment, name: str, image: str, frame_index: int | None,
                          image_size: tuple[int, int], mode: str = "extra", count: int = 4,
                          threshold: float = 0.5, neutral: bool = False, enabled: bool = True) -> TrainingFrame:
    """A training frame started from a (precomputed) segment, for the annotator to move the points.

    regular: ``count`` semantic points evenly around each loop, no extra points; extra: the canonical
    semantic points (corners, lip centres) with ``count`` extra points evenly between each pair; auto: the
    canonical semantic points with, per pair, as few extra points as keep the precomputed contour within
    ``threshold`` pixels of the polyline through them."""
    if mode not in CREATE_MODES:
        raise AnnotationError(f"mode must be one of {', '.join(CREATE_MODES)}, not {mode!r}")
    if mode == "regular" and count < 3:
        raise AnnotationError(f"regular mode needs at least 3 semantic points per loop, not {count}")
    if count < 0 or threshold <= 0:
        raise AnnotationError("the extra point count cannot be negative and the threshold must be positive")
    loops = {}
    for loop, (poly, anchors) in _canonical_loops(seg).items():
        if mode == "regular":
            closed = np.concatenate([poly, poly[:1]])
            sem = arc_resample(closed, count + 1)[:-1]
            loops[loop] = Loop(sem, tuple(np.zeros((0, 2)) for _ in sem))
            continue
        sem = poly[anchors]
        extras = []
        for i, a in enumerate(anchors):
            b = anchors[(i + 1) % len(anchors)]
            piece = _closed_piece(poly, a, b)
            extras.append(arc_resample(piece, count + 2)[1:-1] if mode == "extra" else _fit_extra(piece, threshold))
        loops[loop] = Loop(sem, tuple(extras))
    return TrainingFrame(name, seg.name, image, frame_index, image_size, loops, neutral, enabled)


# ------------------------------------------------------------------------------------------ checks

def usable_frames(frames: list[TrainingFrame], segment: str) -> tuple[list[TrainingFrame], TrainingFrame]:
    """The enabled training frames of a segment and its neutral one; errors say what is wrong."""
    mine = [f for f in frames if f.segment == segment]
    enabled = [f for f in mine if f.enabled]
    if len(enabled) < 2:
        raise AnnotationError(f"segment {segment}: {len(enabled)} enabled training frame(s) "
                              f"({len(mine)} in all); at least two are needed, one of them the neutral frame")
    neutrals = [f for f in mine if f.neutral]
    if not neutrals:
        raise AnnotationError(f"segment {segment}: no training frame is marked neutral")
    if len(neutrals) > 1:
        raise AnnotationError(f"segment {segment}: several neutral frames ({', '.join(f.name for f in neutrals)}); "
                              f"mark exactly one")
    if not neutrals[0].enabled:
        raise AnnotationError(f"segment {segment}: the neutral frame {neutrals[0].name} is disabled; enable it or "
                              f"mark an enabled frame neutral")
    ref = neutrals[0]
    for f in enabled:
        if f.loops.keys() != ref.loops.keys():
            raise AnnotationError(f"segment {segment}: frame {f.name} has loops {sorted(f.loops)} but the neutral "
                                  f"frame {ref.name} has {sorted(ref.loops)}")
        for loop in ref.loops:
            if len(f.loops[loop].semantic) != len(ref.loops[loop].semantic):
                raise AnnotationError(
                    f"segment {segment}: frame {f.name} has {len(f.loops[loop].semantic)} semantic points on its "
                    f"{loop} loop but the neutral frame {ref.name} has {len(ref.loops[loop].semantic)}; every "
                    f"training frame of a segment needs the same number")
    return enabled, ref


# ------------------------------------------------------------------------------------------ merging

def parse_remaps(items: list[str] | None) -> list[tuple[str, str]]:
    result = []
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise AnnotationError(f"--remap {item!r} must be OLD=NEW (a path prefix and its replacement)")
        result.append((old, new))
    return result


def remap_frames(frames: list[TrainingFrame], remaps: list[tuple[str, str]]) -> list[TrainingFrame]:
    out = []
    for f in frames:
        image = f.image
        for old, new in remaps:
            if image.startswith(old):
                image = new + image[len(old):]
                break
        out.append(replace(f, image=image))
    return out


def missing_images(frames: list[TrainingFrame]) -> list[TrainingFrame]:
    return [f for f in frames if not Path(f.image).exists()]


def merge_annotations(ours: list[TrainingFrame], theirs: list[TrainingFrame], on_clash: str | None = None,
                      neutral: str | None = None) -> list[TrainingFrame]:
    """Theirs added to ours. A frame annotated in both with different points is a clash (``on_clash``:
    keep ours, take theirs); two different neutral frames for a segment need ``neutral`` (ours, theirs)."""
    by_key = {f.key: f for f in ours}
    clashes = [f for f in theirs if f.key in by_key and not by_key[f.key].same_content(f)]
    if clashes and on_clash not in ("ours", "theirs"):
        raise AnnotationError("frames annotated differently in both files: "
                              + ", ".join(f"{f.name} ({f.segment})" for f in clashes)
                              + "; choose --on-clash ours or --on-clash theirs")
    merged = dict(by_key)
    for f in theirs:
        if f.key not in merged or on_clash == "theirs":
            merged[f.key] = f
    for segment in {f.segment for f in merged.values()}:
        our_n = {f.name for f in ours if f.segment == segment and f.neutral}
        their_n = {f.name for f in theirs if f.segment == segment and f.neutral}
        if our_n and their_n and our_n != their_n:
            if neutral not in ("ours", "theirs"):
                raise AnnotationError(f"segment {segment}: the neutral frame is {', '.join(sorted(our_n))} here "
                                      f"but {', '.join(sorted(their_n))} in the imported file; choose "
                                      f"--neutral ours or --neutral theirs")
            keep = our_n if neutral == "ours" else their_n
            for key, f in merged.items():
                if f.segment == segment:
                    merged[key] = replace(f, neutral=f.name in keep)
    return list(merged.values())


def _signature(f: TrainingFrame) -> tuple:
    return tuple(sorted((k, len(v.semantic)) for k, v in f.loops.items()))


def check_counts(frames: list[TrainingFrame], new: TrainingFrame | None = None) -> None:
    """Reject frames whose semantic point counts differ from the others' in their segment: ``new`` against
    the rest, or else every frame against its segment's most common counts (the neutral frame's on a tie)."""
    if new is not None:
        others = [f for f in frames if f.segment == new.segment and f.key != new.key]
        if others:
            sigs = [_signature(f) for f in others]
            common = max(sigs, key=sigs.count)
            if _signature(new) != common:
                raise AnnotationError(f"segment {new.segment}: frame {new.name} has semantic point counts "
                                      f"{_signature(new)} but the segment's other training frames have {common}")
        return
    for segment in {f.segment for f in frames}:
        mine = sorted((f for f in frames if f.segment == segment), key=lambda f: not f.neutral)
        sig = [_signature(f) for f in mine]
        common = max(sig, key=sig.count)
        odd = [f.name for f, s in zip(mine, sig) if s != common]
        if odd:
            raise AnnotationError(f"segment {segment}: frame(s) {', '.join(odd)} have semantic point counts "
                                  f"{[s for s in sig if s != common][0]} but the others have {common}")
