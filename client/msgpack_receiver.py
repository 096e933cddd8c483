"""Receiving Facewire's msgpack frames over UDP (``facetracker --output msgpack://127.0.0.1:11574``).

Same interface as :class:`~facewire.client.receiver.OpenSeeFaceReceiver`: newest face per id,
snapshots, iteration, ``wait``, ``stats``, expiry and allowed senders. Each record is a
:class:`~facewire.client.msgpack_frame.MsgpackFace`; a frame with no face arrives as an empty list,
and :meth:`MsgpackReceiver.latest_frame` gives the newest frame's header (number, times, image size).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from .msgpack_frame import DEFAULT_PORT, MsgpackFace, MsgpackFrame, decode_frame
from .protocol import DatagramError
from .receiver import DatagramReceiver

__all__ = ["FrameKeeper", "MsgpackReceiver"]


class FrameKeeper:
    """Decodes datagrams into faces and remembers the newest frame (shared by the UDP and ZeroMQ receivers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: MsgpackFrame | None = None

    def __call__(self, data: bytes) -> list[MsgpackFace]:
        frame = decode_frame(data)
        with self._lock:
            self._frame = frame
        return list(frame.faces)

    @property
    def frame(self) -> MsgpackFrame | None:
        with self._lock:
            return self._frame


def face_key(face: MsgpackFace) -> int:
    return face.id


class MsgpackReceiver(DatagramReceiver[MsgpackFace]):
    """Listen for Facewire msgpack datagrams; invalid ones are dropped and counted by ``reason``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        expire_after: float | None = 1.0,
        allowed_senders: Iterable[str | tuple[str, int]] | None = None,
        on_frame: Callable[[list[MsgpackFace]], object] | None = None,
        *,
        rate_window: float = 2.0,
    ) -> None:
        self._keeper = FrameKeeper()
        super().__init__(self._keeper, face_key, host=host, port=port, expire_after=expire_after,
                         allowed_senders=allowed_senders, on_frame=on_frame, drop_errors=(DatagramError,),
                         rate_window=rate_window, name="facewire-msgpack-receiver")

    def latest_frame(self) -> MsgpackFrame | None:
        """The newest valid frame (header and faces), including frames with no face."""
        return self._keeper.frame

    def latest(self, face_id: int | None = None) -> MsgpackFace | None:
        return super().latest(face_id)

    def faces(self) -> Mapping[int, MsgpackFace]:  # type: ignore[override]
        return super().faces()  # type: ignore[return-value]
