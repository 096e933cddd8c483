"""Temporal smoothing of a tracked face's signals with the One Euro filter (Casiez, Roussel, Vogel 2012).

A face tracker's output shakes by a fraction of a pixel to a few pixels from frame to frame even when
the face is still (sensor noise, compression), and an avatar driven by it trembles. A fixed low-pass
filter would calm it but make every movement late. The One Euro filter is a low-pass whose cutoff
rises with the signal's speed: at rest the cutoff is ``min_cutoff`` (heavy smoothing), in motion it is
``min_cutoff + beta * speed`` (little lag). The smoothing factor comes from the time since the previous
sample, so irregular frame times (a slow frame, a dropped frame) are handled correctly.

Per exponential step with ``dt`` seconds since the previous sample and cutoff ``fc`` Hz:
``alpha = 1 / (1 + tau / dt)``, ``tau = 1 / (2 pi fc)``, ``y = y_prev + alpha * (x - y_prev)``. The
speed is the derivative ``(x - y_prev) / dt`` itself low-passed at ``d_cutoff`` Hz.

Signals and their units (what ``FaceSmoother.apply`` accepts; each key is filtered on its own):

========================  =================  ========  ===========================================
key                       shape              group     speed used for the cutoff
========================  =================  ========  ===========================================
``points``                (N, 2) or (N, 3)   points    per point, in face sizes per second (the
                                                       face size is the RMS distance of the
                                                       points' x, y from their centroid), so one
                                                       setting suits near and far faces
``pose``                  (7,)               pose      quaternion x, y, z, w then translation;
                                                       rotation: angular speed in rad/s (the
                                                       quaternion is made sign-consistent with
                                                       the previous one, filtered, renormalised,
                                                       returned with w >= 0); translation: speed
                                                       over distance, per second
``angles``                (3,)               pose      yaw, pitch, roll in degrees, unwrapped
                                                       against the previous output so 179 -> -179
                                                       is a 2-degree step; returned in [-180, 180)
``blendshapes``           (52,) or any       blend-    per value, in units per second; output
                                             shapes    clipped to 0..1
``gaze``                  (..., 3) or        gaze      per row (one eye), in the row's units per
                          (..., 2)                     second; rows of 3 (unit gaze vectors) are
                                                       renormalised to length 1
========================  =================  ========  ===========================================

Filters are kept per face id and per key. Call ``reset(face_id)`` when a face is lost (its next
sample starts a fresh filter rather than dragging the old position along) and ``forget_except(ids)``
with the ids still tracked to drop the rest; a change of an array's shape also restarts its filter.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

GROUPS = ("points", "pose", "blendshapes", "gaze")
SIGNAL_GROUPS: dict[str, str] = {
    "points": "points",
    "pose": "pose",
    "angles": "pose",
    "blendshapes": "blendshapes",
    "gaze": "gaze",
}


@dataclass(frozen=True)
class OneEuroParams:
    """One Euro settings: ``min_cutoff`` (Hz, at rest), ``beta`` (cutoff rise per unit of speed), ``d_cutoff`` (Hz)."""

    min_cutoff: float
    beta: float
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "beta", "d_cutoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value!r}")
        if self.min_cutoff <= 0:
            raise ValueError(f"min_cutoff must be above 0 Hz, not {self.min_cutoff}")
        if self.beta < 0:
            raise ValueError(f"beta cannot be negative, not {self.beta}")
        if self.d_cutoff <= 0:
            raise ValueError(f"d_cutoff must be above 0 Hz, not {self.d_cutoff}")

    def __str__(self) -> str:
        """The flag spelling, MIN_CUTOFF,BETA,D_CUTOFF."""
        return f"{self.min_cutoff:g},{self.beta:g},{self.d_cutoff:g}"


# Defaults. "points" and "pose" were tuned by ``scripts/measure_smoothing.py --tune`` (clips of annotated
# photos moved along known paths with sensor noise and JPEG; lowest jitter at rest whose lag stays within
# 0.75 frames at 30 fps in every kind of motion, chosen on half of the clips and checked on the other).
# A lower min_cutoff hardly matters there: at rest the noise's own speed sets the cutoff, and beta
# bounds the error of a slow drift (at most 1 / (2 pi beta) face sizes). "gaze" takes the pose's values
# (both speeds are angles per second); "blendshapes" is reasoned, not measured: score noise of about
# 0.02 per frame gives a cutoff of about 4 Hz, a blink (0 to 1 in 0.1 s) one above 50 Hz.
DEFAULT_POINTS = OneEuroParams(min_cutoff=0.05, beta=5.0, d_cutoff=4.0)
DEFAULT_POSE = OneEuroParams(min_cutoff=0.05, beta=10.0, d_cutoff=1.0)
DEFAULT_BLENDSHAPES = OneEuroParams(min_cutoff=1.0, beta=5.0, d_cutoff=1.0)
DEFAULT_GAZE = OneEuroParams(min_cutoff=0.05, beta=10.0, d_cutoff=1.0)


@dataclass(frozen=True)
class SmoothingConfig:
    """Per-group One Euro settings; ``enabled=False`` passes every signal through unchanged."""

    points: OneEuroParams = DEFAULT_POINTS
    pose: OneEuroParams = DEFAULT_POSE
    blendshapes: OneEuroParams = DEFAULT_BLENDSHAPES
    gaze: OneEuroParams = DEFAULT_GAZE
    enabled: bool = True

    def __post_init__(self) -> None:
        for group in GROUPS:
            if not isinstance(getattr(self, group), OneEuroParams):
                raise TypeError(f"SmoothingConfig.{group} must be a OneEuroParams, "
                                f"not {type(getattr(self, group)).__name__}")

    def params(self, group: str) -> OneEuroParams:
        if group not in GROUPS:
            raise ValueError(f"unknown signal group {group!r}; the groups are {', '.join(GROUPS)}")
        return getattr(self, group)


def smoothing_alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """The exponential smoothing factor of a first-order low-pass at ``cutoff`` Hz over ``dt`` seconds."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over a numpy array of fixed shape, every element at once.

    ``rows=True`` gives one cutoff per row (the last axis is a vector: a point's x, y, z), from the
    norm of the row's speed; otherwise each element gets its own cutoff. ``scale`` divides the speed
    (e.g. by the face's size) so ``beta`` is in units that do not depend on the image.
    """

    def __init__(self, params: OneEuroParams, rows: bool = False) -> None:
        self.params = params
        self.rows = rows
        self._t: float | None = None
        self._x: np.ndarray | None = None      # previous output, float64
        self._dx: np.ndarray | None = None     # previous low-passed derivative

    @property
    def started(self) -> bool:
        return self._x is not None

    @property
    def value(self) -> np.ndarray | None:
        """The latest output (a copy), or None before the first sample."""
        return None if self._x is None else self._x.copy()

    def reset(self) -> None:
        self._t = self._x = self._dx = None

    def replace_value(self, x: np.ndarray) -> None:
        """Replace the latest output (say, renormalised or wrapped); the next sample is filtered from it."""
        if self._x is None or np.shape(x) != self._x.shape:
            raise ValueError("replace_value needs a started filter and an array of its shape")
        self._x = np.array(x, np.float64)

    def __call__(self, t: float, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Filter sample ``x`` taken at ``t`` seconds; returns a new float64 array.

        The first sample (and the first after ``reset`` or a change of shape) passes unchanged. A
        sample at the same time as the previous one returns the previous output; time going
        backwards is an error.
        """
        x = np.asarray(x, np.float64)
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"timestamp must be finite, not {t}")
        if self._x is None or self._x.shape != x.shape:
            self._t, self._x, self._dx = t, x.copy(), np.zeros_like(x)
            return x.copy()
        dt = t - self._t
        if dt < 0:
            raise ValueError(f"timestamps must not go backwards ({t} after {self._t})")
        if dt == 0:
            return self._x.copy()
        p = self.params
        dx = (x - self._x) / dt
        dx_hat = self._dx + smoothing_alpha(p.d_cutoff, dt) * (dx - self._dx)
        if self.rows:
            speed = np.linalg.norm(dx_hat, axis=-1, keepdims=True)
        else:
            speed = np.abs(dx_hat)
        if scale != 1.0:
            speed = speed / scale
        alpha = smoothing_alpha(p.min_cutoff + p.beta * speed, dt)
        out = self._x + alpha * (x - self._x)
        self._t, self._x, self._dx = t, out, dx_hat
        return out.copy()


def face_size(points: np.ndarray) -> float:
    """RMS distance of the points' x, y from their centroid (pixels): the face's scale for speeds."""
    xy = np.asarray(points, np.float64)[..., :2].reshape(-1, 2)
    return float(np.sqrt(((xy - xy.mean(axis=0)) ** 2).sum(axis=1).mean()))


class _PoseFilter:
    """Quaternion (sign-consistent, renormalised) and translation, with the pose group's settings."""

    def __init__(self, params: OneEuroParams) -> None:
        self._rotation = OneEuroFilter(params, rows=True)
        self._translation = OneEuroFilter(params, rows=True)

    def __call__(self, t: float, pose: np.ndarray) -> np.ndarray:
        if pose.shape != (7,):
            raise ValueError(f"'pose' must be (7,): quaternion x, y, z, w then translation; got {pose.shape}")
        q = pose[:4].astype(np.float64)
        norm = np.linalg.norm(q)
        if not norm > 0:
            raise ValueError("'pose' holds a zero quaternion")
        q = q / norm
        previous = self._rotation.value
        if previous is not None and float(q @ previous) < 0:
            q = -q                          # the same rotation, on the previous output's side
        # |dq/dt| is half the angular speed for small steps, so scale 0.5 gives rad/s.
        q_out = self._rotation(t, q, scale=0.5)
        q_out /= np.linalg.norm(q_out)
        self._rotation.replace_value(q_out)   # keep the state on the unit sphere
        translation = pose[4:].astype(np.float64)
        distance = float(np.linalg.norm(translation))
        t_out = self._translation(t, translation, scale=distance if distance > 0 else 1.0)
        if q_out[3] < 0:
            q_out = -q_out
        return np.concatenate([q_out, t_out])


class _AngleFilter:
    """Euler angles in degrees, unwrapped against the previous output; speed in rad/s."""

    def __init__(self, params: OneEuroParams) -> None:
        self._filter = OneEuroFilter(params, rows=True)

    def __call__(self, t: float, angles: np.ndarray) -> np.ndarray:
        if angles.shape != (3,):
            raise ValueError(f"'angles' must be (3,) yaw, pitch, roll in degrees; got {angles.shape}")
        a = angles.astype(np.float64)
        previous = self._filter.value
        if previous is not None:
            a = previous + (a - previous + 180.0) % 360.0 - 180.0
        out = self._filter(t, a, scale=180.0 / math.pi)
        wrapped = (out + 180.0) % 360.0 - 180.0
        self._filter.replace_value(wrapped)   # the state stays in [-180, 180), it cannot wind up
        return wrapped


class _Signal:
    """The filter of one key of one face."""

    def __init__(self, key: str, params: OneEuroParams) -> None:
        self.key = key
        if key == "pose":
            self._impl = _PoseFilter(params)
        elif key == "angles":
            self._impl = _AngleFilter(params)
        else:
            self._impl = OneEuroFilter(params, rows=key in ("points", "gaze"))

    def __call__(self, t: float, x: np.ndarray) -> np.ndarray:
        if self.key in ("pose", "angles"):
            return self._impl(t, x)
        if self.key == "points":
            if x.ndim != 2 or x.shape[1] not in (2, 3):
                raise ValueError(f"'points' must be (N, 2) or (N, 3); got {x.shape}")
            size = face_size(x)
            return self._impl(t, x, scale=size if size > 0 else 1.0)
        if self.key == "blendshapes":
            return np.clip(self._impl(t, x), 0.0, 1.0)
        # gaze
        if x.ndim == 0 or x.shape[-1] not in (2, 3):
            raise ValueError(f"'gaze' must be (..., 3) unit vectors or (..., 2) angles; got {x.shape}")
        out = self._impl(t, x)
        if out.shape[-1] == 3:
            norm = np.linalg.norm(out, axis=-1, keepdims=True)
            out = np.divide(out, norm, out=out, where=norm > 0)
        return out


class FaceSmoother:
    """One Euro filters per face id and signal key (see the module docstring for keys and units).

    ``apply`` returns new arrays of the input dtype (float inputs) and never changes its inputs.
    """

    def __init__(self, config: SmoothingConfig | None = None) -> None:
        self.config = config or SmoothingConfig()
        self._faces: dict[int, dict[str, _Signal]] = {}

    def apply(self, face_id: int, timestamp: float, signals: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The smoothed signals of face ``face_id`` at ``timestamp`` seconds (any clock that only moves forward)."""
        unknown = [key for key in signals if key not in SIGNAL_GROUPS]
        if unknown:
            raise ValueError(f"unknown signal {unknown[0]!r}; known signals are {', '.join(SIGNAL_GROUPS)}")
        out: dict[str, np.ndarray] = {}
        face = self._faces.setdefault(face_id, {}) if self.config.enabled else {}
        for key, value in signals.items():
            x = np.asarray(value)
            if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
                raise ValueError(f"signal {key!r} of face {face_id} must hold finite numbers")
            if not self.config.enabled:
                out[key] = x.copy()
                continue
            signal = face.get(key)
            if signal is None:
                signal = face[key] = _Signal(key, self.config.params(SIGNAL_GROUPS[key]))
            y = signal(timestamp, x)
            out[key] = y.astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else y
        return out

    def reset(self, face_id: int) -> None:
        """Forget face ``face_id``'s filters: its next sample starts afresh (call when the face is lost)."""
        self._faces.pop(face_id, None)

    def forget_except(self, ids: Iterable[int]) -> None:
        """Keep only the filters of ``ids`` (the faces still tracked)."""
        keep = set(ids)
        for face_id in [f for f in self._faces if f not in keep]:
            del self._faces[face_id]

    def face_ids(self) -> set[int]:
        return set(self._faces)


# --- command-line flags ---------------------------------------------------------------------------

_FLAG_HELP = {
    "points": "the landmarks (speed in face sizes per second)",
    "pose": "head rotation and translation (speed in rad/s, translation relative to distance)",
    "blendshapes": "the blendshape scores (speed in units per second)",
    "gaze": "the gaze vectors (speed in rad/s)",
}


def parse_params(text: str, flag: str | None = None) -> OneEuroParams:
    """``"MIN_CUTOFF,BETA"`` or ``"MIN_CUTOFF,BETA,D_CUTOFF"`` -> OneEuroParams; ValueError naming ``flag``."""
    lead = f"{flag}: " if flag else ""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) not in (2, 3):
        raise ValueError(f"{lead}expected MIN_CUTOFF,BETA or MIN_CUTOFF,BETA,D_CUTOFF, not {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{lead}expected numbers MIN_CUTOFF,BETA[,D_CUTOFF], not {text!r}") from None
    try:
        return OneEuroParams(*values)
    except ValueError as exc:
        raise ValueError(f"{lead}{exc}") from None


def add_smoothing_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--smooth-points/-pose/-blendshapes/-gaze MIN_CUTOFF,BETA[,D_CUTOFF]`` and ``--no-smoothing``."""
    group = parser.add_argument_group(
        "smoothing", "One Euro filter per signal: cutoff MIN_CUTOFF Hz at rest, rising by BETA per unit of "
                     "speed; D_CUTOFF (Hz, default 1) smooths the speed. Lower MIN_CUTOFF: steadier at rest; "
                     "higher BETA: less lag in motion.")
    defaults = SmoothingConfig()
    for name in GROUPS:
        flag = f"--smooth-{name}"
        params = defaults.params(name)

        def parse(text: str) -> OneEuroParams:
            try:   # argparse puts "argument --smooth-NAME:" before the message
                return parse_params(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        group.add_argument(flag, dest=f"smooth_{name}", type=parse, default=params,
                           metavar="MIN_CUTOFF,BETA[,D_CUTOFF]",
                           help=f"One Euro filter of {_FLAG_HELP[name]} (default: %(default)s)")
    group.add_argument("--no-smoothing", dest="smoothing", action="store_false",
                       help="switch smoothing off and send the tracker's raw values (smoothing is on by default)")


def smoothing_config_from_args(args: argparse.Namespace) -> SmoothingConfig:
    """The SmoothingConfig of flags added by ``add_smoothing_arguments``."""
    return SmoothingConfig(**{name: getattr(args, f"smooth_{name}") for name in GROUPS},
                           enabled=bool(args.smoothing))


__all__ = [
    "GROUPS", "SIGNAL_GROUPS", "OneEuroParams", "SmoothingConfig", "OneEuroFilter", "FaceSmoother",
    "smoothing_alpha", "face_size", "parse_params", "add_smoothing_arguments", "smoothing_config_from_args",
]
