"""``vmc://HOST:PORT``: the VMC protocol (Warudo, VSeeFace, VNyan, VMagicMirror, EVMC4U; port 39539).

One OSC bundle per frame (format: ``facewire.client.vmc``). VMC drives one avatar, so one face is sent:
``?face=ID`` picks the face with that OpenSeeFace id (``FaceResult.slot``: 0..faces-1, plus
--face-id-offset; a person keeps it while tracked), otherwise the first face of the frame. ``?mirror=1`` mirrors the head
turn and swaps Left/Right expressions; ``?neck=0.5`` gives that share of the head turn to the Neck bone.
"""
from __future__ import annotations

import logging

from facewire.client.vmc import DEFAULT_PORT, encode_vmc_bundle

from ..result import FaceResult, FrameResult
from ..transport import UdpSender
from .base import Output, OutputTarget, OutputUrlError, flag, number

log = logging.getLogger(__name__)


def pick_face(frame: FrameResult, face_id: int | None) -> FaceResult | None:
    """The face an avatar output follows: the one in slot ``face_id`` (the id OpenSeeFace records and the
    ``-v 2`` window show), or the first face (with a pose: the loop computes it because these outputs
    declare ``needs`` "pose")."""
    if face_id is None:
        face = frame.faces[0] if frame.faces else None
    else:
        face = next((f for f in frame.faces if f.slot == face_id), None)
    return None if face is None or face.pose is None else face


def face_option(target: OutputTarget) -> int | None:
    if "face" not in target.options:
        return None
    try:
        return int(target.options["face"])
    except ValueError:
        raise OutputUrlError(f"--output {target.url}: face={target.options['face']!r} must be a face id "
                             f"(an integer)") from None


class VmcOutput(Output):
    scheme = "vmc"
    default_port = DEFAULT_PORT
    options = frozenset({"face", "mirror", "neck"})

    def __init__(self, target: OutputTarget) -> None:
        super().__init__(target)
        self.needs = frozenset({"pose", "blendshapes"})
        self.face_id = face_option(target)
        self.mirror = flag(target, "mirror")
        self.neck_share = number(target, "neck", 0.0, 0.0, 1.0)
        self._sender: UdpSender | None = None
        self._started: float | None = None
        self._warned = False

    def open(self) -> None:
        self._sender = self._udp_sender()
        self._started = None

    def encode(self, frame: FrameResult) -> bytes:
        """The frame's bundle; /VMC/Ext/T counts seconds of capture time since the first frame."""
        face = pick_face(frame, self.face_id)
        if self._started is None:
            self._started = frame.capture_monotonic
        elapsed = frame.capture_monotonic - self._started
        if face is None:
            return encode_vmc_bundle(elapsed)
        if face.blendshapes is None and not self._warned:
            log.warning("%s: the faces carry no blendshapes; sending the head only", self.name)
            self._warned = True
        return encode_vmc_bundle(elapsed, face.blendshapes, face.pose.quaternion, neck_share=self.neck_share,
                                 mirror=self.mirror)

    def send(self, frame: FrameResult) -> None:
        self._frames += 1
        data = self.encode(frame)
        before = self._sender.sent
        self._sender.send(data)
        self._count(self._sender.sent - before, len(data))
        self._errors = self._sender.errors

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
