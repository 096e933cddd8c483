"""Learning one actor's correction of the detected contours from a few annotated training frames.

Everything happens in each segment's own normalised frame: the similarity (shift, rotation, scale) that
puts the segment's detected semantic points at their mean, the line from its subject's-right end to its
subject's-left end along +x, and their RMS spread at 1. A correction learnt there carries across head
motion, roll and distance.

For every enabled training frame the detected contours x (resampled, optionally smoothed) and the
annotated ones t (resampled the same way, point for point between the same semantic points) give a
correction d: how far t lies from x along x's normal at each point (only the normal part moves a
contour; the part along it is where an annotator happened to put points, and measured as noise; with
``slide_semantic`` the semantic points also move by their own 2-D offsets, stretching the contour). The
model is d = b + W (x - x_neutral): an offset b per point (what the annotator always does differently:
the median over the training frames, shrunk towards zero where the frames disagree more than they agree)
plus a ridge-regularised linear term in how the detected shape differs from the neutral frame's (what
changes with expression: blinks, open mouth). With two frames W has rank one; the ridge keeps it from
amplifying shape differences the training never saw. The correction is smoothed
along each contour (final smoothness) and, optionally, refined by the image: each point searches along its
normal for the grey (or colour) profile the annotated contours had at the training frames, for
``iterations`` rounds.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from .annotations import AnnotationError, TrainingFrame, training_segment, usable_frames
from .contours import SPECS, Segment

log = logging.getLogger(__name__)

PROFILE_HALF = 6           # samples on each side of a point in an intensity profile
PROFILE_STEP = 0.02        # profile sample spacing, in normalised segment units
SEARCH_HALF = 5            # offsets searched on each side, in profile steps


@dataclass(frozen=True)
class ComputeSettings:
    initial_smoothness: float = 0.0    # Gaussian sigma (points) along the detected contour before correcting
    final_smoothness: float = 3.0      # Gaussian sigma (points) applied to the correction along the contour
    regularisation: float = 100.0      # ridge strength of the shape term, relative to the training spread
    iterations: int = 0                # image-profile refinement rounds after the shape correction
    grayscale: bool = True             # profiles on grey levels (True) or the three colour channels
    slide_semantic: bool = False       # let semantic points move along the segment's axis too

    def __post_init__(self) -> None:
        if self.initial_smoothness < 0 or self.final_smoothness < 0:
            raise AnnotationError("smoothness values are Gaussian widths in points and cannot be negative")
        if self.regularisation <= 0:
            raise AnnotationError("the regularisation must be positive")
        if self.iterations < 0:
            raise AnnotationError("iterations cannot be negative")


@dataclass(frozen=True)
class Frame2D:
    centre: np.ndarray
    rotation: np.ndarray     # 2x2; normalised = rotation.T @ (p - centre) / scale
    scale: float

    def to_local(self, p: np.ndarray) -> np.ndarray:
        return (np.asarray(p) - self.centre) @ self.rotation / self.scale

    def to_image(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(q) * self.scale @ self.rotation.T + self.centre


def segment_frame(seg: Segment) -> Frame2D:
    """The segment's normalised frame from its semantic points (see the module docstring)."""
    specs = SPECS[seg.name]
    first = seg.semantic[specs[0].semantic[0]]
    last = seg.semantic[specs[0].semantic[-1]]
    names = [n for s in specs for n in s.semantic if s.name in seg.contours]
    pts = np.array([seg.semantic[n] for n in dict.fromkeys(names)])
    centre = pts.mean(axis=0)
    scale = float(np.sqrt(((pts - centre) ** 2).sum(axis=1).mean()))
    d = last - first
    angle = np.arctan2(d[1], d[0])
    c, s = np.cos(angle), np.sin(angle)
    return Frame2D(centre, np.array([[c, -s], [s, c]]), max(scale, 1e-6))


