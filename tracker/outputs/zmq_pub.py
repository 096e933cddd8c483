"""``zmq+tcp://HOST:PORT``: the msgpack frames on a ZeroMQ PUB socket (any number of subscribers).

``?curve=PATH/facewire.key_secret`` encrypts the stream and accepts only subscribers that hold the
server's public key (``facewire.key``, made together by ``facewire keys``). ``?mesh=1`` as for msgpack.
Use ``0.0.0.0`` (or ``*``) as the host to accept subscribers from other machines.
"""
from __future__ import annotations

from facewire.client.msgpack_frame import MAX_DATAGRAM
from facewire.client.zmq_stream import DEFAULT_PORT, CurveKeyError, ZmqPublisher

from ..result import FrameResult
from ..transport import TransportError
from .base import Output, OutputTarget, OutputUrlError, flag
from .msgpack_udp import encode_result


class ZmqOutput(Output):
    scheme = "zmq+tcp"
    default_port = DEFAULT_PORT
    options = frozenset({"mesh", "curve"})

    def __init__(self, target: OutputTarget) -> None:
        super().__init__(target)
        self.mesh = flag(target, "mesh")
        self.needs = frozenset({"pose", "blendshapes", "mesh"} if self.mesh else {"pose", "blendshapes"})
        self.curve = target.options.get("curve") or None
        if "curve" in target.options and not self.curve:
            raise OutputUrlError(f"--output {target.url}: curve= needs the server's secret key file "
                                 f"(made by facewire keys)")
        self.endpoint = f"tcp://{target.host}:{target.port}"
        self._publisher: ZmqPublisher | None = None

    def open(self) -> None:
        try:
            self._publisher = ZmqPublisher(self.endpoint, self.curve)
        except CurveKeyError as exc:
            raise OutputUrlError(f"--output {self.name}: {exc}") from None
        except OSError as exc:          # the port is taken, or the host is not an address of this machine
            raise TransportError(f"--output {self.name}: {exc}") from None

    def send(self, frame: FrameResult) -> None:
        self._frames += 1
        # Parts stay under a datagram's size too, so ZeroMQ and UDP subscribers decode the same messages.
        for data in encode_result(frame, self.mesh, MAX_DATAGRAM):
            before = self._publisher.sent
            self._publisher.send(data)
            self._count(self._publisher.sent - before, len(data))
        self._errors = self._publisher.errors

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
