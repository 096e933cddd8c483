"""The VMC protocol (Virtual Motion Capture, OSC over UDP) as a face tracker sends it.

Warudo, VSeeFace, VNyan, VMagicMirror, EVMC4U (Unity) and Inochi Session receive VMC on UDP port 39539.
One frame is one OSC bundle (immediate time tag) holding, in this order:

==========================  =========================================================================
address                     arguments
==========================  =========================================================================
``/VMC/Ext/OK``             i loaded (1), i calibration state (3 = calibrated), i calibration mode
                            (0 = normal), i tracking status (1 = a face is tracked, 0 = lost)
``/VMC/Ext/T``              f seconds since the sender started
``/VMC/Ext/Root/Pos``       s "root", f px py pz, f qx qy qz qw: the origin, identity rotation
``/VMC/Ext/Bone/Pos``       s "Neck" then s "Head", f px py pz, f qx qy qz qw: local bone transforms
``/VMC/Ext/Blend/Val``      s name, f value 0..1: the 52 perfect-sync names (``vmc_name``: Apple's name
                            with a capital first letter, case-sensitive), then the VRM 0.x presets
``/VMC/Ext/Blend/Apply``    (none): the receiver applies the values above at once
==========================  =========================================================================

A frame without a face sends only ``/VMC/Ext/OK`` (tracking status 0) and ``/VMC/Ext/T``, so the avatar
holds its last expression. Frames without blendshapes send no ``Blend`` messages.

Coordinates are Unity's: left-handed, x to the avatar's right, y up, z forward (out of the face). The
head rotation is the subject's own (turning to their left turns the avatar to its own left; the
receiving app mirrors the display if it wants a mirror). Our head rotation ``R`` maps head coordinates
(x subject's left, y down, z back of the head) to camera coordinates; the change to Unity's avatar axes
is ``-I`` (every axis reversed), which commutes with ``R``, so the Unity rotation has the very same
matrix and quaternion: yaw ``y`` reads as a Unity turn of ``-y`` degrees about y (Unity's positive turn
about y goes to the right), pitch ``p`` as ``-p`` about x, roll ``r`` as ``-r`` about z.
``neck_share`` of the turn goes to the Neck bone and the rest to the Head (``neck**share`` then
``head = neck^-1 * full``); positions are nominal bone offsets (receivers use rotations for these bones).

VRM 0.x presets from the 52 blendshapes (a heuristic; avatars with perfect-sync shapes use those):

* ``Blink`` = min(eyeBlinkLeft, eyeBlinkRight); ``Blink_L``/``Blink_R`` = each eye's blink minus
  ``Blink`` (avatars add the both-eyes and one-eye shapes, so the common part is sent once);
* ``A`` = jawOpen x (1 - wide) x (1 - round), ``E`` = jawOpen x wide, ``I`` = wide x (1 - jawOpen),
  ``O`` = jawOpen x mouthFunnel, ``U`` = mouthPucker x (1 - jawOpen), where wide = mean of
  mouthStretch and mouthSmile (both sides) and round = max(mouthFunnel, mouthPucker);
* ``Joy`` = smile x cheekSquint, ``Fun`` = smile x (1 - cheekSquint) (a big smile narrows the eyes),
  ``Angry`` = mean browDown x (1 - smile), ``Sorrow`` = (browInnerUp + mean mouthFrown) / 2, with smile
  and cheekSquint the means over both sides.
"""
from __future__ import annotations

import math
import struct
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from .arkit import ARKIT_NAMES, vmc_name

__all__ = ["DEFAULT_PORT", "PERFECT_SYNC_NAMES", "VRM_PRESETS", "encode_vmc_bundle", "mirror_blendshapes",
           "unity_head_rotation", "vrm_presets"]

DEFAULT_PORT = 39539
PERFECT_SYNC_NAMES: tuple[str, ...] = tuple(vmc_name(n) for n in ARKIT_NAMES)
VRM_PRESETS: tuple[str, ...] = ("A", "I", "U", "E", "O", "Blink", "Blink_L", "Blink_R", "Joy", "Angry", "Sorrow",
                                "Fun")
CALIBRATED, NORMAL_MODE = 3, 0
# Nominal local bone offsets in metres (a typical VRM's neck above the chest, head above the neck).
NECK_OFFSET = (0.0, 0.1, 0.0)
HEAD_OFFSET = (0.0, 0.08, 0.0)

_INDEX = {name: k for k, name in enumerate(ARKIT_NAMES)}
_BUNDLE_HEAD = b"#bundle\x00" + struct.pack(">Q", 1)       # time tag 1 = "immediately"
_F = struct.Struct(">f")
_SIZE = struct.Struct(">i")
# Left/Right partner of every name, for mirroring.
_MIRROR = np.array([_INDEX.get(n.replace("Left", "\0").replace("Right", "Left").replace("\0", "Right"), k)
                    for k, n in enumerate(ARKIT_NAMES)], np.intp)


