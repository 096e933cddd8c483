"""The iFacialMocap phone app's UDP text format, which VSeeFace, VNyan, Warudo, VMagicMirror and Inochi
Session accept as "iPhone tracking" (they listen on UDP port 49983).

One datagram per frame, ASCII::

    eyeBlink_L-37|eyeBlink_R-35|...|tongueOut-0|=head#rx,ry,rz,px,py,pz|rightEye#rx,ry,rz|leftEye#rx,ry,rz|

* the 52 ARKit blendshapes under Apple's raw keys (``ifacialmocap_name``: ``eyeBlink_L``), integer
  percentages 0..100 after ``-`` (the app's "v2" format, asked for with ``|sendDataVersion=v2`` in the
  handshake, uses ``&`` instead);
* ``head``: rotation in degrees, then position in metres; ``rightEye``/``leftEye``: eye rotations in
  degrees. All in ARKit's face frame, right-handed: x to the subject's left, y up, z out of the face.
  So ``ry`` > 0 turns the head to the subject's left (our yaw), ``rx`` > 0 tips it down (our -pitch),
  ``rz`` > 0 tilts it towards the subject's right shoulder (our -roll); an eye's ``rx`` > 0 looks down,
  ``ry`` > 0 looks to the subject's left. Position: x to the image's right, y up, z towards the camera
  (the face is at negative z), from the camera.

Handshake: an app sends ``HANDSHAKE`` (optionally followed by ``|sendDataVersion=v2``) to the phone's
port 49983 and the phone then streams to port 49983 at the IP address the handshake came from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .arkit import ARKIT_NAMES, ifacialmocap_name
from .protocol import DatagramError

__all__ = ["DEFAULT_PORT", "HANDSHAKE", "IFacialMocapFrame", "arkit_eye_angles", "arkit_head_angles",
           "encode_ifacialmocap", "is_handshake", "parse_ifacialmocap", "wants_v2"]

DEFAULT_PORT = 49983
HANDSHAKE = b"iFacialMocap_sahuasouryya9218sauhuiayeta91555dy3719"
RAW_NAMES: tuple[str, ...] = tuple(ifacialmocap_name(n) for n in ARKIT_NAMES)
_FROM_RAW = dict(zip(RAW_NAMES, ARKIT_NAMES))


@dataclass(frozen=True)
class IFacialMocapFrame:
    """One parsed datagram: blendshapes under Apple's names (0..1), angles in degrees, position in metres."""

    blendshapes: Mapping[str, float]
    head_rotation: tuple[float, float, float]
    head_position: tuple[float, float, float]
    right_eye: tuple[float, float, float]
    left_eye: tuple[float, float, float]

    @property
    def yaw(self) -> float:
        """The head's yaw in the README's convention (> 0: turned to the subject's left)."""
        return self.head_rotation[1]


def is_handshake(data: bytes) -> bool:
    return data.strip().startswith(HANDSHAKE)


def wants_v2(data: bytes) -> bool:
    """Whether a handshake asks for the "v2" format (``&`` between name and value)."""
    return b"sendDataVersion=v2" in data


def arkit_head_angles(yaw: float, pitch: float, roll: float) -> tuple[float, float, float]:
    """(rx, ry, rz) degrees in ARKit's face frame from the README's yaw/pitch/roll."""
    return (-pitch, yaw, -roll)


def arkit_eye_angles(gaze: Sequence[float]) -> tuple[float, float, float]:
    """(rx, ry, 0) degrees of an eye from its unit gaze vector in our head frame (x subject's left,
    y down, z back; straight ahead is (0, 0, -1))."""
    gx, gy, gz = (float(v) for v in gaze)
    forward = -gz
    return (math.degrees(math.atan2(gy, math.hypot(gx, forward))), math.degrees(math.atan2(gx, forward)), 0.0)


def encode_ifacialmocap(blendshapes: np.ndarray | None, head_rotation: Sequence[float],
                        head_position: Sequence[float], right_eye: Sequence[float], left_eye: Sequence[float],
                        *, v2: bool = False) -> bytes:
    """One datagram. ``blendshapes``: 52 values 0..1 in ARKIT_NAMES order (None sends zeros)."""
    if blendshapes is None:
        percents = [0] * len(RAW_NAMES)
    else:
        values = np.asarray(blendshapes, np.float64)
        if values.shape != (len(RAW_NAMES),):
            raise ValueError(f"expected {len(RAW_NAMES)} blendshapes, got shape {values.shape}")
        percents = np.rint(np.clip(values, 0.0, 1.0) * 100.0).astype(int).tolist()
    sep = "&" if v2 else "-"
    shapes = "|".join(f"{name}{sep}{p}" for name, p in zip(RAW_NAMES, percents))
    head = ",".join(f"{v:.4f}" for v in (*head_rotation, *head_position))
    right = ",".join(f"{v:.4f}" for v in right_eye)
    left = ",".join(f"{v:.4f}" for v in left_eye)
    return f"{shapes}|=head#{head}|rightEye#{right}|leftEye#{left}|".encode("ascii")


def _floats(text: str, count: int, what: str) -> tuple[float, ...]:
    parts = text.split(",")
    if len(parts) != count:
        raise DatagramError(f"{what} needs {count} comma-separated numbers, got {text!r}", "schema")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise DatagramError(f"{what} holds a value that is not a number: {text!r}", "schema") from None
    if not all(math.isfinite(v) for v in values):
        raise DatagramError(f"{what} holds NaN or inf: {text!r}", "non_finite")
    return values


def parse_ifacialmocap(data: bytes) -> IFacialMocapFrame:
    """Parse one datagram (either separator); raises DatagramError naming what is wrong."""
    try:
        text = bytes(data).decode("ascii")
    except UnicodeDecodeError:
        raise DatagramError("an iFacialMocap datagram is ASCII text", "encoding") from None
    shapes: dict[str, float] = {}
    head = right = left = None
    for part in text.strip().split("|"):
        if not part:
            continue
        if part.startswith("=head#"):
            head = _floats(part[6:], 6, "head")
        elif part.startswith("rightEye#"):
            right = _floats(part[9:], 3, "rightEye")
        elif part.startswith("leftEye#"):
            left = _floats(part[8:], 3, "leftEye")
        else:
            sep = "&" if "&" in part else "-"
            name, found, value = part.rpartition(sep)
            if not found or not name:
                raise DatagramError(f"blendshape entry {part!r} is not name{sep}value", "schema")
            try:
                number = float(value)
            except ValueError:
                raise DatagramError(f"blendshape {name!r} has a value that is not a number: {value!r}",
                                    "schema") from None
            if not 0.0 <= number <= 100.0:
                raise DatagramError(f"blendshape {name!r} is {number}, outside 0..100", "range")
            if name in _FROM_RAW:           # the app may add keys of its own; they are ignored
                shapes[_FROM_RAW[name]] = number / 100.0
    if head is None:
        raise DatagramError("the datagram has no =head# section", "schema")
    zero = (0.0, 0.0, 0.0)
    return IFacialMocapFrame(shapes, head[:3], head[3:], right or zero, left or zero)
