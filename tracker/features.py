"""OpenSeeFace's 14 expression features, with its per-user running normalisation.

OpenSeeFace (OSF) does not send raw geometry for expressions: for each feature it measures a ratio or an
angle on the face's de-rotated, scale-normalised 3D points (the same points it sends as "3D points"; only
their x and y are used), then maps that raw value to roughly -1..1 with running statistics learned from
the user's own face, so that 0 means "like this user's rest pose". Consumers (VSeeFace and others) rely on
that behaviour, so this module reproduces OSF's procedure step by step (facts taken from OSF's public
tracker.py, verified value for value against OSF's own --log-data output in tests/test_features.py):

* raw value ``x`` per feature, from the aligned points (see ``_raw_features``);
* running median: a "remedian" (Rousseeuw & Bassett 1990) with blocks of 64 values: medians of full blocks
  are pushed one level up, and the reported median is the median held by the highest level in use;
* lower/upper extremes: a side becomes active once ``x`` leaves the median by more than a relative
  ``threshold`` (below first; the upper side is only considered once the lower one is active); a new extreme
  resets that side, and every frame the extreme decays by ``decay`` towards a "hard" bound that lies
  ``hard_factor`` of the way from the extreme towards the median (at the time the extreme was set);
* mapping: ``-(1 - (x - min) / (median - min))`` below the median, ``(x - median) / (max - median)``
  above it, -1 / +1 when a new extreme is set, 0 while a side is not active yet;
* smoothing: ``out = alpha * previous_out + (1 - alpha) * mapped``;
* freezing: after ``max_feature_updates_s`` seconds since the first update (OSF's --max-feature-updates,
  900 s by default) medians and extremes stop changing.

State lives in a ``FeatureExtractor`` instance: keep one per tracked face for the whole session. OSF keeps
it across short face losses too (with its default options the statistics are never reset), and when a
frame is not used for features (low confidence or a failed 3D fit, see ``openseeface``) it simply does not
call ``update``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from bisect import insort
from collections.abc import Iterator

import numpy as np

from facewire.client.protocol import FEATURE_NAMES  # the record order, defined once with the wire format

# Features that OSF only computes at its "full" feature level (2, the default). At level 1 they read 0.
_FULL_ONLY = frozenset(
    {
        "eyebrow_steepness_l",
        "eyebrow_quirk_l",
        "eyebrow_steepness_r",
        "eyebrow_quirk_r",
        "mouth_corner_inout_l",
        "mouth_corner_inout_r",
    }
)

# OSF's activation thresholds (relative distance from the median). Features not listed use 0.15.
_DEFAULT_THRESHOLDS: dict[str, float] = {
    "eyebrow_steepness_l": 0.05,
    "eyebrow_quirk_l": 0.05,
    "eyebrow_steepness_r": 0.05,
    "eyebrow_quirk_r": 0.05,
    "mouth_corner_inout_l": 0.02,
    "mouth_corner_inout_r": 0.02,
    "mouth_wide": 0.02,
}


class FeatureInputError(ValueError):
    """The points given to the feature extractor do not have OSF's 66-point layout."""


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Parameters of OSF's feature normalisation; the defaults are OSF's own.

    ``thresholds`` holds one activation threshold per feature, in ``FEATURE_NAMES`` order.
    ``max_feature_updates_s`` is OSF's --max-feature-updates (seconds after the first update during which
    the statistics keep learning; 0 = forever). ``full=False`` mimics OSF's feature level 1, where the
    eyebrow steepness/quirk and mouth in/out features are not computed and read 0.
    """

    alpha: float = 0.2
    hard_factor: float = 0.15
    decay: float = 0.001
    median_block: int = 64
    max_feature_updates_s: float = 900.0
    full: bool = True
    thresholds: tuple[float, ...] = tuple(_DEFAULT_THRESHOLDS.get(name, 0.15) for name in FEATURE_NAMES)

    def __post_init__(self) -> None:
        if len(self.thresholds) != len(FEATURE_NAMES):
            raise ValueError(
                f"FeatureConfig.thresholds needs {len(FEATURE_NAMES)} values (one per FEATURE_NAMES entry), "
                f"got {len(self.thresholds)}"
            )
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"FeatureConfig.alpha must be in [0, 1), got {self.alpha}")
        if self.median_block < 2:
            raise ValueError(f"FeatureConfig.median_block must be at least 2, got {self.median_block}")
        if self.max_feature_updates_s < 0:
            raise ValueError(
                f"FeatureConfig.max_feature_updates_s must be >= 0 (0 = never freeze), got {self.max_feature_updates_s}"
            )


@dataclasses.dataclass(frozen=True)
class Features:
    """One frame's 14 OSF expression features (roughly -1..1, 0 at the user's rest pose)."""

    eye_l: float
    eye_r: float
    eyebrow_steepness_l: float
    eyebrow_updown_l: float
    eyebrow_quirk_l: float
    eyebrow_steepness_r: float
    eyebrow_updown_r: float
    eyebrow_quirk_r: float
    mouth_corner_updown_l: float
    mouth_corner_inout_l: float
    mouth_corner_updown_r: float
    mouth_corner_inout_r: float
    mouth_open: float
    mouth_wide: float

    @classmethod
    def zeros(cls) -> Features:
        """What OSF sends before any feature was computed for a face."""
        return cls(*([0.0] * len(FEATURE_NAMES)))

    def values(self) -> tuple[float, ...]:
        """The values in record order (``FEATURE_NAMES``)."""
        return tuple(getattr(self, name) for name in FEATURE_NAMES)

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in FEATURE_NAMES}

    def __iter__(self) -> Iterator[float]:
        return iter(self.values())


class _Remedian:
    """Approximate running median in O(levels * block) memory (medians of medians of 64-value blocks).

    The reported median comes from the highest level that has received a value: once the first block of
    ``block`` raw values is full, newer raw values only matter through later block medians. This is what
    OSF's statistics do, so it is kept even though it reacts slowly.

    Every level is kept sorted (one ``insort`` per value), so a median is an index lookup instead of an
    ``np.median`` call per feature and frame; it is the same number ``np.median`` gives (the middle value,
    or the mean ``(a + b) / 2`` of the two middle ones).
    """

    __slots__ = ("_block", "_levels")

    def __init__(self, block: int) -> None:
        self._block = block
        self._levels: list[list[float]] = [[]]

    def add(self, value: float) -> float:
        """Add a value; returns the new median (what ``median()`` returns next)."""
        level = 0
        while True:
            buffer = self._levels[level]
            insort(buffer, value)
            if len(buffer) < self._block:
                return _sorted_median(self._levels[-1])
            value = _sorted_median(buffer)
            buffer.clear()
            level += 1
            if level == len(self._levels):
                self._levels.append([])

    def median(self) -> float:
        top = self._levels[-1]
        if not top:
            raise RuntimeError("median of an empty remedian")
        return _sorted_median(top)


def _sorted_median(values: list[float]) -> float:
    """``np.median`` of an already sorted, non-empty list of floats."""
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2.0


class _FeatureStatistics:
    """OSF's running normalisation of one feature (see the module docstring).

    Plain Python floats on purpose: per frame this is a dozen comparisons and products per feature, which
    numpy would only slow down with its per-call overhead.
    """

    __slots__ = ("_threshold", "_alpha", "_hard", "_decay", "_remedian", "_median", "_min", "_max",
                 "_hard_min", "_hard_max", "_last")

    def __init__(self, threshold: float, config: FeatureConfig) -> None:
        self._threshold = threshold
        self._alpha = config.alpha
        self._hard = config.hard_factor
        self._decay = config.decay
        self._remedian = _Remedian(config.median_block)
        self._median = 0.0
        self._min: float | None = None
        self._max: float | None = None
        self._hard_min = 0.0
        self._hard_max = 0.0
        self._last = 0.0

    def update(self, x: float, learning: bool) -> float:
        """Map raw value ``x`` to about -1..1 and smooth it; ``learning``: may median and extremes change."""
        if learning:
            self._median = self._remedian.add(x)
        median = self._median
        hard = self._hard

        if self._min is None:
            # Lower side: becomes active once x drops clearly below the median.
            if x < median and _relative_gap(median - x, median) > self._threshold:
                if learning:
                    self._min = x
                    self._hard_min = x + hard * (median - x)
                mapped = -1.0
            else:
                mapped = 0.0
        elif x < self._min:
            if learning:
                self._min = x
                self._hard_min = x + hard * (median - x)
            mapped = -1.0
        elif self._max is None:
            # Upper side: only considered once the lower side is active (OSF's order of checks).
            if x > median and _relative_gap(x - median, median) > self._threshold:
                if learning:
                    self._max = x
                    self._hard_max = x - hard * (x - median)
                mapped = 1.0
            else:
                mapped = 0.0
        elif x > self._max:
            if learning:
                self._max = x
                self._hard_max = x - hard * (x - median)
            mapped = 1.0
        else:
            if learning:
                decay = self._decay
                if self._min < self._hard_min:
                    self._min = self._hard_min * decay + self._min * (1.0 - decay)
                if self._max > self._hard_max:
                    self._max = self._hard_max * decay + self._max * (1.0 - decay)
            if x < median:
                mapped = -(1.0 - (x - self._min) / (median - self._min))
            elif x > median:
                mapped = (x - median) / (self._max - median)
            else:
                mapped = 0.0

        alpha = self._alpha
        self._last = self._last * alpha + mapped * (1.0 - alpha)
        return self._last


def _relative_gap(gap: float, median: float) -> float:
    """gap / median with IEEE semantics for a zero median (OSF divides numpy floats, giving +-inf)."""
    if median == 0.0:
        return math.copysign(math.inf, gap) if gap != 0.0 else math.nan
    return gap / median


# The raw features below work on Python floats: about 150 scalar operations per frame, for which numpy's
# per-call overhead would cost ten times the arithmetic. Every expression keeps the operation order of
# OSF's numpy code (np.mean of a few values = their left-to-right sum divided by their count), so the
# values are the same to the last bit (tests/test_features.py compares them with the numpy formulas).


def _line_angle(ax: float, ay: float, bx: float, by: float) -> float:
    """OSF's folded angle (radians) of the direction a->b, in (-pi/2, pi/2].

    Directions pointing left are folded as 180 deg - angle (a mirror, not a half turn); OSF's features are
    defined with this folding, so it is kept.
    """
    degrees = math.degrees(math.atan2(by - ay, bx - ax) % (2.0 * math.pi))
    if degrees >= 90.0:
        degrees = 180.0 - degrees
    if degrees <= -90.0:
        degrees = -(degrees + 180.0)
    return math.radians(degrees)


def _aligned(
    xs: list[float], ys: list[float], a: int, b: int, idx: tuple[int, ...]
) -> tuple[float, list[float], list[float]]:
    """OSF's alignment step: the angle of a->b and points ``idx`` rotated by minus that angle about a."""
    ox, oy = xs[a], ys[a]
    angle = _line_angle(ox, oy, xs[b], ys[b])
    c, s = math.cos(-angle), math.sin(-angle)
    rx, ry = [], []
    for i in idx:
        dx, dy = xs[i] - ox, ys[i] - oy
        rx.append(ox + c * dx - s * dy)
        ry.append(oy + s * dx + c * dy)
    return angle, rx, ry


