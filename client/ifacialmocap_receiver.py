"""Receiving the iFacialMocap text stream (``facetracker --output ifacialmocap://127.0.0.1:49983``, or the
phone app itself) with the same interface as the other receivers.

The format has no face ids (the phone tracks one face), so every frame is one record under key 0.
``connect_to`` sends the app's handshake to a tracker or phone running in listening mode; the stream
then comes to this machine's port 49983 (the phone's rule), so listen there, or start the tracker with
``&reply_port=`` this receiver's port.
"""
from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping

from .ifacialmocap import DEFAULT_PORT, HANDSHAKE, IFacialMocapFrame, parse_ifacialmocap
from .protocol import DatagramError
from .receiver import DatagramReceiver

__all__ = ["IFacialMocapReceiver"]


def _one(data: bytes) -> list[IFacialMocapFrame]:
    return [parse_ifacialmocap(data)]


class IFacialMocapReceiver(DatagramReceiver[IFacialMocapFrame]):
    """Listen for iFacialMocap datagrams; invalid ones are dropped and counted by ``reason``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        expire_after: float | None = 1.0,
        allowed_senders: Iterable[str | tuple[str, int]] | None = None,
        on_frame: Callable[[list[IFacialMocapFrame]], object] | None = None,
        *,
        rate_window: float = 2.0,
    ) -> None:
        super().__init__(_one, lambda _frame: 0, host=host, port=port, expire_after=expire_after,
                         allowed_senders=allowed_senders, on_frame=on_frame, drop_errors=(DatagramError,),
                         rate_window=rate_window, name="facewire-ifacialmocap-receiver")

    def connect_to(self, host: str, port: int = DEFAULT_PORT, v2: bool = False) -> None:
        """Ask a listening sender (``?listen``, or the phone app) to stream to this receiver."""
        message = HANDSHAKE + (b"|sendDataVersion=v2" if v2 else b"")
        try:
            self._socket.sendto(message, (host, port))
        except (OSError, socket.gaierror) as exc:
            raise OSError(f"cannot send the iFacialMocap handshake to {host}:{port}: {exc}") from None

    def latest(self, face_id: int | None = None) -> IFacialMocapFrame | None:
        return super().latest(face_id)

    def faces(self) -> Mapping[int, IFacialMocapFrame]:  # type: ignore[override]
        return super().faces()  # type: ignore[return-value]
