"""What a dashboard page may change on the running tracker, shared between the page's thread and the loop.

The page writes (re-learn the neutral face, smoothing strength per signal group, pause sending, mirror the
input); the loop reads one immutable ``ControlState`` at the start of each frame with ``read(frame)``, so a
change takes effect on the next frame and a frame never sees half of one. ``applied`` tells the page which
change the loop has picked up and at which frame: that is how the page reports a change as done, not just
as asked for.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["SIGNAL_GROUPS", "ControlError", "ControlState", "TrackerControls"]

#: The signal groups the smoother treats separately (the same names on the page and in the daemon).
SIGNAL_GROUPS = ("points", "pose", "blendshapes", "gaze")


class ControlError(ValueError):
    """A control change that cannot be applied; the message names the control and the accepted values."""


@dataclass(frozen=True)
class ControlState:
    """One consistent set of control values.

    ``smoothing``: strength per group in ``SIGNAL_GROUPS``, 0 (off) to 1 (strongest; what that means is the
    smoother's). ``relearn_neutral`` is True in exactly one ``read`` after the page asked for it.
    ``version`` counts changes (1 for the initial state).
    """

    smoothing: Mapping[str, float]
    paused: bool = False
    mirror: bool = False
    relearn_neutral: bool = False
    neutral_requests: int = 0
    version: int = 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the page."""
        return {"smoothing": dict(self.smoothing), "paused": self.paused, "mirror": self.mirror,
                "neutral_requests": self.neutral_requests, "version": self.version}


@dataclass(frozen=True)
class Applied:
    """The newest control version the loop has read, and the frame it first took effect in."""

    version: int
    frame: int


def _strength(group: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise ControlError(f"smoothing.{group} must be a number from 0 (off) to 1, got {value!r}")
    return float(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ControlError(f"{name} must be true or false, got {value!r}")
    return value


class TrackerControls:
    """Thread-safe: any thread may ``update``/``request_neutral``; the loop calls ``read`` once per frame."""

    def __init__(self, smoothing: Mapping[str, float] | None = None, *, paused: bool = False,
                 mirror: bool = False) -> None:
        values = {group: 0.5 for group in SIGNAL_GROUPS}
        for group, value in (smoothing or {}).items():
            if group not in SIGNAL_GROUPS:
                raise ControlError(f"unknown smoothing group {group!r}; the groups are {', '.join(SIGNAL_GROUPS)}")
            values[group] = _strength(group, value)
        self._lock = threading.Lock()
        self._state = ControlState(MappingProxyType(values), _flag("paused", paused), _flag("mirror", mirror))
        self._neutral_pending = False
        self._applied = Applied(0, 0)

    @property
    def state(self) -> ControlState:
        """The newest state (what the page asked for), without marking it as read by the loop."""
        return self._state

    @property
    def applied(self) -> Applied:
        return self._applied

    def read(self, frame: int) -> ControlState:
        """The state for frame number ``frame``; the loop calls this once per frame, before tracking."""
        with self._lock:
            state = self._state
            if self._neutral_pending:
                self._neutral_pending = False
                state = replace(state, relearn_neutral=True)
            if self._applied.version != state.version:
                self._applied = Applied(state.version, int(frame))
        return state

    def update(self, changes: Mapping[str, Any]) -> ControlState:
        """Apply ``{"smoothing": {group: strength}, "paused": bool, "mirror": bool}`` (any subset) at once.

        Raises ControlError naming the first bad entry; nothing changes then.
        """
        if not isinstance(changes, Mapping):
            raise ControlError(f"a control change must be an object, got {type(changes).__name__}")
        unknown = set(changes) - {"smoothing", "paused", "mirror"}
        if unknown:
            raise ControlError(f"unknown control {', '.join(sorted(unknown))}; the controls are smoothing, "
                               "paused, mirror (and the neutral face button)")
        with self._lock:
            old = self._state
            smoothing = dict(old.smoothing)
            new_smoothing = changes.get("smoothing", {})
            if not isinstance(new_smoothing, Mapping):
                raise ControlError(f"smoothing must be an object of group: strength, got {new_smoothing!r}")
            for group, value in new_smoothing.items():
                if group not in SIGNAL_GROUPS:
                    raise ControlError(f"unknown smoothing group {group!r}; the groups are "
                                       f"{', '.join(SIGNAL_GROUPS)}")
                smoothing[group] = _strength(group, value)
            paused = _flag("paused", changes["paused"]) if "paused" in changes else old.paused
            mirror = _flag("mirror", changes["mirror"]) if "mirror" in changes else old.mirror
            self._state = replace(old, smoothing=MappingProxyType(smoothing), paused=paused, mirror=mirror,
                                  version=old.version + 1)
            return self._state

    def request_neutral(self) -> ControlState:
        """Ask the loop to re-learn the neutral face on its next frame (``relearn_neutral`` in one read)."""
        with self._lock:
            self._neutral_pending = True
            self._state = replace(self._state, neutral_requests=self._state.neutral_requests + 1,
                                  version=self._state.version + 1)
            return self._state
