"""``osf://HOST:PORT``: OpenSeeFace's records, what the daemon has always sent (VSeeFace, VTube Studio...).

The records themselves are built by ``packets.RecordBuilder`` in the loop (it keeps OpenSeeFace's
per-face state) and travel in ``FaceResult.osf``; this output only encodes and sends them, one datagram
per frame with a face, as OpenSeeFace does (no datagram when no face is tracked).
"""
from __future__ import annotations

from facewire.client.protocol import RECORD_SIZE, encode_datagram

from ..result import FrameResult
from ..transport import UdpSender
from .base import Output, OutputTarget

DEFAULT_PORT = 11573


class OsfOutput(Output):
    scheme = "osf"
    default_port = DEFAULT_PORT

    def __init__(self, target: OutputTarget) -> None:
        super().__init__(target)
        self._sender: UdpSender | None = None

    def open(self) -> None:
        self._sender = self._udp_sender()

    def send(self, frame: FrameResult) -> None:
        self._frames += 1
        records = [face.osf for face in frame.faces if face.osf is not None]
        if not records:
            return
        data = encode_datagram(records)
        before = self._sender.sent
        self._sender.send(data, RECORD_SIZE)
        self._count(self._sender.sent - before, len(data))
        self._errors = self._sender.errors

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
