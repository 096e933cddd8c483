"""Facewire's msgpack frames over ZeroMQ PUB/SUB (``facetracker --output zmq+tcp://127.0.0.1:5555``).

Why ZeroMQ next to UDP: any number of subscribers, across a LAN, optionally encrypted and limited to
holders of the server's key (CURVE). The messages are exactly the msgpack datagrams of
:mod:`facewire.client.msgpack_frame`, one message per datagram.

A slow subscriber gets the newest frame, not a backlog: the subscriber ``CONFLATE``s (its I/O thread
keeps reading the connection and keeps only the last message), and the publisher queues at most
``SEND_HWM`` messages for a subscriber whose connection itself is too slow. A frame split
into parts (more than about nine faces with the mesh) can then lose parts at a slow subscriber; each
part is a complete frame for its faces, so those faces just miss an update.

CURVE: ``make_keypair(folder)`` writes ``facewire.key`` (public: give it to subscribers) and
``facewire.key_secret`` (keep it on the tracking PC; ``?curve=.../facewire.key_secret``). A subscriber
without the server's public key completes no handshake and receives nothing.
"""
from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import zmq
import zmq.auth

from .msgpack_frame import MsgpackFace, MsgpackFrame
from .msgpack_receiver import FrameKeeper, face_key
from .protocol import DatagramError
from .receiver import DatagramReceiver, ReceiverError

__all__ = ["DEFAULT_PORT", "CurveKeyError", "ZmqPublisher", "ZmqSubscriber", "load_public_key", "load_secret_key",
           "make_keypair"]

DEFAULT_PORT = 5555
# Messages queued per subscriber at the publisher: enough for a split frame's parts and a burst, few
# enough that a subscriber on a slow link lags by a handful of frames at most (newer ones are dropped
# while the queue is full, then sending resumes with the newest).
SEND_HWM = 8
RECEIVE_HWM = 1
_POLL_MS = 100


class CurveKeyError(ValueError):
    """A CURVE key file is missing or is not a ZeroMQ certificate of the expected kind."""


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise CurveKeyError("this libzmq was built without CURVE support (zmq.has('curve') is False)")


def make_keypair(folder: str | Path, name: str = "facewire") -> tuple[Path, Path]:
    """Write a new CURVE key pair into ``folder``: (public key file, secret key file)."""
    _require_curve()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise CurveKeyError(f"CURVE key file {path} does not exist (make one with facewire keys)")
    try:
        return zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise CurveKeyError(f"{path} is not a ZeroMQ certificate: {exc}") from None


