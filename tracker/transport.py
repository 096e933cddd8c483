"""Sending packets over UDP.

Datagrams are fire-and-forget: a receiver that is not listening yet, or goes away, must never stall or
stop the tracker, so send errors are counted and logged once rather than raised.
"""
from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)

# One UDP datagram holds at most 65507 bytes: 36 OpenSeeFace records of 1785 bytes.
MAX_DATAGRAM = 65507


class TransportError(OSError):
    """The destination address cannot be used."""


class UdpSender:
    def __init__(self, host: str, port: int) -> None:
        if not 0 < port < 65536:
            raise TransportError(f"port {port} is outside 1..65535")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise TransportError(f"cannot resolve the destination {host!r}: {exc}") from None
        family, _, _, _, address = infos[0]
        self.address = address
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sent = 0
        self.errors = 0

    def send(self, data: bytes, record_size: int | None = None) -> None:
        """Send ``data``; longer than one datagram, it is split on record boundaries."""
        chunk = len(data)
        if chunk > MAX_DATAGRAM:
            if not record_size:
                raise ValueError(f"{chunk} bytes do not fit one datagram and no record size was given to split on")
            chunk = (MAX_DATAGRAM // record_size) * record_size
        for start in range(0, len(data), chunk):
            try:
                self._sock.sendto(data[start:start + chunk], self.address)
                self.sent += 1
            except OSError as exc:
                self.errors += 1
                if self.errors == 1 or self.errors % 1000 == 0:
                    log.warning("sending to %s:%s failed (%s); %d failures so far", *self.address[:2], exc,
                                self.errors)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "UdpSender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
