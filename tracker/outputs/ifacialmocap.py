"""``ifacialmocap://HOST:PORT``: pose as the iFacialMocap phone app (VSeeFace, VNyan, Warudo,
VMagicMirror, Inochi Session; port 49983). Format: ``facewire.client.ifacialmocap``.

Two ways to connect:

* ``ifacialmocap://127.0.0.1:49983`` streams to that address from the start (same PC, or an app whose
  address you know);
* ``ifacialmocap://0.0.0.0:49983?listen`` behaves like the phone: it listens on that port and, when an
  app's handshake arrives, streams to port 49983 at the handshake's IP address, as the phone does (the
  app on another PC needs only this PC's address; apps may send the handshake from any port).
  ``&reply_port=N`` streams to port N instead. Several apps may connect; each sender is kept. A
  handshake asking for ``sendDataVersion=v2`` gets the v2 separator.

``?face=ID`` picks the face to send by its OpenSeeFace id (the slot; default: the first face of each frame). A frame with no face sends
nothing (the apps keep the last pose, as when the phone loses the face).
"""
from __future__ import annotations

import logging
import socket

from facewire.client.ifacialmocap import (DEFAULT_PORT, arkit_eye_angles, arkit_head_angles, encode_ifacialmocap,
                                          is_handshake, wants_v2)

from ..result import FaceResult, FrameResult
from ..transport import TransportError, UdpSender
from .base import Output, OutputTarget, OutputUrlError, flag, number
from .vmc import face_option, pick_face

log = logging.getLogger(__name__)

MAX_PEERS = 8


def encode_face(face: FaceResult, v2: bool = False) -> bytes:
    """The face's datagram: ARKit-frame angles from our pose and gaze, position in metres."""
    pose = face.pose
    tx, ty, tz = (float(v) / 1000.0 for v in pose.translation)
    return encode_ifacialmocap(face.blendshapes, arkit_head_angles(pose.yaw, pose.pitch, pose.roll), (tx, -ty, -tz),
                               arkit_eye_angles(face.gaze_right), arkit_eye_angles(face.gaze_left), v2=v2)


class IFacialMocapOutput(Output):
    scheme = "ifacialmocap"
    default_port = DEFAULT_PORT
    options = frozenset({"listen", "face", "v2", "reply_port"})

    def __init__(self, target: OutputTarget) -> None:
        super().__init__(target)
        self.needs = frozenset({"pose", "blendshapes"})
        self.listen = flag(target, "listen")
        self.v2 = flag(target, "v2")
        self.face_id = face_option(target)
        self.reply_port = int(number(target, "reply_port", DEFAULT_PORT, 1, 65535))
        if "reply_port" in target.options and not self.listen:
            raise OutputUrlError(f"--output {target.url}: reply_port applies only with ?listen")
        self._sender: UdpSender | None = None
        self._socket: socket.socket | None = None
        self.peers: dict[tuple, bool] = {}        # address -> wants v2
        self._warned = False

    def open(self) -> None:
        if not self.listen:
            self._sender = self._udp_sender()
            return
        try:
            family, _, _, _, address = socket.getaddrinfo(self.target.host, self.target.port,
                                                          type=socket.SOCK_DGRAM)[0]
        except socket.gaierror as exc:
            raise TransportError(f"--output {self.name}: cannot resolve {self.target.host!r}: {exc}") from None
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise TransportError(f"--output {self.name}: cannot listen on {self.target.host}:{self.target.port} for "
                                 f"the iFacialMocap handshake ({exc}); the host must be an address of this machine "
                                 f"(0.0.0.0 for all) and the port free (an app listening for a phone on this PC "
                                 f"takes it: then stream to it without ?listen)") from None
        sock.setblocking(False)
        self._socket = sock
        self.address = sock.getsockname()[:2]
        log.info("%s: waiting for an app's iFacialMocap handshake on %s:%d", self.name, *self.address)

    def _poll_handshakes(self) -> None:
        """Read every pending datagram without blocking; handshakes add their sender."""
        while True:
            try:
                data, source = self._socket.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:     # e.g. ICMP unreachable from a peer that left
                log.debug("%s: receive error ignored: %s", self.name, exc)
                return
            if is_handshake(data):
                peer = (source[0], self.reply_port, *source[2:])      # IPv6 keeps flow info and scope
                if peer not in self.peers:
                    log.info("%s: streaming to %s:%d", self.name, *peer[:2])
                    if len(self.peers) >= MAX_PEERS:
                        self.peers.pop(next(iter(self.peers)))
                self.peers[peer] = wants_v2(data)

    def send(self, frame: FrameResult) -> None:
        self._frames += 1
        if self._socket is not None:
            self._poll_handshakes()
            if not self.peers:
                return
        face = pick_face(frame, self.face_id)
        if face is None:
            return
        if face.blendshapes is None and not self._warned:
            log.warning("%s: the faces carry no blendshapes; sending zeros for them", self.name)
            self._warned = True
        if self._sender is not None:
            data = encode_face(face, self.v2)
            before = self._sender.sent
            self._sender.send(data)
            self._count(self._sender.sent - before, len(data))
            self._errors = self._sender.errors
            return
        cache: dict[bool, bytes] = {}
        for address, v2 in list(self.peers.items()):
            data = cache.get(v2) or cache.setdefault(v2, encode_face(face, v2 or self.v2))
            try:
                self._socket.sendto(data, address)
                self._count(1, len(data))
            except OSError as exc:
                self._errors += 1
                log.debug("%s: sending to %s failed: %s", self.name, address, exc)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
