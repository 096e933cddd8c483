"""Per-point uncertainty: the jitter, the rank correlation, and that it tracks real error on annotated photos."""
from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from conftest import REPO, data_path
from facewire.tracker.analysis import load_image
from facewire.tracker.cli import main
from facewire.tracker.landmarks import Roi, roi_from_landmarks
from facewire.tracker.offline.uncertainty import (JitterConfig, jittered_rois, point_uncertainty, ranks, spearman,
                                                  spread)


def _script():
    spec = importlib.util.spec_from_file_location("measure_uncertainty", REPO / "scripts" / "measure_uncertainty.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spearman_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy (convert extra) not installed")
    rng = np.random.default_rng(4)
    for _ in range(5):
        a = rng.integers(0, 12, 200).astype(float)         # many ties
        b = a + rng.normal(0, 4, 200)
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert np.array_equal(ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    with pytest.raises(ValueError):
        spearman(np.ones(3), np.ones(4))


def test_jitter_is_fixed_and_bounded():
    roi = Roi(100.0, 80.0, 50.0, 0.1)
    config = JitterConfig(crops=16, shift=0.05, scale=0.1, rotation_deg=6)
    a, b = jittered_rois(roi, config), jittered_rois(roi, config)
    assert a == b and len(a) == 16
    for r in a:
        assert abs(r.cx - 100) <= 2.5 + 1e-9 and abs(r.cy - 80) <= 2.5 + 1e-9
        assert 45 - 1e-9 <= r.size <= 55 + 1e-9 and abs(math.degrees(r.angle - 0.1)) <= 6 + 1e-9
    assert jittered_rois(roi, JitterConfig(seed=1)) != jittered_rois(roi, JitterConfig(seed=2))
    with pytest.raises(ValueError, match="at least 2"):
        JitterConfig(crops=1)
    samples = np.array([[[0.0, 0.0]], [[2.0, 0.0]]])
    assert spread(samples)[0] == pytest.approx(1.0)


def test_uncertainty_of_a_real_face(analyzer):
    image = load_image(data_path("images", "lfpw_image_0010.png"))
    face = analyzer.analyze(image)[0]
    u = point_uncertainty(image, roi_from_landmarks(face.landmarks), analyzer.landmarker)
    assert u.mesh.shape == (478,) and u.ibug68.shape == (68,) and u.crops == 8
    assert (u.ibug68 > 0).all() and np.median(u.ibug68) < 5
    # No jitter, no spread: the model is deterministic.
    still = point_uncertainty(image, roi_from_landmarks(face.landmarks), analyzer.landmarker,
                              JitterConfig(shift=0, scale=0, rotation_deg=0))
    assert still.ibug68.max() < 1e-3


def test_uncertainty_tracks_the_real_error_on_annotated_photos():
    """On ../shared/data/images: rank correlation with the per-point error, per photo, and the failures."""
    m = _script().measure(data_path("images"))
    assert m["found"] >= 40
    assert m["spearman_all_points"] > 0.45               # measured 0.63
    assert m["per_image_positive"] >= 0.9 * m["found"]   # measured 41 of 41
    assert m["spearman_per_image_median"] > 0.3          # measured 0.47
    assert m["spearman_image_mean_vs_nme"] > 0.5         # measured 0.71
    assert m["failures"] >= 3 and m["failure_auc"] > 0.9  # measured 5 failures, AUC 0.99
    assert m["failures_in_top_2k"] == m["failures"]


def test_analyze_uncertainty_option(capsys):
    image = data_path("images", "lfpw_image_0010.png")
    assert main(["analyze", str(image), "--json", "--uncertainty"]) == 0
    doc = json.loads(capsys.readouterr().out)
    u = doc["faces"][0]["uncertainty_px"]
    assert u["crops"] == 8 and len(u["ibug68"]) == 68 and len(u["mesh"]) == 478 and min(u["ibug68"]) > 0
    assert main(["analyze", str(image), "--uncertainty"]) == 0
    assert "uncertainty (68 points, px): median" in capsys.readouterr().out
    assert main(["analyze", str(image), "--json"]) == 0
    assert "uncertainty_px" not in json.loads(capsys.readouterr().out)["faces"][0]
