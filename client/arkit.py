"""Apple's 52 ARKit blendshape names, and how each protocol spells them.

Avatars rigged for "perfect sync" (VRM in VSeeFace, Warudo, VNyan, VMagicMirror; Live2D rigs) expect
exactly Apple's 52 ``ARFaceAnchor.BlendShapeLocation`` names. The protocols spell them differently:

* Apple's own names (``eyeBlinkLeft``): our results, msgpack frames, CSV logs;
* VMC perfect sync: PascalCase (``EyeBlinkLeft``); VMC names are case-sensitive;
* iFacialMocap: the raw ARKit key with ``_L``/``_R`` suffixes (``eyeBlink_L``), as the phone app sends them.

MediaPipe's blendshape model outputs 52 scores in its own order: ``_neutral`` first, then Apple's names
in alphabetical order (Left before Right) without ``tongueOut``.
"""
from __future__ import annotations

__all__ = ["ARKIT_NAMES", "MEDIAPIPE_ORDER", "ifacialmocap_name", "vmc_name"]

#: MediaPipe's blendshape model output order (index 0 is ``_neutral``, which Apple does not have).
MEDIAPIPE_ORDER: tuple[str, ...] = (
    "_neutral",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft",
    "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)

#: Apple's 52 names, in the order every Facewire result and wire format uses: MediaPipe's order
#: without ``_neutral``, then ``tongueOut``. "Left" and "Right" are the subject's own sides.
ARKIT_NAMES: tuple[str, ...] = MEDIAPIPE_ORDER[1:] + ("tongueOut",)


def vmc_name(name: str) -> str:
    """VMC perfect-sync name: Apple's name with its first letter upper-cased (``EyeBlinkLeft``)."""
    return name[:1].upper() + name[1:]


def ifacialmocap_name(name: str) -> str:
    """iFacialMocap's key: ``Left``/``Right`` at the end become ``_L``/``_R`` (``eyeBlink_L``)."""
    for side, suffix in (("Left", "_L"), ("Right", "_R")):
        if name.endswith(side):
            return name[: -len(side)] + suffix
    return name
