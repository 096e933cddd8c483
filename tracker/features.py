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
from collections.abc import Iterator, Sequence

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
    """

    def __init__(self, block: int) -> None:
        self._block = block
        self._levels: list[list[float]] = [[]]

    def add(self, value: float) -> None:
        level = 0
        while True:
            buffer = self._levels[level]
            buffer.append(value)
            if len(buffer) < self._block:
                return
            value = float(np.median(buffer))
            buffer.clear()
            level += 1
            if level == len(self._levels):
                self._levels.append([])

    def median(self) -> float:
        top = self._levels[-1]
        if not top:
            raise RuntimeError("median of an empty remedian")
        return float(np.median(top))


class _FeatureStatistics:
    """OSF's running normalisation of one feature (see the module docstring)."""

    def __init__(self, threshold: float, config: FeatureConfig) -> None:
        self._threshold = threshold
        self._config = config
        self._remedian = _Remedian(config.median_block)
        self._median = 0.0
        self._min: float | None = None
        self._max: float | None = None
        self._hard_min = 0.0
        self._hard_max = 0.0
        self._learning = True
        self._first_seen: float | None = None
        self._last = 0.0

    def update(self, x: float, now: float) -> float:
        mapped = self._map(x, now)
        alpha = self._config.alpha
        self._last = self._last * alpha + mapped * (1.0 - alpha)
        return self._last

    def _still_learning(self, now: float) -> bool:
        limit = self._config.max_feature_updates_s
        if limit > 0 and self._first_seen is None:
            self._first_seen = now
        if self._learning and (limit == 0 or now - self._first_seen < limit):
            return True
        self._learning = False
        return False

    def _map(self, x: float, now: float) -> float:
        learning = self._still_learning(now)
        if learning:
            self._remedian.add(x)
            self._median = self._remedian.median()
        median = self._median
        hard = self._config.hard_factor

        # Lower side: becomes active once x drops clearly below the median.
        if self._min is None:
            if x < median and _relative_gap(median - x, median) > self._threshold:
                if learning:
                    self._min = x
                    self._hard_min = x + hard * (median - x)
                return -1.0
            return 0.0
        if x < self._min:
            if learning:
                self._min = x
                self._hard_min = x + hard * (median - x)
            return -1.0

        # Upper side: only considered once the lower side is active (OSF's order of checks).
        if self._max is None:
            if x > median and _relative_gap(x - median, median) > self._threshold:
                if learning:
                    self._max = x
                    self._hard_max = x - hard * (x - median)
                return 1.0
            return 0.0
        if x > self._max:
            if learning:
                self._max = x
                self._hard_max = x - hard * (x - median)
            return 1.0

        if learning:
            decay = self._config.decay
            if self._min < self._hard_min:
                self._min = self._hard_min * decay + self._min * (1.0 - decay)
            if self._max > self._hard_max:
                self._max = self._hard_max * decay + self._max * (1.0 - decay)

        if x < median:
            return -(1.0 - (x - self._min) / (median - self._min))
        if x > median:
            return (x - median) / (self._max - median)
        return 0.0


def _relative_gap(gap: float, median: float) -> float:
    """gap / median with IEEE semantics for a zero median (OSF divides numpy floats, giving +-inf)."""
    if median == 0.0:
        return math.copysign(math.inf, gap) if gap != 0.0 else math.nan
    return gap / median


def _line_angle(a: np.ndarray, b: np.ndarray) -> float:
    """OSF's folded angle (radians) of the direction a->b, in (-pi/2, pi/2].

    Directions pointing left are folded as 180 deg - angle (a mirror, not a half turn); OSF's features are
    defined with this folding, so it is kept.
    """
    degrees = math.degrees(math.atan2(float(b[1] - a[1]), float(b[0] - a[0])) % (2.0 * math.pi))
    if degrees >= 90.0:
        degrees = 180.0 - degrees
    if degrees <= -90.0:
        degrees = -(degrees + 180.0)
    return math.radians(degrees)


