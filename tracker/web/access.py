"""Who may use the dashboard: the --web address, the token, and the checks on every request.

Safe by default: on a loopback address only this PC can connect and no token is needed. On any other
address the tracker makes a random token and prints it in the page's URL; a page without it may watch the
numbers but gets no camera image and its control messages are refused; a page with a wrong one is turned
away. Two browser attacks are closed on every address: another web site's script opening our WebSocket
(its Origin differs from the Host it asks for) and DNS rebinding (a foreign host name resolving to
127.0.0.1: on loopback only loopback host names are served).
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PORT", "Access", "AccessLevel", "WebAddressError", "is_loopback", "parse_web_address"]

DEFAULT_PORT = 8765
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class WebAddressError(ValueError):
    """A ``--web`` address that cannot be used; the message names it."""


class AccessLevel(Enum):
    FULL = "full"          # image, data and controls
    VIEW = "view"          # numbers only: no token on a non-loopback address
    REFUSED = "refused"    # a wrong token


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_web_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``HOST`` (port 8765) or ``PORT`` (on 127.0.0.1) -> (host, port).
    Port 0 picks any free port (the printed URL names it)."""
    raw = text.strip()
    if not raw:
        return "127.0.0.1", DEFAULT_PORT
    if raw.isdigit():
        host, port_text = "127.0.0.1", raw
    else:
        try:
            parts = urlsplit("//" + raw)
            host, port = parts.hostname, parts.port
        except ValueError:
            raise WebAddressError(f"--web {text}: the port must be a number from 1 to 65535 "
                                  "(0: any free port)") from None
        if not host or parts.path or parts.query:
            raise WebAddressError(f"--web {text}: write it as HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT} "
                                  f"or 0.0.0.0:{DEFAULT_PORT} for every network")
        port_text = str(port if port is not None else DEFAULT_PORT)
    port_value = int(port_text)
    if not 0 <= port_value <= 65535:
        raise WebAddressError(f"--web {text}: the port must be a number from 1 to 65535 (0: any free port)")
    return host, port_value


def _split_host(value: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit("//" + value)
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


@dataclass(frozen=True)
class Access:
    """The listening address and its token (None on loopback, where none is needed)."""

    host: str
    port: int
    token: str | None

    @classmethod
    def for_address(cls, host: str, port: int, token: str | None = None,
                    required: bool | None = None) -> "Access":
        """A fresh random token (or ``token``) when one is ``required``; by default, on every address
        but loopback."""
        if required is None:
            required = not is_loopback(host)
        if not required:
            return cls(host, port, None)
        if token is not None and len(token) < 16:
            raise WebAddressError("a dashboard token must be at least 16 characters long")
        return cls(host, port, token or secrets.token_urlsafe(16))

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def level(self, presented: str | None) -> AccessLevel:
        if self.token is None:
            return AccessLevel.FULL
        if presented is None or presented == "":
            return AccessLevel.VIEW
        if hmac.compare_digest(presented.encode(), self.token.encode()):
            return AccessLevel.FULL
        return AccessLevel.REFUSED

    def check_request(self, host_header: str | None, origin: str | None) -> str | None:
        """Why a request must be refused (None: serve it): DNS rebinding on loopback, or a foreign Origin."""
        if not host_header:
            return "no Host header"
        host, port = _split_host(host_header)
        if self.loopback and not is_loopback(host):
            return f"host name {host!r} is not this PC's loopback address"
        if origin is not None:
            origin_parts = urlsplit(origin)
            if origin_parts.scheme not in ("http", "https") or (origin_parts.hostname or "").lower() != host \
                    or (origin_parts.port or _DEFAULT_PORTS[origin_parts.scheme]) != (port or 80):
                return f"a page from {origin} may not use this dashboard"
        return None

    def page_url(self, public_host: str | None = None) -> str:
        """The URL to open, token included; ``public_host`` replaces a wildcard address (0.0.0.0, ::)."""
        host = public_host or self.host
        if host in ("0.0.0.0", "::", ""):
            host = lan_address()
        shown = f"[{host}]" if ":" in host else host
        suffix = f"/?token={self.token}" if self.token else "/"
        return f"http://{shown}:{self.port}{suffix}"


def lan_address() -> str:
    """This PC's address on the network that has the default route (no packet is sent), else its name."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))          # TEST-NET-1: only picks the outgoing interface
        return probe.getsockname()[0]
    except OSError:
        return socket.gethostname()
    finally:
        probe.close()
