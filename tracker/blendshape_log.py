"""``--log-blendshapes FILE.csv``: the 52 ARKit blendshapes of every face in every frame, one row each.

For animators and for checking a calibration offline: columns ``frame`` (1-based), ``time`` (the capture's
wall clock, seconds), ``face_id`` (the slot, as OpenSeeFace numbers faces), ``track_id`` (never reused) and
Apple's 52 names in ``ARKIT_NAMES`` order, the values the outputs send (smoothed unless --no-smoothing).
"""
from __future__ import annotations

import csv
from typing import TextIO

from facewire.client.arkit import ARKIT_NAMES

from .result import FrameResult

COLUMNS = ("frame", "time", "face_id", "track_id") + ARKIT_NAMES


class BlendshapeCsvWriter:
    """Writes the header at once and one row per face that has blendshapes."""

    def __init__(self, stream: TextIO) -> None:
        self._csv = csv.writer(stream)
        self._csv.writerow(COLUMNS)
        self.rows = 0

    def write(self, frame: FrameResult) -> None:
        for face in frame.faces:
            if face.blendshapes is None:
                continue
            self._csv.writerow([frame.frame, f"{frame.capture_time:.6f}", face.slot, face.id,
                                *(f"{v:.4f}" for v in face.blendshapes)])
            self.rows += 1