def _smooth_open(line: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along an open contour, ends held (reflected so the ends keep their place)."""
    if sigma <= 0 or len(line) < 3:
        return line
    radius = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    first, last = line[0], line[-1]
    pad = np.concatenate([2 * first - line[radius:0:-1], line, 2 * last - line[-2:-radius - 2:-1]])
    if len(pad) < len(line) + 2 * radius:       # contour shorter than the kernel
        return line
    out = np.stack([np.convolve(pad[:, d], k, mode="valid") for d in range(line.shape[1])], axis=1)
    out[0], out[-1] = first, last
    return out


def _smooth_values(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of per-point values along an open contour (ends reflected, not held)."""
    if sigma <= 0 or len(values) < 3:
        return values
    radius = min(int(np.ceil(3 * sigma)), len(values) - 1)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([values[radius:0:-1], values, values[-2:-radius - 2:-1]])
    return np.stack([np.convolve(pad[:, d], k, mode="valid") for d in range(values.shape[1])], axis=1)


def _vector(seg: Segment, names: tuple[str, ...], frame: Frame2D, sigma: float) -> np.ndarray:
    return np.concatenate([frame.to_local(_smooth_open(seg.contours[n], sigma)) for n in names]).ravel()


def _normals(line: np.ndarray) -> np.ndarray:
    t = np.gradient(line, axis=0)
    n = np.stack([-t[:, 1], t[:, 0]], axis=1)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)


NORMAL_SMOOTHING = 2.0     # Gaussian width (points) of the contour the normals are taken from


def _loop_normals(points: np.ndarray, counts: tuple[int, ...]) -> np.ndarray:
    """Unit normals of each open contour in a stack of contours (``counts`` points each), taken from the
    contour smoothed along itself, so point-to-point jitter of the detection does not turn the correction."""
    out, start = [], 0
    for n in counts:
        out.append(_normals(_smooth_open(points[start:start + n], NORMAL_SMOOTHING)))
        start += n
    return np.concatenate(out)


def _anchor_rows(counts: tuple[int, ...], semantic_counts: tuple[int, ...]) -> list[np.ndarray]:
    """Per contour, the indices of its semantic points in the resampled contour (evenly spaced)."""
    return [np.round(np.linspace(0, n - 1, k)).astype(int) for n, k in zip(counts, semantic_counts)]


def _stretch(anchor_offsets: np.ndarray, counts: tuple[int, ...], anchors: list[np.ndarray]) -> np.ndarray:
    """Per point, the offset interpolated linearly between its contour's semantic points' offsets."""
    out, k = [], 0
    for n, rows in zip(counts, anchors):
        a = anchor_offsets[k:k + len(rows)]
        idx = np.arange(n)
        out.append(np.stack([np.interp(idx, rows, a[:, 0]), np.interp(idx, rows, a[:, 1])], axis=1))
        k += len(rows)
    return np.concatenate(out)


def _encode(y: np.ndarray, x: np.ndarray, counts: tuple[int, ...], anchors: list[np.ndarray],
            slide: bool = True) -> np.ndarray:
    """A full per-point correction (m, 2) as [semantic points' 2-D offsets, normal residuals]."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    anchor_offsets = np.concatenate([y[s + rows] for s, rows in zip(starts, anchors)])
    if not slide:
        anchor_offsets = anchor_offsets * 0.0
    residual = y - _stretch(anchor_offsets, counts, anchors)
    normal = (residual * _loop_normals(x, counts)).sum(axis=1)
    return np.concatenate([anchor_offsets.ravel(), normal])


def _profiles(image: np.ndarray, line: np.ndarray, normals: np.ndarray, step_px: float, half: int) -> np.ndarray:
    """(n, 2 half + 1, channels) intensities along each point's normal, sampled bilinearly."""
    offs = np.arange(-half, half + 1) * step_px
    xy = line[:, None, :] + offs[None, :, None] * normals[:, None, :]
    mx, my = xy[..., 0].astype(np.float32), xy[..., 1].astype(np.float32)
    vals = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return vals.reshape(len(line), 2 * half + 1, -1).astype(np.float64)


def _profile_feature(p: np.ndarray) -> np.ndarray:
    """Normalised derivative of a profile (ASM's choice: insensitive to brightness and contrast)."""
    g = np.diff(p, axis=-2).reshape(*p.shape[:-2], -1)
    return g / np.maximum(np.abs(g).sum(axis=-1, keepdims=True), 1e-6)


def _prepare_image(image: np.ndarray, grayscale: bool) -> np.ndarray:
    if grayscale and image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return image.astype(np.float32)