def _raw_features(xs: list[float], ys: list[float], full: bool) -> list[float | None]:
    """OSF's raw (un-normalised) feature values in ``FEATURE_NAMES`` order, None where not computed.

    ``xs``/``ys``: aligned points (x, y up) in OSF's 66-point order. Features only computed at OSF's full
    feature level are None when ``full`` is false.
    """
    width = ((xs[0] - xs[16]) + (xs[1] - xs[15])) / 2.0
    height = ((ys[27] - ys[28]) + (ys[28] - ys[29]) + (ys[29] - ys[30])) / 3.0
    if width == 0.0 or height == 0.0:
        raise FeatureInputError(
            "degenerate face points: zero face width (points 0/16, 1/15) or nose height (points 27..30); "
            "pass OSF's aligned 3D points, not an all-zero record"
        )

    angle_l, _, p = _aligned(xs, ys, 42, 45, (43, 44, 47, 46))
    eye_l = abs(((p[0] + p[1]) / 2.0 - (p[2] + p[3]) / 2.0) / height)
    angle_r, _, p = _aligned(xs, ys, 36, 39, (37, 38, 41, 40))
    eye_r = abs(((p[0] + p[1]) / 2.0 - (p[2] + p[3]) / 2.0) / height)

    steepness_l = quirk_l = steepness_r = quirk_r = inout_l = inout_r = None
    if full:
        face_tilt = (
            math.degrees(angle_l)
            + math.degrees(angle_r)
            + math.degrees(_line_angle(xs[0], ys[0], xs[16], ys[16]))
            + math.degrees(_line_angle(xs[31], ys[31], xs[35], ys[35]))
        ) / 4.0
        brow_angle, px, py = _aligned(xs, ys, 22, 26, (22, 23, 24, 25, 26))
        steepness_l = -math.degrees(brow_angle) - face_tilt
        # OSF subtracts the first point's y from x *and* y of points 1..3; kept as OSF has it.
        quirk_l = max(abs(v - py[0]) for k in (1, 2, 3) for v in (px[k], py[k])) / height
        brow_angle, px, py = _aligned(xs, ys, 17, 21, (17, 18, 19, 20, 21))
        steepness_r = math.degrees(brow_angle) - face_tilt
        quirk_r = max(abs(v - py[0]) for k in (1, 2, 3) for v in (px[k], py[k])) / height

    updown_l = ((ys[22] + ys[26]) / 2.0 - ys[27]) / height
    updown_r = ((ys[17] + ys[21]) / 2.0 - ys[27]) / height

    upper_lip = (ys[49] + ys[50] + ys[51]) / 3.0
    corner_updown_l = (upper_lip - ys[62]) / height
    corner_updown_r = (upper_lip - ys[58]) / height
    if full:
        centre_x = (xs[50] + xs[60] + xs[27] + xs[30] + xs[64] + xs[55]) / 6.0
        inout_l = abs(centre_x - xs[62]) / width
        inout_r = abs(centre_x - xs[58]) / width
    mouth_open = abs((ys[59] + ys[60] + ys[61]) / 3.0 - (ys[63] + ys[64] + ys[65]) / 3.0) / height
    mouth_wide = abs(xs[58] - xs[62]) / width
    return [
        eye_l, eye_r,
        steepness_l, updown_l, quirk_l,
        steepness_r, updown_r, quirk_r,
        corner_updown_l, inout_l, corner_updown_r, inout_r,
        mouth_open, mouth_wide,
    ]  # fmt: skip


