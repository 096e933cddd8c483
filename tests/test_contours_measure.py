"""The measurement script and the progress bar, on real photos."""
from __future__ import annotations

import io
import shutil
import sys

from conftest import REPO, data_path
from facewire.tracker.offline.personalise import ComputeSettings
from facewire.tracker.offline.progress import Progress

sys.path.insert(0, str(REPO / "scripts"))


def test_measure_photos_reports_before_and_after_per_segment(tmp_path):
    from measure_contours import measure_photos
    src = data_path("images")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for jpg in sorted(src.glob("aflw2000_*.jpg"))[:12]:
        shutil.copy(jpg, folder / jpg.name)
        shutil.copy(jpg.with_suffix(".pts"), folder / jpg.with_suffix(".pts").name)
    report = measure_photos(folder, tmp_path / "work", draws=1, settings=ComputeSettings())
    assert 8 <= report["photos"] <= 12
    for k in (2, 4, 8):
        for seg in ("right_eye", "left_eye", "lips"):
            before, after = report["results"][k][seg]
            assert 0.3 < before < 5.0 and 0.3 < after < 5.0
            assert before != after          # the correction did something


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_redraws_with_frames_per_second():
    stream = _Tty()
    bar = Progress(3, "detect", stream, every_s=0.0)
    for _ in range(3):
        bar.update()
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 3 and "3/3" in text and "frames/s" in text and text.endswith("\n")


def test_progress_without_a_terminal_logs_instead(caplog):
    import logging
    stream = io.StringIO()
    with caplog.at_level(logging.INFO):
        bar = Progress(2, "compute", stream)
        bar.update()
        bar.update()
        bar.close()
    assert stream.getvalue() == ""
    assert any("2/2" in r.message and "frames/s" in r.message for r in caplog.records)
