"""Background UDP receivers that keep the newest record per face.

:class:`DatagramReceiver` owns the socket, the thread, expiry, statistics and waiting; it takes
a decode function, so other wire formats can reuse it. :class:`OpenSeeFaceReceiver` plugs in
OpenSeeFace's decoder and keys records by face id.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, TypeVar

from .protocol import DatagramError, OpenSeeFaceRecord, decode_datagram

__all__ = ["DatagramReceiver", "OpenSeeFaceReceiver", "ReceiverError", "ReceiverStats"]

_log = logging.getLogger(__name__)

R = TypeVar("R")

#: Larger than any UDP payload over IPv4, so the kernel never truncates silently.
_BUFFER_SIZE = 65536
_POLL_SECONDS = 0.1
_JOIN_SECONDS = 1.0

#: Drop reasons the base class assigns itself; decoders add their own (e.g. "length").
DROP_SENDER = "sender"
DROP_DECODE_BUG = "decoder_error"


class ReceiverError(OSError):
    """The receiver could not start (typically: the port is taken)."""


@dataclass(frozen=True)
class ReceiverStats:
    """Counters since the receiver started; ``received == accepted + sum(dropped.values())``."""

    received: int
    accepted: int
    dropped: Mapping[str, int]
    records: int
    callback_errors: int
    face_rates: Mapping[Hashable, float]

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class _Senders:
    """Allowed source addresses: bare hosts match any port, (host, port) pairs one port."""

    def __init__(self, senders: Iterable[str | tuple[str, int]]) -> None:
        self._hosts: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        self._pairs: set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = set()
        for sender in senders:
            if isinstance(sender, tuple):
                host, port = sender
                self._pairs.update((ip, int(port)) for ip in _resolve(host))
            else:
                self._hosts.update(_resolve(sender))

    def allows(self, host: str, port: int) -> bool:
        ip = _parse_ip(host)
        if ip is None:
            return False
        return ip in self._hosts or (ip, port) in self._pairs


def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _resolve(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    ip = _parse_ip(host)
    if ip is not None:
        return {ip}
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ValueError(
            f"allowed sender {host!r} is neither an IP address nor a resolvable host: {exc}"
        ) from exc
    return {ip for info in infos if (ip := _parse_ip(str(info[4][0]))) is not None}


class DatagramReceiver(Generic[R]):
    """Receive datagrams on a daemon thread, decode them, keep the newest record per key.

    ``decode`` turns one datagram into a list of records; exceptions of the types in
    ``drop_errors`` mark the datagram as invalid and are counted under the ``reason`` of a
    :class:`DatagramError` (decoders of other formats can raise it too) or the class name.
    ``key`` maps a record to its face key. ``on_frame`` is called on the receiver thread with
    every accepted frame (the list of records of one datagram); its exceptions are logged and
    counted, never fatal.
    """

    def __init__(
        self,
        decode: Callable[[bytes], Sequence[R]],
        key: Callable[[R], Hashable],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        expire_after: float | None = 1.0,
        allowed_senders: Iterable[str | tuple[str, int]] | None = None,
        on_frame: Callable[[list[R]], object] | None = None,
        drop_errors: tuple[type[Exception], ...] = (ValueError,),
        rate_window: float = 2.0,
        name: str = "facewire-receiver",
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            # getaddrinfo would wrap 99999 to 34463 and listen there without a word.
            raise ValueError(f"port must be 0-65535 (0 = any free port), got {port!r}")
        if expire_after is not None and expire_after <= 0:
            raise ValueError(f"expire_after must be positive or None, got {expire_after}")
        if rate_window <= 0:
            raise ValueError(f"rate_window must be positive, got {rate_window}")
        self._decode = decode
        self._key = key
        self._expire_after = expire_after
        self._senders = None if allowed_senders is None else _Senders(allowed_senders)
        self._on_frame = on_frame
        self._drop_errors = drop_errors
        self._rate_window = rate_window

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._latest: dict[Hashable, R] = {}
        self._seen_at: dict[Hashable, float] = {}
        self._arrivals: dict[Hashable, deque[float]] = {}
        self._newest_key: Hashable | None = None
        self._frame: list[R] | None = None
        self._frame_seq = 0
        self._received = 0
        self._accepted = 0
        self._records = 0
        self._callback_errors = 0
        self._dropped: dict[str, int] = {}
        self._closed = False

        self._socket = self._bind(host, port)
        self.address: tuple[str, int] = self._socket.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- socket and thread ------------------------------------------------------------------

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except socket.gaierror as exc:
            raise ReceiverError(f"cannot resolve listening host {host!r}: {exc}") from exc
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            raise ReceiverError(
                f"cannot listen on {host}:{port}: {exc}. Is another tracker receiver (VSeeFace, "
                "VTube Studio, another script) using it? Close it or pick another port (0 = any free port)."
            ) from exc
        sock.settimeout(_POLL_SECONDS)
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self._socket.recvfrom(_BUFFER_SIZE)
            except socket.timeout:
                self._expire()
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break
                # e.g. ICMP "port unreachable" surfacing on some platforms; keep listening.
                _log.debug("receive error ignored: %s", exc)
                continue
            try:
                self._handle(data, source)
            except Exception:  # noqa: BLE001 - the thread must survive anything
                _log.exception("unexpected error while handling a datagram from %s", source)

    def _handle(self, data: bytes, source: tuple) -> None:
        host, port = str(source[0]), int(source[1])
        if self._senders is not None and not self._senders.allows(host, port):
            self._count_drop(DROP_SENDER)
            return
        if len(data) >= _BUFFER_SIZE:
            self._count_drop("oversized")
            return
        try:
            records = list(self._decode(data))
            keys = [self._key(rec) for rec in records]
        except self._drop_errors as exc:
            self._count_drop(exc.reason if isinstance(exc, DatagramError) else type(exc).__name__)
            _log.debug("dropped %d-byte datagram from %s:%d: %s", len(data), host, port, exc)
            return
        except Exception:  # noqa: BLE001 - a decoder bug must not kill the thread
            self._count_drop(DROP_DECODE_BUG)
            _log.exception(
                "decoder raised unexpectedly on a %d-byte datagram from %s:%d", len(data), host, port
            )
            return
        now = time.monotonic()
        with self._changed:
            self._received += 1
            self._accepted += 1
            self._records += len(records)
            for rec, key in zip(records, keys):
                self._latest[key] = rec
                self._seen_at[key] = now
                arrivals = self._arrivals.setdefault(key, deque())
                arrivals.append(now)
                self._prune_arrivals(arrivals, now)
                self._newest_key = key
            self._expire_locked(now)
            self._frame = records
            self._frame_seq += 1
            self._changed.notify_all()
        if self._on_frame is not None:
            try:
                self._on_frame(list(records))
            except Exception:  # noqa: BLE001 - user callbacks must not kill the thread
                with self._lock:
                    self._callback_errors += 1
                _log.exception("on_frame callback raised; the receiver keeps running")

    def _count_drop(self, reason: str) -> None:
        with self._lock:
            self._received += 1
            self._dropped[reason] = self._dropped.get(reason, 0) + 1

    def _prune_arrivals(self, arrivals: deque[float], now: float) -> None:
        while arrivals and arrivals[0] < now - self._rate_window:
            arrivals.popleft()

    def _expire(self) -> None:
        with self._lock:
            self._expire_locked(time.monotonic())

    def _expire_locked(self, now: float) -> None:
        if self._expire_after is None:
            return
        stale = [key for key, seen in self._seen_at.items() if now - seen > self._expire_after]
        for key in stale:
            del self._latest[key], self._seen_at[key], self._arrivals[key]
            if self._newest_key == key:
                self._newest_key = None

    # --- public API -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the receiving thread is alive."""
        return self._thread.is_alive()

    def latest(self, face_id: Hashable | None = None) -> R | None:
        """The newest record of ``face_id``, or of whichever face was heard last; None if none is live."""
        with self._lock:
            self._expire_locked(time.monotonic())
            if face_id is None:
                if self._newest_key is not None:
                    return self._latest[self._newest_key]
                if not self._seen_at:
                    return None
                return self._latest[max(self._seen_at, key=self._seen_at.__getitem__)]
            return self._latest.get(face_id)

    def faces(self) -> Mapping[Hashable, R]:
        """A read-only snapshot of the newest record of every live face."""
        with self._lock:
            self._expire_locked(time.monotonic())
            return MappingProxyType(dict(self._latest))

    @property
    def frame_count(self) -> int:
        """How many frames (valid datagrams) have been accepted so far; see :meth:`wait`."""
        with self._lock:
            return self._frame_seq

    def wait(self, timeout: float | None = None, after: int | None = None) -> list[R] | None:
        """Block until a new frame arrives; return it, or None on timeout or close.

        "New" means after this call, or, with ``after``, once :attr:`frame_count` exceeds it
        (read ``frame_count`` before triggering a sender to wait without a race). If several
        frames arrive before the caller wakes up, the newest one is returned.
        """
        with self._lock:
            seq = self._frame_seq if after is None else after
        return self._wait_after(seq, timeout)[1]

    def _wait_after(self, seq: int, timeout: float | None) -> tuple[int, list[R] | None]:
        with self._changed:
            arrived = self._changed.wait_for(lambda: self._frame_seq > seq or self._closed, timeout)
            if not arrived or self._frame_seq <= seq or self._frame is None:
                return seq, None
            return self._frame_seq, list(self._frame)

    def __iter__(self) -> Iterator[list[R]]:
        """Yield frames as they arrive (the newest one when the consumer falls behind) until closed."""
        with self._lock:
            seq = self._frame_seq
        while True:
            seq, frame = self._wait_after(seq, None)
            if frame is None:
                return
            yield frame

    def stats(self) -> ReceiverStats:
        """Counters and per-face receive rates (Hz over the last ``rate_window`` seconds)."""
        now = time.monotonic()
        with self._lock:
            self._expire_locked(now)
            rates: dict[Hashable, float] = {}
            for key, arrivals in self._arrivals.items():
                self._prune_arrivals(arrivals, now)
                span = arrivals[-1] - arrivals[0] if len(arrivals) >= 2 else 0.0
                rates[key] = (len(arrivals) - 1) / span if span > 0 else 0.0
            return ReceiverStats(
                received=self._received,
                accepted=self._accepted,
                dropped=MappingProxyType(dict(self._dropped)),
                records=self._records,
                callback_errors=self._callback_errors,
                face_rates=MappingProxyType(rates),
            )

    def close(self) -> None:
        """Stop the thread (it polls every 0.1 s, so this returns well within a second) and free the port."""
        self._stop.set()
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(_JOIN_SECONDS)
            if self._thread.is_alive():
                _log.warning("receiver thread did not stop within %.1f s", _JOIN_SECONDS)
        self._socket.close()

    def __enter__(self) -> DatagramReceiver[R]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "closed"
        return f"<{type(self).__name__} {self.address[0]}:{self.address[1]} {state}>"