def _rotate_about(origin: np.ndarray, points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (N, 2) points about ``origin`` by ``-angle`` radians (OSF's alignment step)."""
    c, s = math.cos(-angle), math.sin(-angle)
    d = points - origin
    return np.stack([origin[0] + c * d[:, 0] - s * d[:, 1], origin[1] + s * d[:, 0] + c * d[:, 1]], axis=1)


def _aligned(pts: np.ndarray, a: int, b: int, idx: Sequence[int]) -> tuple[float, np.ndarray]:
    angle = _line_angle(pts[a], pts[b])
    return angle, _rotate_about(pts[a], pts[list(idx)], angle)


def _raw_features(pts: np.ndarray, full: bool) -> dict[str, float]:
    """OSF's raw (un-normalised) feature values from aligned points (x, y-up), in OSF's 66-point order."""
    width = float(np.mean([pts[0, 0] - pts[16, 0], pts[1, 0] - pts[15, 0]]))
    height = float(np.mean([pts[27, 1] - pts[28, 1], pts[28, 1] - pts[29, 1], pts[29, 1] - pts[30, 1]]))
    if width == 0.0 or height == 0.0:
        raise FeatureInputError(
            "degenerate face points: zero face width (points 0/16, 1/15) or nose height (points 27..30); "
            "pass OSF's aligned 3D points, not an all-zero record"
        )
    raw: dict[str, float] = {}

    def eye(a: int, b: int, idx: Sequence[int]) -> tuple[float, float]:
        angle, p = _aligned(pts, a, b, idx)
        opening = abs((np.mean(p[0:2, 1]) - np.mean(p[2:4, 1])) / height)
        return angle, float(opening)

    angle_l, raw["eye_l"] = eye(42, 45, (43, 44, 47, 46))
    angle_r, raw["eye_r"] = eye(36, 39, (37, 38, 41, 40))

    if full:
        face_tilt = float(
            np.mean(
                np.degrees(
                    [angle_l, angle_r, _line_angle(pts[0], pts[16]), _line_angle(pts[31], pts[35])]
                )
            )
        )
        brow_angle, p = _aligned(pts, 22, 26, range(22, 27))
        raw["eyebrow_steepness_l"] = -math.degrees(brow_angle) - face_tilt
        raw["eyebrow_quirk_l"] = float(np.max(np.abs(p[1:4] - p[0, 1])) / height)
        brow_angle, p = _aligned(pts, 17, 21, range(17, 22))
        raw["eyebrow_steepness_r"] = math.degrees(brow_angle) - face_tilt
        raw["eyebrow_quirk_r"] = float(np.max(np.abs(p[1:4] - p[0, 1])) / height)

    raw["eyebrow_updown_l"] = float((np.mean([pts[22, 1], pts[26, 1]]) - pts[27, 1]) / height)
    raw["eyebrow_updown_r"] = float((np.mean([pts[17, 1], pts[21, 1]]) - pts[27, 1]) / height)

    upper_lip = float(np.mean(pts[[49, 50, 51], 1]))
    centre_x = float(np.mean(pts[[50, 60, 27, 30, 64, 55], 0]))
    raw["mouth_corner_updown_l"] = (upper_lip - float(pts[62, 1])) / height
    raw["mouth_corner_updown_r"] = (upper_lip - float(pts[58, 1])) / height
    if full:
        raw["mouth_corner_inout_l"] = abs(centre_x - float(pts[62, 0])) / width
        raw["mouth_corner_inout_r"] = abs(centre_x - float(pts[58, 0])) / width
    raw["mouth_open"] = float(abs(np.mean(pts[[59, 60, 61], 1]) - np.mean(pts[[63, 64, 65], 1])) / height)
    raw["mouth_wide"] = abs(float(pts[58, 0]) - float(pts[62, 0])) / width
    return raw


def _as_feature_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[0] < 66 or pts.shape[1] not in (2, 3):
        raise FeatureInputError(
            f"expected OSF-ordered aligned points of shape (66..70, 2 or 3), got {pts.shape}; convert iBUG-68 "
            "landmarks with openseeface.OSF66_FROM_IBUG68 and lift them with openseeface.osf_points3d"
        )
    if not np.all(np.isfinite(pts[:66, :2])):
        raise FeatureInputError("aligned points contain NaN or infinity")
    # OSF keeps these points in float32 and flips y for the record; undo the flip, keep its precision.
    xy = pts[:66, :2].astype(np.float32).astype(np.float64)
    xy[:, 1] = -xy[:, 1]
    return xy


class FeatureExtractor:
    """Per-face OSF expression features with OSF's running per-user normalisation.

    ``update`` takes OSF's aligned 3D points *in the record's convention* (as sent in the packet's 3D point
    block and as returned by ``openseeface.osf_points3d``: x towards the subject's right, y down, z into
    the head, nose tip at the origin, de-rotated and scale-normalised). OSF computes its features from
    these lifted points, not from the 2D image landmarks: only their x and y are used.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self._stats = {
            name: _FeatureStatistics(threshold, self.config)
            for name, threshold in zip(FEATURE_NAMES, self.config.thresholds)
        }

    def update(self, aligned_points: np.ndarray, now: float | None = None) -> Features:
        """Advance the statistics with one frame and return its features.

        ``aligned_points``: (66..70, 2 or 3) array in OSF's point order (extra rows such as pupils are
        ignored). ``now``: a monotonic time in seconds (defaults to ``time.monotonic()``), only used to
        stop learning after ``config.max_feature_updates_s``.
        """
        pts = _as_feature_points(aligned_points)
        if now is None:
            now = time.monotonic()
        raw = _raw_features(pts, self.config.full)
        values = {}
        for name in FEATURE_NAMES:
            if name in raw:
                values[name] = float(self._stats[name].update(raw[name], now))
            else:
                values[name] = 0.0
        return Features(**values)
