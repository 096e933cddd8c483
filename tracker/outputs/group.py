"""All of a run's outputs as one: opened together, fed the same frame, closed together.

The loop holds one ``OutputGroup``; it asks it what optional work to do (``needs``) and hands it each
``FrameResult``. An output that fails to open closes the ones already opened and stops the run with its
message; an output that raises while sending (a bug, not a network error: those are counted) is logged
and dropped from the group, so one format cannot stop the others.
"""
from __future__ import annotations

import logging
from typing import Iterable

from ..result import FrameResult
from .base import Output, OutputStats, parse_output_url

log = logging.getLogger(__name__)

__all__ = ["OutputGroup"]


class OutputGroup:
    def __init__(self, outputs: Iterable[Output]) -> None:
        self.outputs = list(outputs)
        self.failed: list[Output] = []

    @classmethod
    def from_urls(cls, urls: Iterable[str], *, mesh: bool = False) -> "OutputGroup":
        """Parse every URL first (a bad one is reported before any socket is made)."""
        return cls(parse_output_url(url, mesh=mesh) for url in urls)

    @property
    def needs(self) -> frozenset[str]:
        """The optional work (``result.NEEDS``) any output asks for."""
        return frozenset().union(*(o.needs for o in self.outputs))

    def open(self) -> None:
        opened = []
        try:
            for output in self.outputs:
                output.open()
                opened.append(output)
        except BaseException:
            for output in opened:
                output.close()
            raise

    def send(self, frame: FrameResult) -> None:
        for output in list(self.outputs):
            try:
                output.send(frame)
            except Exception:          # noqa: BLE001 - one format's bug must not stop the others
                log.exception("%s failed and is switched off; the other outputs continue", output.name)
                self.outputs.remove(output)
                self.failed.append(output)
                output.close()

    def close(self) -> None:
        for output in self.outputs:
            output.close()

    def stats(self) -> dict[str, OutputStats]:
        return {o.name: o.stats() for o in self.outputs + self.failed}

    def __enter__(self) -> "OutputGroup":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