@dataclass(frozen=True)
class SegmentModel:
    segment: str
    contours: tuple[str, ...]
    counts: tuple[int, ...]
    semantic_counts: tuple[int, ...]
    neutral_shape: np.ndarray       # (D,) detected neutral shape, normalised
    offset: np.ndarray              # b at x = x_neutral
    weights: np.ndarray             # (D, D) or empty when the shape term is off
    profile_mean: np.ndarray | None # (points, features)
    profile_var: np.ndarray | None
    settings: ComputeSettings

    def correct(self, seg: Segment, image: np.ndarray | None = None) -> Segment:
        """The corrected segment (pixels) for one detected segment."""
        missing = [c for c in self.contours if c not in seg.contours]
        counts = tuple(len(seg.contours[c]) for c in self.contours if c in seg.contours)
        if missing or counts != self.counts:
            raise AnnotationError(f"segment {self.segment}: the detection has contours "
                                  f"{ {c: len(v) for c, v in seg.contours.items()} } but the model was trained on "
                                  f"{dict(zip(self.contours, self.counts))}; detect and train with the same "
                                  f"--resample and inner-lip settings")
        frame = segment_frame(seg)
        x = _vector(seg, self.contours, frame, self.settings.initial_smoothness)
        z = self.offset + (self.weights @ (x - self.neutral_shape) if self.weights.size else 0.0)
        anchors = _anchor_rows(self.counts, self.semantic_counts)
        n_anchor = sum(len(a) for a in anchors)
        base = x.reshape(-1, 2)
        normals = _loop_normals(base, self.counts)
        d = z[2 * n_anchor:].copy()
        out, start = {}, 0
        for n in self.counts:
            d[start:start + n] = _smooth_values(d[start:start + n, None], self.settings.final_smoothness)[:, 0]
            start += n
        pts = base + _stretch(z[:2 * n_anchor].reshape(-1, 2), self.counts, anchors) + d[:, None] * normals
        if self.settings.iterations and image is not None and self.profile_mean is not None:
            pts = self._refine(pts, frame, image)
        start = 0
        for name, n in zip(self.contours, self.counts):
            out[name] = frame.to_image(pts[start:start + n])
            start += n
        return Segment(seg.name, out, _semantic_from(seg.name, out))

    def _refine(self, pts: np.ndarray, frame: Frame2D, image: np.ndarray) -> np.ndarray:
        img = _prepare_image(image, self.settings.grayscale)
        step = PROFILE_STEP * frame.scale
        for _ in range(self.settings.iterations):
            img_pts = frame.to_image(pts)
            moves = np.zeros(len(pts))
            start = 0
            for n in self.counts:
                line = img_pts[start:start + n]
                nrm = _normals(line)
                prof = _profiles(img, line, nrm, step, PROFILE_HALF + SEARCH_HALF)
                mean = self.profile_mean[start:start + n]
                var = self.profile_var[start:start + n]
                costs = []
                for o in range(2 * SEARCH_HALF + 1):
                    f = _profile_feature(prof[:, o:o + 2 * PROFILE_HALF + 1])
                    costs.append((((f - mean) ** 2) / var).sum(axis=1) + 0.5 * ((o - SEARCH_HALF) ** 2))
                best = np.argmin(np.stack(costs, axis=1), axis=1) - SEARCH_HALF
                move = _smooth_values(best[:, None].astype(float), max(self.settings.final_smoothness, 1.0))[:, 0]
                move[0] = move[-1] = 0.0          # corners stay where the shape model put them
                moves[start:start + n] = move
                start += n
            normals_local = np.concatenate([_normals(pts[s:s + n]) for s, n in
                                            zip(np.cumsum((0,) + self.counts[:-1]), self.counts)])
            pts = pts + 0.5 * (moves * PROFILE_STEP)[:, None] * normals_local
        return pts


