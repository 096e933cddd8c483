"""The client SDK must stay light: importing it never pulls in OpenCV, onnxruntime or the tracker."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import importlib, pkgutil, sys
import facewire.client
names = sorted(m.name for m in pkgutil.walk_packages(facewire.client.__path__, "facewire.client."))
for name in names:
    importlib.import_module(name)
heavy = sorted(
    m for m in sys.modules if m.split(".")[0] in ("cv2", "onnxruntime") or m.startswith("facewire.tracker")
)
print(",".join(names))
print(",".join(heavy))
"""


def test_client_imports_without_heavy_dependencies() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    modules_line, heavy_line = result.stdout.splitlines()[-2:]
    modules = modules_line.split(",")
    assert {"facewire.client.protocol", "facewire.client.receiver", "facewire.client.views"} <= set(modules)
    assert heavy_line == "", f"importing facewire.client loaded {heavy_line}"