@lru_cache(maxsize=None)
def _templates() -> dict:
    """OSC message bytes built once by python-osc; per frame only the float arguments change.

    A message is address, type tags and arguments, each padded to 4 bytes, so a ``/VMC/Ext/Blend/Val``
    message for a name is a fixed prefix followed by one big-endian float.
    """
    from pythonosc.osc_message_builder import OscMessageBuilder

    def build(address: str, *args) -> bytes:
        builder = OscMessageBuilder(address)
        for arg in args:
            builder.add_arg(arg, "s" if isinstance(arg, str) else "i" if isinstance(arg, int) else "f")
        return builder.build().dgram

    def prefix(address: str, name: str, floats: int) -> bytes:
        # Strip the trailing float arguments from a message built with zeros.
        return build(address, name, *([0.0] * floats))[: -4 * floats]

    return {
        "ok": {status: build("/VMC/Ext/OK", 1, CALIBRATED, NORMAL_MODE, status) for status in (0, 1)},
        "time": build("/VMC/Ext/T", 0.0)[:-4],
        "root": build("/VMC/Ext/Root/Pos", "root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
        "neck": prefix("/VMC/Ext/Bone/Pos", "Neck", 7),
        "head": prefix("/VMC/Ext/Bone/Pos", "Head", 7),
        "blend": [prefix("/VMC/Ext/Blend/Val", name, 1) for name in PERFECT_SYNC_NAMES + VRM_PRESETS],
        "apply": build("/VMC/Ext/Blend/Apply"),
    }


def _element(message: bytes) -> bytes:
    return _SIZE.pack(len(message)) + message


def vrm_presets(blendshapes: np.ndarray) -> np.ndarray:
    """The 12 VRM 0.x preset weights (``VRM_PRESETS`` order) from 52 ARKit values (mapping: module docstring)."""
    b = np.clip(np.asarray(blendshapes, np.float64), 0.0, 1.0)

    def v(name: str) -> float:
        return float(b[_INDEX[name]])

    def mean(*names: str) -> float:
        return sum(v(n) for n in names) / len(names)

    jaw = v("jawOpen")
    smile = mean("mouthSmileLeft", "mouthSmileRight")
    wide = mean("mouthStretchLeft", "mouthStretchRight", "mouthSmileLeft", "mouthSmileRight")
    round_ = max(v("mouthFunnel"), v("mouthPucker"))
    squint = mean("cheekSquintLeft", "cheekSquintRight")
    blink_l, blink_r = v("eyeBlinkLeft"), v("eyeBlinkRight")
    blink = min(blink_l, blink_r)
    values = (jaw * (1 - wide) * (1 - round_), wide * (1 - jaw), v("mouthPucker") * (1 - jaw), jaw * wide,
              jaw * v("mouthFunnel"), blink, blink_l - blink, blink_r - blink, smile * squint,
              mean("browDownLeft", "browDownRight") * (1 - smile),
              (v("browInnerUp") + mean("mouthFrownLeft", "mouthFrownRight")) / 2, smile * (1 - squint))
    return np.clip(np.array(values), 0.0, 1.0)


def mirror_blendshapes(blendshapes: np.ndarray) -> np.ndarray:
    """The 52 values with every Left and Right name swapped (for a mirrored avatar)."""
    return np.asarray(blendshapes)[_MIRROR]


def _quat_mul(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz)


def _quat_power(q: Sequence[float], share: float) -> tuple[float, float, float, float]:
    x, y, z, w = q
    if w < 0:
        x, y, z, w = -x, -y, -z, -w
    s = math.sqrt(x * x + y * y + z * z)
    if s < 1e-12 or share == 0.0:
        return (0.0, 0.0, 0.0, 1.0) if share == 0.0 else (x, y, z, w)
    half = math.atan2(s, w) * share
    k = math.sin(half) / s
    return (x * k, y * k, z * k, math.cos(half))


def unity_head_rotation(quaternion: Sequence[float], mirror: bool = False) -> tuple[float, float, float, float]:
    """Unity (x, y, z, w) of the head's turn from our pose quaternion (see the module docstring).

    ``mirror`` reflects the turn left-right (x stays, y and z change sign).
    """
    x, y, z, w = (float(c) for c in quaternion)
    norm = math.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return (x, -y, -z, w) if mirror else (x, y, z, w)


def encode_vmc_bundle(time_s: float, blendshapes: np.ndarray | None = None,
                      head_quaternion: Sequence[float] | None = None, *, neck_share: float = 0.0,
                      mirror: bool = False) -> bytes:
    """One VMC frame as an OSC bundle. ``head_quaternion`` None means no face is tracked.

    ``blendshapes``: 52 values in ARKIT_NAMES order (clipped to 0..1), or None to send no expression.
    """
    t = _templates()
    parts = [_element(t["ok"][head_quaternion is not None]), _element(t["time"] + _F.pack(time_s))]
    if head_quaternion is not None:
        full = unity_head_rotation(head_quaternion, mirror)
        neck = _quat_power(full, neck_share)
        head = _quat_mul((-neck[0], -neck[1], -neck[2], neck[3]), full)
        parts.append(_element(t["root"]))
        parts.append(_element(t["neck"] + struct.pack(">7f", *NECK_OFFSET, *neck)))
        parts.append(_element(t["head"] + struct.pack(">7f", *HEAD_OFFSET, *head)))
        if blendshapes is not None:
            values = np.clip(np.asarray(blendshapes, np.float64), 0.0, 1.0)
            if values.shape != (len(ARKIT_NAMES),):
                raise ValueError(f"expected {len(ARKIT_NAMES)} blendshapes, got shape {values.shape}")
            if mirror:
                values = mirror_blendshapes(values)
            packed = np.concatenate([values, vrm_presets(values)]).astype(">f4").tobytes()
            for k, prefix in enumerate(t["blend"]):
                parts.append(_element(prefix + packed[4 * k:4 * k + 4]))
            parts.append(_element(t["apply"]))
    return _BUNDLE_HEAD + b"".join(parts)


def blendshape_dict(values: Mapping[str, float]) -> dict[str, float]:
    """Apple's names from perfect-sync names received over VMC (for receivers and tests)."""
    lookup = dict(zip(PERFECT_SYNC_NAMES, ARKIT_NAMES))
    return {lookup[name]: float(v) for name, v in values.items() if name in lookup}