def load_secret_key(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file."""
    public, secret = _load(path)
    if secret is None:
        raise CurveKeyError(f"{path} holds no secret key; give the .key_secret file, not the public .key")
    return public, secret


def load_public_key(key: str | bytes | Path) -> bytes:
    """A server's public key from its ``.key`` file, or the 40-character Z85 text itself."""
    if isinstance(key, bytes) and len(key) == 40:
        return key
    if isinstance(key, str) and len(key) == 40 and not Path(key).exists():
        return key.encode("ascii")
    return _load(key)[0]


class ZmqPublisher:
    """A PUB socket bound to ``endpoint``; ``send`` never blocks (a full subscriber queue drops)."""

    def __init__(self, endpoint: str, secret_key_file: str | Path | None = None,
                 context: zmq.Context | None = None) -> None:
        self._own_context = context is None          # each stream its own I/O thread, ended on close
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._socket.setsockopt(zmq.LINGER, 0)
        if secret_key_file is not None:
            _require_curve()
            public, secret = load_secret_key(secret_key_file)
            self._socket.curve_server = True
            self._socket.curve_publickey = public
            self._socket.curve_secretkey = secret
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise OSError(f"cannot publish on {endpoint}: {exc}") from None
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sent = 0
        self.errors = 0

    def send(self, message: bytes) -> None:
        try:
            self._socket.send(message, zmq.NOBLOCK, copy=len(message) < 4096)
            self.sent += 1
        except zmq.ZMQError:
            self.errors += 1

    def close(self) -> None:
        self._socket.close(0)
        if self._own_context:
            self._context.term()


class _SubscriberSocket:
    """A SUB socket dressed as the UDP socket DatagramReceiver reads (recvfrom with a poll timeout)."""

    def __init__(self, sub: zmq.Socket, address: tuple[str, int]) -> None:
        self._sub = sub
        self._address = address

    def recvfrom(self, _size: int) -> tuple[bytes, tuple[str, int]]:
        # Take a waiting message at once; only an empty queue waits in poll (up to 0.1 s, so close() is quick).
        try:
            frame = self._sub.recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._sub.poll(_POLL_MS)
            try:
                frame = self._sub.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                raise socket.timeout from None
        try:
            peer = frame.get("Peer-Address")
        except zmq.ZMQError:
            peer = ""
        return frame.bytes, (peer, 0)

    def getsockname(self) -> tuple[str, int]:
        return self._address

    def settimeout(self, _seconds: float) -> None:
        pass

    def close(self) -> None:
        self._sub.close(0)


class ZmqSubscriber(DatagramReceiver[MsgpackFace]):
    """Subscribe to a Facewire ZeroMQ stream; same interface as ``MsgpackReceiver``.

    ``allowed_senders`` is matched against the publisher's IP address (ZeroMQ's Peer-Address);
    ``server_key`` (the server's ``.key`` file or its Z85 text) is needed when the stream uses CURVE.
    """

    def __init__(
        self,
        endpoint: str = f"tcp://127.0.0.1:{DEFAULT_PORT}",
        expire_after: float | None = 1.0,
        allowed_senders: Iterable[str | tuple[str, int]] | None = None,
        on_frame: Callable[[list[MsgpackFace]], object] | None = None,
        *,
        server_key: str | bytes | Path | None = None,
        rate_window: float = 2.0,
        context: zmq.Context | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._server_key = None if server_key is None else load_public_key(server_key)
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._keeper = FrameKeeper()
        super().__init__(self._keeper, face_key, host=endpoint, port=0, expire_after=expire_after,
                         allowed_senders=allowed_senders, on_frame=on_frame, drop_errors=(DatagramError,),
                         rate_window=rate_window, name="facewire-zmq-subscriber")

    def _bind(self, host: str, port: int) -> _SubscriberSocket:  # type: ignore[override]
        sub = self._context.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        sub.setsockopt(zmq.CONFLATE, 1)
        sub.setsockopt(zmq.LINGER, 0)
        if self._server_key is not None:
            _require_curve()
            public, secret = zmq.curve_keypair()
            sub.curve_serverkey = self._server_key
            sub.curve_publickey = public
            sub.curve_secretkey = secret
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            sub.connect(self._endpoint)
        except zmq.ZMQError as exc:
            sub.close(0)
            if self._own_context:
                self._context.term()
            raise ReceiverError(f"cannot subscribe to {self._endpoint}: {exc}") from None
        hostport = self._endpoint.split("://", 1)[-1]
        name, _, number = hostport.rpartition(":")
        return _SubscriberSocket(sub, (name or hostport, int(number) if number.isdigit() else 0))

    def latest_frame(self) -> MsgpackFrame | None:
        """The newest valid frame (header and faces), including frames with no face."""
        return self._keeper.frame

    def latest(self, face_id: int | None = None) -> MsgpackFace | None:
        return super().latest(face_id)

    def faces(self) -> Mapping[int, MsgpackFace]:  # type: ignore[override]
        return super().faces()  # type: ignore[return-value]

    def close(self) -> None:
        super().close()
        if self._own_context and not self._context.closed:
            self._context.term()

    def __repr__(self) -> str:
        return f"<ZmqSubscriber {self._endpoint} {'running' if self.running else 'closed'}>"
