"""FaceMesh V2 (``Landmarker("v2")``, ``--mesh v2``) on the shared annotated photos."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import data_path
from facewire.tracker.analysis import AnalyzerConfig, FaceAnalyzer
from facewire.tracker.detection import FaceDetector
from facewire.tracker.evaluation import evaluate_landmarks
from facewire.tracker.landmarks import V2_CROP_SIZE, Landmarker, roi_from_detection, roi_from_landmarks


@pytest.fixture(scope="module")
def v2():
    return Landmarker("v2")


def test_v2_reads_a_256_pixel_crop_and_gives_478_points_with_a_tongue_score(v2, detector):
    image = cv2.imread(str(data_path("images", "aflw2000_image00041.jpg")))
    roi = roi_from_detection(detector.detect(image)[0])
    assert v2.crop_size == V2_CROP_SIZE == 256
    assert v2.prepare(image, roi).shape == (1, 256, 256, 3)
    np.testing.assert_allclose(v2.prepare(image, roi), Landmarker.preprocess(image, roi, 256), atol=1e-6)
    result = v2(image, roi_from_landmarks(v2(image, roi).points))
    assert result.points.shape == (478, 3) and result.presence > 0.99
    assert result.tongue_out is not None and 0 <= result.tongue_out < 0.1   # mouth closed in this photo
    assert Landmarker("attention")(image, roi).tongue_out is None


def test_v2_irises_and_contour_sit_where_the_attention_mesh_puts_them(v2):
    """Same topology as the attention mesh (irises 468-472 the subject's right, 473-477 the left): on
    near-frontal photos the two agree within a few percent of the eye distance."""
    detector, attention = FaceDetector("auto"), Landmarker("attention")
    for path in sorted(data_path("images").glob("aflw2000_*.jpg"))[10:20]:
        image = cv2.imread(str(path))
        roi = roi_from_landmarks(attention(image, roi_from_detection(detector.detect(image)[0])).points)
        a, b = attention(image, roi), v2(image, roi)
        if a.presence < 0.9:
            continue
        eye_distance = np.linalg.norm(a.points[468, :2] - a.points[473, :2])
        assert np.linalg.norm(a.points[468, :2] - b.points[468, :2]) < 0.1 * eye_distance, path.name
        assert np.linalg.norm(a.points[473, :2] - b.points[473, :2]) < 0.1 * eye_distance, path.name
        assert np.median(np.linalg.norm(a.points[:, :2] - b.points[:, :2], axis=1)) < 0.06 * eye_distance


def test_v2_landmark_accuracy_on_the_annotated_photos():
    """``facewire eval-landmarks --mesh v2``: every face found, medians within the README's 4% target.
    (The 68-point mapping was fitted on the attention mesh, so V2's jaw points carry some of its error.)"""
    report = evaluate_landmarks(data_path("images"), FaceAnalyzer(AnalyzerConfig(mesh="v2")))
    summary = report.summary()
    assert summary["found"] >= 0.9 * summary["images"] >= 36
    assert summary["median_nme68"] < 0.04, summary
    assert summary["median_nme51"] < 0.03, summary