def _semantic_from(segment: str, contours: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Semantic points of corrected contours: the ends, and the middle point where a contour has three."""
    sem = {}
    for spec in SPECS[segment]:
        line = contours.get(spec.name)
        if line is None:
            continue
        sem[spec.semantic[0]], sem[spec.semantic[-1]] = line[0].copy(), line[-1].copy()
        if len(spec.semantic) == 3:
            sem[spec.semantic[1]] = line[(len(line) - 1) // 2].copy()
    return sem


def train_segment(segment: str, frames: list[TrainingFrame], detected: dict[str, Segment],
                  images: dict[str, np.ndarray] | None, resample: int,
                  settings: ComputeSettings = ComputeSettings()) -> SegmentModel:
    """Learn a segment's correction. ``detected`` maps a training frame's name to its detected segment."""
    enabled, neutral = usable_frames(frames, segment)
    lacking = [f.name for f in enabled if f.name not in detected]
    if lacking:
        raise AnnotationError(f"segment {segment}: no detection for training frame(s) {', '.join(lacking)} "
                              f"(no face found there, or the frame is not in the project)")
    ref = detected[neutral.name]
    names = tuple(c for c in (s.name for s in SPECS[segment]) if c in ref.contours)
    counts = tuple(len(ref.contours[c]) for c in names)
    spec = {sp.name: sp for sp in SPECS[segment]}
    semantic_counts = tuple(len(spec[c].semantic) for c in names)
    anchors = _anchor_rows(counts, semantic_counts)
    xs, ys, feats = [], [], []
    for f in enabled:
        det = detected[f.name]
        target = training_segment(f, resample)
        if tuple(c for c in names if c in target.contours) != names:
            raise AnnotationError(f"segment {segment}: training frame {f.name} has contours "
                                  f"{sorted(target.contours)} but the detection has {sorted(names)}")
        frame = segment_frame(det)
        x = _vector(det, names, frame, settings.initial_smoothness)
        t = _vector(target, names, frame, 0.0)
        if x.shape != t.shape:
            raise AnnotationError(f"segment {segment}: frame {f.name}: {t.size // 2} annotated points against "
                                  f"{x.size // 2} detected; use the same --resample for both")
        xs.append(x)
        ys.append(_encode((t - x).reshape(-1, 2), x.reshape(-1, 2), counts, anchors, settings.slide_semantic))
        if images is not None and settings.iterations:
            img = _prepare_image(images[f.name], settings.grayscale)
            tl = t.reshape(-1, 2)
            feat, start = [], 0
            for n in counts:
                line = frame.to_image(tl[start:start + n])
                feat.append(_profile_feature(_profiles(img, line, _normals(line), PROFILE_STEP * frame.scale,
                                                       PROFILE_HALF)))
                start += n
            feats.append(np.concatenate(feat))
    X = np.array(xs) - detected_vector(ref, names, settings)
    Y = np.array(ys)
    # Robust, shrunk offset: the median per point, scaled down where the frames' spread says it is noise.
    ym = shrunk_offset(Y)
    xm = X.mean(axis=0)
    Xc, Yc = X - xm, Y - ym[None]
    gram = Xc @ Xc.T
    spread = np.trace(gram) / len(X)
    if spread > 1e-12:
        alpha = np.linalg.solve(gram + settings.regularisation * spread * np.eye(len(X)), Yc)
        weights = alpha.T @ Xc                     # (D, D) = Yc^T (Xc Xc^T + l I)^-1 Xc
    else:
        weights = np.zeros((0, 0))
    offset = ym - (weights @ xm if weights.size else 0.0)
    pm = pv = None
    if feats:
        fa = np.stack(feats)
        pm, pv = fa.mean(axis=0), fa.var(axis=0) + 0.01
    log.info("segment %s: trained on %d frames (neutral %s), mean correction %.3f", segment, len(enabled),
             neutral.name, float(np.abs(Y).mean()))
    return SegmentModel(segment, names, counts, semantic_counts, detected_vector(ref, names, settings), offset, weights, pm, pv,
                        settings)


def shrunk_offset(Y: np.ndarray) -> np.ndarray:
    """The per-point median correction, shrunk towards zero as a whole (positive-part James-Stein) by how
    much of it the frames' disagreement explains: the noise of an average of K frames is the pooled
    per-point variance / K (a robust MAD estimate), compared with the offset's mean square."""
    k = len(Y)
    med = np.median(Y, axis=0)
    mad = np.median(np.abs(Y - med), axis=0) * 1.4826
    noise = float(np.mean(mad ** 2)) / k * (np.pi / 2 if k > 2 else 1.0)    # variance of a median
    signal = float(np.mean(med ** 2))
    factor = max(0.0, 1.0 - noise / signal) if signal > 0 else 0.0
    return med * factor


def detected_vector(seg: Segment, names: tuple[str, ...], settings: ComputeSettings) -> np.ndarray:
    return _vector(seg, names, segment_frame(seg), settings.initial_smoothness)
