"""``msgpack://HOST:PORT``: Facewire's own self-describing frames over UDP (schema: client/PROTOCOL.md).

Every frame is sent, an empty face list included, so receivers know at once when tracking is lost.
``?mesh=1`` (or the command line's ``--mesh``) adds the 478-point mesh to every face.
"""
from __future__ import annotations

from facewire.client.msgpack_frame import DEFAULT_PORT, MAX_DATAGRAM, FaceValues, encode_face, encode_frame

from ..result import FaceResult, FrameResult
from ..transport import UdpSender
from .base import Output, OutputTarget, flag


def face_values(face: FaceResult, with_mesh: bool) -> FaceValues:
    pose = face.pose
    return FaceValues(face.slot, face.id, face.box, face.confidence, face.points68, pose.yaw, pose.pitch, pose.roll,
                      pose.quaternion, pose.translation, face.gaze_right, face.gaze_left, face.eye_open_right,
                      face.eye_open_left, face.features, face.blendshapes, face.mesh if with_mesh else None)


def encode_result(frame: FrameResult, with_mesh: bool, max_size: int | None) -> list[bytes]:
    """The frame's msgpack datagrams (one unless the faces need more than one datagram)."""
    # Faces without our pose cannot be described in this schema; the output's needs make the loop compute it.
    faces = [encode_face(face_values(f, with_mesh)) for f in frame.faces if f.pose is not None]
    return encode_frame(frame.frame, frame.capture_time, frame.capture_monotonic, frame.send_time,
                        (frame.width, frame.height), faces, max_size)


class MsgpackOutput(Output):
    scheme = "msgpack"
    default_port = DEFAULT_PORT
    options = frozenset({"mesh"})

    def __init__(self, target: OutputTarget) -> None:
        super().__init__(target)
        self.mesh = flag(target, "mesh")
        self.needs = frozenset({"pose", "blendshapes", "mesh"} if self.mesh else {"pose", "blendshapes"})
        self._sender: UdpSender | None = None

    def open(self) -> None:
        self._sender = self._udp_sender()

    def send(self, frame: FrameResult) -> None:
        self._frames += 1
        for data in encode_result(frame, self.mesh, MAX_DATAGRAM):
            before = self._sender.sent
            self._sender.send(data)
            self._count(self._sender.sent - before, len(data))
        self._errors = self._sender.errors

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
