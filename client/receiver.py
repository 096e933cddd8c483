"""Background UDP receivers that keep the newest record per face.

:class:`DatagramReceiver` owns the socket, the thread, expiry, statistics and waiting; it takes
a decode function, so other wire formats can reuse it. :class:`OpenSeeFaceReceiver` plugs in
OpenSeeFace's decoder and keys records by face id.

Anyone who can reach the port can send, so the receiver's cost must not grow with what a sender
invents: at most ``max_faces`` faces are live (the one updated longest ago makes room and is counted
as evicted), faces are kept in update order so that expiry only looks at the ones that expire, and
expiry runs on a timer on the receiving thread (every 0.1 s, also while nothing arrives) rather than
for every datagram.

What :meth:`DatagramReceiver.stats` can see, and what it cannot:

* every datagram this socket read (``received``), whether it was valid (``accepted``) or dropped and why
  (``dropped``: sender not allowed, wrong length, NaN, ...);
* datagrams the operating system discarded for this socket because its receive buffer was full while
  the receiver fell behind (``kernel_dropped``). Only Linux tells (socket option ``SO_RXQ_OVFL``: each
  datagram carries the socket's drop count, so drops show up with the next datagram that arrives);
  elsewhere it is None. ``receive_buffer`` is the buffer size the kernel granted (Linux reports twice
  the bytes requested, its bookkeeping included, capped by ``net.core.rmem_max``);
* it cannot see datagrams lost before they reached this socket: on the network or Wi-Fi, in the
  sender's own buffers, by a firewall, sent to another address or port, or never sent. OpenSeeFace's
  records carry no sequence number, so such gaps show only as a lower per-face rate (``face_rates``).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, TypeVar

from .protocol import RECORD_SIZE, DatagramError, OpenSeeFaceRecord, decode_datagram

__all__ = ["DEFAULT_MAX_FACES", "DEFAULT_RECEIVE_BUFFER", "DatagramReceiver", "OpenSeeFaceReceiver", "ReceiverError", "ReceiverStats"]

_log = logging.getLogger(__name__)

R = TypeVar("R")

#: Larger than any UDP payload over IPv4, so the kernel never truncates silently.
_BUFFER_SIZE = 65536
_POLL_SECONDS = 0.1
#: How often the receiving thread expires silent faces (reads expire them exactly as well).
_EXPIRE_SECONDS = 0.1
#: Arrival times kept per face for its rate: plenty for any real frame rate over the rate window;
#: a flood only shortens the span the rate is measured over.
_MAX_ARRIVALS = 256
#: Default bound on live faces: far more than any tracker sends, small enough to stay cheap.
DEFAULT_MAX_FACES = 256
#: Receive buffer requested by default: about a thousand OpenSeeFace datagrams (16 s at 60 fps) ride out
#: a slow callback or a pause of the process instead of being dropped by the kernel.
DEFAULT_RECEIVE_BUFFER = 2 << 20
#: Linux's SO_RXQ_OVFL (Python's socket module does not name it): each datagram then carries the
#: socket's cumulative drop count as a 32-bit unsigned integer in its ancillary data.
_SO_RXQ_OVFL: int | None = getattr(socket, "SO_RXQ_OVFL", 40 if sys.platform.startswith("linux") else None)
_DROP_COUNT = struct.Struct("=I")
_JOIN_SECONDS = 1.0

#: Drop reasons the base class assigns itself; decoders add their own (e.g. "length").
DROP_SENDER = "sender"
DROP_DECODE_BUG = "decoder_error"


class ReceiverError(OSError):
    """The receiver could not start (typically: the port is taken)."""


@dataclass(frozen=True)
class ReceiverStats:
    """Counters since the receiver started; ``received == accepted + sum(dropped.values())``.

    ``evicted`` counts faces dropped to make room when ``max_faces`` were live, ``expired`` faces
    dropped after ``expire_after`` seconds of silence; ``live_faces`` is how many are live now.
    ``kernel_dropped`` counts datagrams the operating system discarded because the receive buffer was
    full (None where the OS cannot tell: only Linux can); they are not part of ``received``.
    ``receive_buffer`` is the socket buffer size the kernel granted, in bytes (None if unknown). See
    the module docstring for what these counters cannot see.
    """

    received: int
    accepted: int
    dropped: Mapping[str, int]
    records: int
    callback_errors: int
    face_rates: Mapping[Hashable, float]
    evicted: int = 0
    expired: int = 0
    live_faces: int = 0
    kernel_dropped: int | None = None
    receive_buffer: int | None = None

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


@dataclass
class _Face(Generic[R]):
    """What the receiver keeps about one live face (mutated under the receiver's lock only)."""

    record: R
    seen_at: float
    arrivals: deque[float]


class DatagramReceiver(Generic[R]):
    """Receive datagrams on a daemon thread, decode them, keep the newest record per key.

    ``decode`` turns one datagram into a list of records; exceptions of the types in
    ``drop_errors`` mark the datagram as invalid and are counted under the ``reason`` of a
    :class:`DatagramError` (decoders of other formats can raise it too) or the class name.
    ``key`` maps a record to its face key. ``on_frame`` is called on the receiver thread with
    every accepted frame (the list of records of one datagram); its exceptions are logged and
    counted, never fatal.

    At most ``max_faces`` faces are kept: a new face beyond that replaces the face updated longest
    ago (counted in ``stats().evicted``), so neither memory nor the cost per datagram grows with the
    number of ids a sender makes up, even with ``expire_after=None``.

    ``receive_buffer`` is the socket buffer to request in bytes (None keeps the system's default);
    the kernel may grant less. On Linux the receiver also counts what the kernel drops when that
    buffer overflows (``stats().kernel_dropped``).
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
        max_faces: int = DEFAULT_MAX_FACES,
        receive_buffer: int | None = DEFAULT_RECEIVE_BUFFER,
        name: str = "facewire-receiver",
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            # getaddrinfo would wrap 99999 to 34463 and listen there without a word.
            raise ValueError(f"port must be 0-65535 (0 = any free port), got {port!r}")
        if expire_after is not None and expire_after <= 0:
            raise ValueError(f"expire_after must be positive or None, got {expire_after}")
        if rate_window <= 0:
            raise ValueError(f"rate_window must be positive, got {rate_window}")
        if isinstance(max_faces, bool) or not isinstance(max_faces, int) or max_faces < 1:
            raise ValueError(f"max_faces must be a positive integer, got {max_faces!r}")
        if receive_buffer is not None and (isinstance(receive_buffer, bool) or not isinstance(receive_buffer, int)
                                           or receive_buffer < 1):
            raise ValueError(f"receive_buffer must be a positive number of bytes or None, got {receive_buffer!r}")
        self._decode = decode
        self._key = key
        self._expire_after = expire_after
        self._senders = None if allowed_senders is None else _Senders(allowed_senders)
        self._on_frame = on_frame
        self._drop_errors = drop_errors
        self._rate_window = rate_window
        self._max_faces = max_faces

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Live faces, least recently updated first: expiry and eviction only touch the front.
        self._faces: OrderedDict[Hashable, _Face[R]] = OrderedDict()
        self._evicted = 0
        self._expired = 0
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
        # Kernel buffer and drop count exist only for real UDP sockets; subclasses that read another
        # transport through the same loop (ZeroMQ) bring their own queueing and report neither.
        udp = isinstance(self._socket, socket.socket)
        self._receive_buffer = _set_receive_buffer(self._socket, receive_buffer) if udp else None
        self._counts_kernel_drops = _enable_drop_count(self._socket) if udp else False
        self._kernel_dropped = 0     # total so far
        self._kernel_drop_mark = 0   # the last uint32 count the kernel reported
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
        next_expiry = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_expiry:  # the socket timeout brings us here while nothing arrives
                self._expire()
                next_expiry = now + _EXPIRE_SECONDS
            try:
                if self._counts_kernel_drops:
                    data, ancillary, flags, source = self._socket.recvmsg(_BUFFER_SIZE, _ANCILLARY_SIZE)
                    if ancillary:
                        self._note_kernel_drops(ancillary)
                    if flags & getattr(socket, "MSG_TRUNC", 0):
                        self._count_drop("oversized")
                        continue
                else:
                    data, source = self._socket.recvfrom(_BUFFER_SIZE)
            except socket.timeout:
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
            faces = self._faces
            for rec, key in zip(records, keys):
                face = faces.get(key)
                if face is None:
                    if len(faces) >= self._max_faces:
                        self._drop_face(next(iter(faces)))
                        self._evicted += 1
                    face = faces[key] = _Face(rec, now, deque(maxlen=_MAX_ARRIVALS))
                else:
                    face.record, face.seen_at = rec, now
                    faces.move_to_end(key)
                face.arrivals.append(now)
                self._prune_arrivals(face.arrivals, now)
                self._newest_key = key
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

    def _note_kernel_drops(self, ancillary: list[tuple[int, int, bytes]]) -> None:
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(payload) >= _DROP_COUNT.size:
                count = _DROP_COUNT.unpack_from(payload)[0]
                if count != self._kernel_drop_mark:
                    with self._lock:  # the kernel's count is a wrapping uint32; ours keeps growing
                        self._kernel_dropped += (count - self._kernel_drop_mark) % (1 << 32)
                        self._kernel_drop_mark = count

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
        """Drop faces silent for longer than ``expire_after``: only the oldest ones need looking at."""
        if self._expire_after is None:
            return
        oldest_allowed = now - self._expire_after
        faces = self._faces
        while faces:
            key = next(iter(faces))
            if faces[key].seen_at >= oldest_allowed:
                return
            self._drop_face(key)
            self._expired += 1

    def _drop_face(self, key: Hashable) -> None:
        del self._faces[key]
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
                key = self._newest_key
                if key is None:
                    if not self._faces:
                        return None
                    key = next(reversed(self._faces))  # updated most recently
                return self._faces[key].record
            face = self._faces.get(face_id)
            return None if face is None else face.record

    def faces(self) -> Mapping[Hashable, R]:
        """A read-only snapshot of the newest record of every live face."""
        with self._lock:
            self._expire_locked(time.monotonic())
            return MappingProxyType({key: face.record for key, face in self._faces.items()})

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
            for key, face in self._faces.items():
                arrivals = face.arrivals
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
                evicted=self._evicted,
                expired=self._expired,
                live_faces=len(self._faces),
                kernel_dropped=self._kernel_dropped if self._counts_kernel_drops else None,
                receive_buffer=self._receive_buffer,
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


def _set_receive_buffer(sock: socket.socket, size: int | None) -> int | None:
    """Request ``size`` bytes of receive buffer; return what the kernel granted (None if it will not say)."""
    if size is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError as exc:
            _log.debug("could not set the receive buffer to %d bytes: %s", size, exc)
    try:
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except OSError:
        return None
    if size is not None and granted < size:
        _log.debug("the kernel granted a %d-byte receive buffer of the %d requested (Linux: net.core.rmem_max)",
                   granted, size)
    return granted


def _enable_drop_count(sock: socket.socket) -> bool:
    """Ask the kernel to attach the socket's drop count to every datagram; False where it cannot."""
    if _SO_RXQ_OVFL is None or not hasattr(sock, "recvmsg"):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
    except OSError as exc:
        _log.debug("the kernel does not report dropped datagrams (SO_RXQ_OVFL): %s", exc)
        return False
    return True


_ANCILLARY_SIZE = socket.CMSG_SPACE(_DROP_COUNT.size) if hasattr(socket, "CMSG_SPACE") else 0


class OpenSeeFaceReceiver(DatagramReceiver[OpenSeeFaceRecord]):
    """Listen for OpenSeeFace datagrams (VSeeFace's default port is 11573) and track faces by id.

    Invalid datagrams (wrong length, NaN/inf) are dropped and counted under "length" and
    "non_finite"; datagrams from senders outside ``allowed_senders`` under "sender". ``max_faces``
    and ``receive_buffer`` are described in :class:`DatagramReceiver`; each record kept holds only
    its own 1785 bytes, not the other records of its datagram.
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
        max_faces: int = DEFAULT_MAX_FACES,
        receive_buffer: int | None = DEFAULT_RECEIVE_BUFFER,
    ) -> None:
        super().__init__(
            _decode_records,
            _face_id,
            host=host,
            port=port,
            expire_after=expire_after,
            allowed_senders=allowed_senders,
            on_frame=on_frame,
            drop_errors=(DatagramError,),
            rate_window=rate_window,
            max_faces=max_faces,
            receive_buffer=receive_buffer,
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


def _decode_records(data: bytes) -> list[OpenSeeFaceRecord]:
    """:func:`decode_datagram`, with every record holding only its own 1785 bytes.

    Decoded records are views of the bytes they came from; a record kept for a face must not keep the
    other faces' records of its datagram alive with it, so each record is decoded from its own copy.
    """
    if len(data) <= RECORD_SIZE or len(data) % RECORD_SIZE:
        return decode_datagram(data)  # one record (its datagram is its own bytes), or an invalid length
    return [decode_datagram(data[start:start + RECORD_SIZE])[0] for start in range(0, len(data), RECORD_SIZE)]
