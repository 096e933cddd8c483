"""What every output is: a destination URL, what it needs computed, and open/send/close.

The loop builds one ``FrameResult`` per frame and hands it to every output; it never knows the formats.
``parse_output_url`` picks the class from the URL's scheme in ``REGISTRY`` (filled by the package's
``__init__``), so adding a format is one new module and one registry line.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Mapping
from urllib.parse import parse_qs, urlsplit

from ..result import NEEDS, FrameResult
from ..transport import TransportError, UdpSender

log = logging.getLogger(__name__)

__all__ = ["Output", "OutputStats", "OutputTarget", "OutputUrlError", "REGISTRY", "parse_output_url", "flag"]


class OutputUrlError(ValueError):
    """An ``--output`` URL cannot be used; the message names the URL and what is wrong with it."""


@dataclass(frozen=True)
class OutputTarget:
    """A parsed ``--output`` URL."""

    url: str
    scheme: str
    host: str
    port: int
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputStats:
    frames: int          # frames handed to send()
    datagrams: int       # datagrams or messages actually sent
    bytes: int
    errors: int          # sends that failed (counted, never raised)


class Output(ABC):
    """One destination. ``needs``: which optional work (``result.NEEDS``) the loop must do for it."""

    scheme: ClassVar[str]
    default_port: ClassVar[int]
    #: URL query options this output understands (anything else is an error naming the URL).
    options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, target: OutputTarget) -> None:
        self.target = target
        self.needs: frozenset[str] = frozenset()
        self._frames = self._datagrams = self._bytes = self._errors = 0

    @property
    def name(self) -> str:
        return self.target.url

    @abstractmethod
    def open(self) -> None:
        """Create sockets (raises OSError with a clear message when the address cannot be used)."""

    @abstractmethod
    def send(self, frame: FrameResult) -> None:
        """Encode and send one frame. Network errors are counted, never raised (receivers come and go)."""

    @abstractmethod
    def close(self) -> None:
        ...

    def stats(self) -> OutputStats:
        return OutputStats(self._frames, self._datagrams, self._bytes, self._errors)

    def _udp_sender(self) -> UdpSender:
        """A UDP socket to the URL's host and port; errors name the URL."""
        try:
            return UdpSender(self.target.host, self.target.port)
        except TransportError as exc:
            raise TransportError(f"--output {self.name}: {exc}") from None

    def _count(self, sent: int, size: int) -> None:
        self._datagrams += sent
        self._bytes += size

    def __enter__(self) -> "Output":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


#: scheme -> Output class; filled by ``facewire.tracker.outputs``.
REGISTRY: dict[str, type[Output]] = {}


def flag(target: OutputTarget, name: str, default: bool = False) -> bool:
    """A boolean URL option: ``?listen``, ``?mesh=1``, ``?mirror=true`` ..."""
    if name not in target.options:
        return default
    value = target.options[name].strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise OutputUrlError(f"--output {target.url}: option {name}={target.options[name]!r} must be 1 or 0")


def number(target: OutputTarget, name: str, default: float, low: float, high: float) -> float:
    if name not in target.options:
        return default
    try:
        value = float(target.options[name])
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise OutputUrlError(f"--output {target.url}: option {name}={target.options[name]!r} must be a number "
                             f"from {low:g} to {high:g}")
    return value


def parse_output_url(url: str, *, mesh: bool = False) -> Output:
    """The output a URL names, not yet opened: ``osf://127.0.0.1:11573``, ``vmc://host:39539``,
    ``ifacialmocap://host:49983[?listen]``, ``msgpack://host:11574[?mesh=1]``,
    ``zmq+tcp://host:5555[?curve=SECRET_FILE&mesh=1]``. The port may be left out (each format's default).

    ``mesh``: the command line's ``--mesh``, the default of the formats that can carry the mesh.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if "://" not in url or scheme not in REGISTRY:
        known = ", ".join(f"{s}://" for s in sorted(REGISTRY))
        raise OutputUrlError(f"--output {url}: unknown kind of output {scheme + '://' if scheme else '(none)'}; "
                             f"use one of {known}")
    cls = REGISTRY[scheme]
    if not parts.hostname:
        raise OutputUrlError(f"--output {url}: no host; write it as {scheme}://HOST:PORT, e.g. "
                             f"{scheme}://127.0.0.1:{cls.default_port}")
    try:
        port = parts.port
    except ValueError:
        raise OutputUrlError(f"--output {url}: the port must be a number from 1 to 65535") from None
    if port == 0:
        raise OutputUrlError(f"--output {url}: the port must be a number from 1 to 65535")
    if parts.path not in ("", "/"):
        raise OutputUrlError(f"--output {url}: unexpected path {parts.path!r} after the port")
    try:
        query = parse_qs(parts.query, keep_blank_values=True)
    except ValueError:
        raise OutputUrlError(f"--output {url}: cannot read the options {parts.query!r}") from None
    unknown = set(query) - cls.options
    if unknown:
        allowed = ", ".join(sorted(cls.options)) or "none"
        raise OutputUrlError(f"--output {url}: unknown option {', '.join(sorted(unknown))} for {scheme}:// "
                             f"(it accepts: {allowed})")
    options = {key: values[-1] for key, values in query.items()}
    if mesh and "mesh" in cls.options and "mesh" not in options:
        options["mesh"] = "1"
    target = OutputTarget(url, scheme, parts.hostname, port or cls.default_port, MappingProxyType(options))
    output = cls(target)
    assert output.needs <= NEEDS, f"{cls.__name__} asks for unknown work {output.needs - NEEDS}"
    return output
