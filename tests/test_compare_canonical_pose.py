"""scripts/compare_canonical_pose.py scores our reference face and MediaPipe's canonical face on AFLW2000."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, data_path


def test_every_variant_is_scored_on_the_aflw_photos():
    images = data_path("images")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_canonical_pose.py"), "--images", str(images)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^(ours|canonical)[^\n]*?\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+[+-][\d.]+ deg\s+\((\d+) faces\)$",
                      done.stdout, re.MULTILINE)
    assert len(rows) == 4, done.stdout
    means = [float(r[4]) for r in rows]
    assert all(0.5 < m < 8.0 for m in means) and all(int(r[5]) >= 28 for r in rows)
    assert means[0] < 4.0      # our reference face: about 3.2 degrees