class OpenSeeFaceReceiver(DatagramReceiver[OpenSeeFaceRecord]):
    """Listen for OpenSeeFace datagrams (VSeeFace's default port is 11573) and track faces by id.

    Invalid datagrams (wrong length, NaN/inf) are dropped and counted under "length" and
    "non_finite"; datagrams from senders outside ``allowed_senders`` under "sender".
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 11573,
        expire_after: float | None = 1.0,
        allowed_senders: Iterable[str | tuple[str, int]] | None = None,
        on_frame: Callable[[list[OpenSeeFaceRecord]], object] | None = None,
        *,
        rate_window: float = 2.0,
    ) -> None:
        super().__init__(
            decode_datagram,
            _face_id,
            host=host,
            port=port,
            expire_after=expire_after,
            allowed_senders=allowed_senders,
            on_frame=on_frame,
            drop_errors=(DatagramError,),
            rate_window=rate_window,
            name="facewire-openseeface-receiver",
        )

    def latest(self, face_id: int | None = None) -> OpenSeeFaceRecord | None:
        """The newest record of face ``face_id``, or of whichever face was heard last."""
        return super().latest(face_id)

    def faces(self) -> Mapping[int, OpenSeeFaceRecord]:  # type: ignore[override]
        """A read-only snapshot ``{face id: newest record}`` of every live face."""
        return super().faces()  # type: ignore[return-value]


def _face_id(rec: OpenSeeFaceRecord) -> int:
    return rec.id
