"""Plug-in outputs: one module per wire format, chosen by ``--output URL`` (see ``base``).

The loop needs only ``OutputGroup.from_urls`` (or ``parse_output_url`` per URL), the group's ``needs``,
``open``/``send(frame)``/``close``/``stats``, and ``default_output_url``. To add a format, write a module
with an ``Output`` subclass and register its scheme here.
"""
from __future__ import annotations

from .base import REGISTRY, Output, OutputStats, OutputTarget, OutputUrlError, parse_output_url
from .group import OutputGroup
from .ifacialmocap import IFacialMocapOutput
from .msgpack_udp import MsgpackOutput
from .osf import OsfOutput
from .vmc import VmcOutput
from .zmq_pub import ZmqOutput

for _cls in (OsfOutput, VmcOutput, IFacialMocapOutput, MsgpackOutput, ZmqOutput):
    REGISTRY[_cls.scheme] = _cls


def default_output_url(ip: str = "127.0.0.1", port: int = 11573) -> str:
    """The output when none is named: OpenSeeFace records to ``-i``/``-p`` (unchanged behaviour)."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"osf://{host}:{port}"


def needs_of(outputs: list[Output]) -> frozenset[str]:
    """The optional work (``"blendshapes"``, ``"mesh"``) any of the outputs asks for."""
    return frozenset().union(*(o.needs for o in outputs))


__all__ = ["IFacialMocapOutput", "MsgpackOutput", "OsfOutput", "Output", "OutputGroup", "OutputStats", "OutputTarget",
           "OutputUrlError", "REGISTRY", "VmcOutput", "ZmqOutput", "default_output_url", "needs_of",
           "parse_output_url"]
