"""The live dashboard (``--web``): a page any browser on this PC or the LAN can open while tracking.

The loop needs ``Dashboard`` (start / publish / close / needs), ``TrackerControls`` (read once per frame)
and ``DashboardStats``; ``parse_web_address`` reads the ``--web`` value. Importing this package does not
need the ``websockets`` library; creating a ``Dashboard`` without it raises WebUnavailableError.
"""
from __future__ import annotations

from .access import DEFAULT_PORT, Access, AccessLevel, WebAddressError, is_loopback, parse_web_address
from .controls import SIGNAL_GROUPS, ControlError, ControlState, TrackerControls
from .payload import DashboardStats
from .server import Dashboard, DashboardError, WebUnavailableError

__all__ = ["DEFAULT_PORT", "SIGNAL_GROUPS", "Access", "AccessLevel", "ControlError", "ControlState", "Dashboard",
           "DashboardError", "DashboardStats", "TrackerControls", "WebAddressError", "WebUnavailableError",
           "is_loopback", "parse_web_address"]
