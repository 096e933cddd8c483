"""A progress bar with frames per second on stderr: redrawn in place on a terminal, a log line now and then
otherwise (so redirected output stays readable)."""
from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO | None = None, every_s: float = 0.25) -> None:
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every_s if self.tty else 10.0
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    @property
    def fps(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * 30)
        return f"{self.label} [{bar:<30}] {self.done}/{self.total} {self.fps:6.1f} frames/s"

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.every or self.done == self.total:
            self._last = now
            if self.tty:
                print("\r" + self.line(), end="", file=self.stream, flush=True)
            else:
                log.info("%s", self.line())

    def close(self) -> None:
        if self.done == self.total and self._last:
            if self.tty:
                print(file=self.stream, flush=True)
            return
        if self.tty:
            print("\r" + self.line(), file=self.stream, flush=True)
        else:
            log.info("%s", self.line())