def _feature_points(points: np.ndarray) -> tuple[list[float], list[float]]:
    """Validated x and y-up coordinates (Python floats, float32 precision) of the first 66 points."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[0] < 66 or pts.shape[1] not in (2, 3):
        raise FeatureInputError(
            f"expected OSF-ordered aligned points of shape (66..70, 2 or 3), got {pts.shape}; convert iBUG-68 "
            "landmarks with openseeface.OSF66_FROM_IBUG68 and lift them with openseeface.osf_points3d"
        )
    # OSF keeps these points in float32 and flips y for the record; undo the flip, keep its precision.
    xy = pts[:66, :2].astype(np.float32).ravel().tolist()
    # A float64 sum of float32 values cannot overflow: it is finite exactly when every value is.
    if not math.isfinite(sum(xy)):
        raise FeatureInputError("aligned points contain NaN or infinity (or values beyond float32's range)")
    return xy[0::2], [-y for y in xy[1::2]]


class FeatureExtractor:
    """Per-face OSF expression features with OSF's running per-user normalisation.

    ``update`` takes OSF's aligned 3D points *in the record's convention* (as sent in the packet's 3D point
    block and as returned by ``openseeface.osf_points3d``: x towards the subject's right, y down, z into
    the head, nose tip at the origin, de-rotated and scale-normalised). OSF computes its features from
    these lifted points, not from the 2D image landmarks: only their x and y are used.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self._stats = [_FeatureStatistics(threshold, self.config) for threshold in self.config.thresholds]
        self._learning = True
        self._first_seen: float | None = None

    def _still_learning(self, now: float) -> bool:
        """OSF's --max-feature-updates: statistics learn for that long after the first update, then freeze.

        OSF keeps this clock per feature, but all features of a face start and stop together.
        """
        limit = self.config.max_feature_updates_s
        if limit > 0 and self._first_seen is None:
            self._first_seen = now
        if self._learning and (limit == 0 or now - self._first_seen < limit):
            return True
        self._learning = False
        return False

    def update(self, aligned_points: np.ndarray, now: float | None = None) -> Features:
        """Advance the statistics with one frame and return its features.

        ``aligned_points``: (66..70, 2 or 3) array in OSF's point order (extra rows such as pupils are
        ignored). ``now``: a monotonic time in seconds (defaults to ``time.monotonic()``), only used to
        stop learning after ``config.max_feature_updates_s``.
        """
        xs, ys = _feature_points(aligned_points)
        if now is None:
            now = time.monotonic()
        raw = _raw_features(xs, ys, self.config.full)
        learning = self._still_learning(now)
        return Features(
            *[0.0 if x is None else stats.update(x, learning) for x, stats in zip(raw, self._stats)]
        )
