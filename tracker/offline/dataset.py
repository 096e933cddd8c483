"""One video -> one labelled ``.npz``: frames, boxes, 68 points in 2D and 3D, head pose and gaze.

Each video is one unit of work (``label_video``), a plain function of picklable arguments, so a process
pool or a Dask cluster can run it anywhere the package and the files are reachable. The file is written
under a temporary name beside its final name and renamed into place only when complete, so an
interrupted run never leaves a half file and a rerun can skip every video whose file exists.

File format (all arrays indexed by kept frame; pixel coordinates are zero-based, in the stored image):

``colorImages``   (N, H, W, 3) uint8 RGB: whole frames, or with ``crop`` a square around the face
``boundingBox``   (N, 4, 2) float32: corners of the box around the 478 mesh points, clockwise from
                  the top-left (x0,y0), (x1,y0), (x1,y1), (x0,y1)
``landmarks2D``   (N, 68, 2) float32: the iBUG 68 points (image-left first as in the iBUG markup)
``landmarks3D``   (N, 68, 3) float32: x, y as landmarks2D; z is the mesh's depth mapped like x and y,
                  in the same pixel scale, negative nearer the camera; the model's origin is the mesh's
                  mean depth (z averages about 0 over the 468 vertices)
``headPose``      (N, 3) float32: yaw, pitch, roll in degrees (README convention: yaw > 0 face turned to
                  the subject's left, pitch > 0 chin up, roll > 0 head tilted to the subject's left shoulder)
``gazeVector``    (N, 3, 3) float32: unit vectors (x right, y down, z away from the camera) for the
                  subject's right eye, left eye and both combined (``gaze.py``)
``frameNumbers``  (N,) int32: zero-based index of each kept frame in the video
``presence``      (N,) float32: the mesh model's face probability
``landmarks478``  (N, 478, 3) float32, with ``mesh``: the full mesh (z as in landmarks3D)
``uncertainty68``, ``uncertainty478``  (N, 68) / (N, 478) float32, with ``uncertainty``: per-point
                  spread in pixels of the stored image (``uncertainty.py``)
``metadata``      0-d unicode array holding JSON: source, frame counts, options, software and model versions
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..ibug68 import default_mapping
from ..landmarks import Landmarker, roi_from_landmarks
from ..pose import PoseError, PoseEstimator
from ..runtime import models_dir
from ..tracking import FaceTracker, TrackedFace, TrackingConfig
from .gaze import gaze_vectors
from .uncertainty import JitterConfig, point_uncertainty

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_CROP_SIZE = 256
DEFAULT_CROP_SCALE = 1.5     # crop side = this x the longer side of the face's box
REPORT_EVERY = 25            # frames between progress reports from a running video


class DatasetError(ValueError):
    """A video cannot be turned into a dataset file (unreadable, or no usable face in any frame)."""


@dataclass(frozen=True)
class DatasetOptions:
    crop: bool = False
    size: int | None = None            # crop side; without crop, the frame's longer side
    crop_scale: float = DEFAULT_CROP_SCALE
    max_frames: int | None = None
    mesh: bool = False                 # store the 478 points
    uncertainty: bool = False          # store per-point uncertainty (8 extra mesh runs per frame)
    overwrite: bool = False
    compress: bool = False             # zip-deflate the arrays (smaller files, slower writes)

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 8:
            raise ValueError(f"--size must be at least 8 pixels, not {self.size}")
        if self.crop_scale <= 0:
            raise ValueError(f"crop scale must be positive, not {self.crop_scale}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be at least 1, not {self.max_frames}")

    @property
    def output_size(self) -> int | None:
        return self.size or (DEFAULT_CROP_SIZE if self.crop else None)


@dataclass(frozen=True)
class VideoResult:
    video: str
    output: str
    frames_read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: bool = False      # the file existed already


def output_path(video: Path, out_dir: Path) -> Path:
    return out_dir / f"{video.stem}.npz"


def _placement(box: np.ndarray, frame_size: tuple[int, int], options: DatasetOptions) -> tuple[np.ndarray, tuple[int, int]]:
    """2x3 affine from frame pixels to stored pixels (zero-based centres), and the stored (width, height)."""
    w, h = frame_size
    out = options.output_size
    if options.crop:
        side = max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0) * options.crop_scale
        left = (box[0] + box[2]) / 2 + 0.5 - side / 2      # crop edges in pixel-edge coordinates
        top = (box[1] + box[3]) / 2 + 0.5 - side / 2
        s = out / side
        size = (out, out)
    else:
        left = top = 0.0
        s = 1.0 if out is None else out / max(w, h)
        size = (w, h) if out is None else (max(1, round(w * s)), max(1, round(h * s)))
    return np.array([[s, 0.0, (0.5 - left) * s - 0.5], [0.0, s, (0.5 - top) * s - 0.5]]), size


def _map_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply the placement to (..., 2 or 3) points; z (if any) is scaled like x and y."""
    out = np.array(pts, np.float32, copy=True)
    out[..., 0] = pts[..., 0] * m[0, 0] + m[0, 2]
    out[..., 1] = pts[..., 1] * m[1, 1] + m[1, 2]
    if pts.shape[-1] > 2:
        out[..., 2] = pts[..., 2] * m[0, 0]
    return out


def _ibug68_3d(mesh: np.ndarray) -> np.ndarray:
    mapping = default_mapping()
    z = np.einsum("jk,jk->j", mesh[mapping.vertices, 2].astype(np.float32), mapping.weights)
    return np.concatenate([mapping.apply(mesh), z[:, None]], axis=1).astype(np.float32)


def _versions() -> dict[str, object]:
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    manifest = json.loads((models_dir() / "MANIFEST.json").read_text())
    models = {m["name"]: m.get("onnx_sha256") for m in manifest.get("models", [])
              if m["name"] in ("face_landmark_with_attention", "face_detection_short_range",
                               "face_detection_full_range")}
    return {"facewire": version("facewire"), "numpy": np.__version__, "opencv": cv2.__version__,
            "onnxruntime": version("onnxruntime"), "python": platform.python_version(), "models_sha256": models}


def _open_video(video: Path) -> cv2.VideoCapture:
    if not video.is_file():
        raise DatasetError(f"video {video} does not exist" if not video.exists() else f"{video} is not a file")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DatasetError(f"cannot open {video} as a video (unsupported format or damaged file)")
    return cap


def label_video(video: str | Path, out_dir: str | Path, options: DatasetOptions = DatasetOptions(),
                report_frames: Callable[[int], None] | None = None) -> VideoResult:
    """Track the face through ``video`` and write ``out_dir/STEM.npz``; the unit of work of a dataset run.

    ``report_frames(n)`` (optional, picklable) hears every ``REPORT_EVERY`` frames how many frames were
    read since its last call, so a driver can show frames per second while long videos run.
    Raises ``DatasetError`` for an unreadable video or one without a usable face; OSError when the file
    cannot be written. A finished file is skipped unless ``options.overwrite``.
    """
    video, out_dir = Path(video), Path(out_dir)
    target = output_path(video, out_dir)
    if target.exists() and not options.overwrite:
        return VideoResult(str(video), str(target), skipped=True)
    start = time.perf_counter()
    cap = _open_video(video)
    landmarker = Landmarker("attention")
    tracker = FaceTracker(TrackingConfig(max_faces=1), landmarker=landmarker)
    pose_estimator = PoseEstimator(weak_perspective=True)
    columns: dict[str, list[np.ndarray]] = {k: [] for k in (
        "colorImages", "boundingBox", "landmarks2D", "landmarks3D", "headPose", "gazeVector", "frameNumbers",
        "presence", "landmarks478", "uncertainty68", "uncertainty478")}
    dropped = {"no_face": 0, "label_failed": 0}
    index = 0
    try:
        while options.max_frames is None or index < options.max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            faces = tracker.update(frame)
            index += 1
            if report_frames is not None and index % REPORT_EVERY == 0:
                report_frames(REPORT_EVERY)
            if not faces:
                dropped["no_face"] += 1
                continue
            try:
                labels = _label_frame(frame, faces[0], landmarker, pose_estimator, options)
            except (PoseError, ValueError, FloatingPointError) as exc:
                log.debug("%s frame %d: %s", video.name, index - 1, exc)
                dropped["label_failed"] += 1
                continue
            for key, value in labels.items():
                columns[key].append(value)
            columns["frameNumbers"].append(np.int32(index - 1))
    finally:
        cap.release()
        if report_frames is not None and index % REPORT_EVERY:
            report_frames(index % REPORT_EVERY)
    if index == 0:
        raise DatasetError(f"no frame of {video} could be decoded")
    kept = len(columns["frameNumbers"])
    if kept == 0:
        raise DatasetError(f"no usable face in any of the {index} frames of {video} "
                           f"({dropped['no_face']} without a face, {dropped['label_failed']} failed labels)")
    arrays = {k: np.stack(v) for k, v in columns.items() if v}
    meta = {"format_version": FORMAT_VERSION, "source": str(video), "source_name": video.name,
            "frames_read": index, "frames_kept": kept, "dropped": dropped,
            "options": {k: v for k, v in asdict(options).items() if k not in ("overwrite", "compress")},
            "image_size": [int(arrays["colorImages"].shape[2]), int(arrays["colorImages"].shape[1])],
            "tracker": {"mesh": "attention", "max_faces": 1},
            "uncertainty_jitter": asdict(JitterConfig()) if options.uncertainty else None,
            "versions": _versions(), "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    arrays["metadata"] = np.array(json.dumps(meta))
    out_dir.mkdir(parents=True, exist_ok=True)    # on a cluster worker the folder may not exist yet
    write_atomically(target, arrays, options.compress)
    return VideoResult(str(video), str(target), index, kept, dropped, time.perf_counter() - start)


def _label_frame(frame: np.ndarray, face: TrackedFace, landmarker: Landmarker, pose_estimator: PoseEstimator,
                 options: DatasetOptions) -> dict[str, np.ndarray]:
    mesh = face.mesh.points
    if not np.isfinite(mesh).all():
        raise ValueError("non-finite landmarks")
    h, w = frame.shape[:2]
    pose = pose_estimator.estimate(mesh, (w, h))
    m, size = _placement(face.box, (w, h), options)
    if options.crop or options.output_size is not None:
        image = cv2.warpAffine(frame, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    else:
        image = frame
    x0, y0, x1, y1 = face.box.tolist()
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    labels = {
        "colorImages": cv2.cvtColor(image, cv2.COLOR_BGR2RGB),
        "boundingBox": _map_points(m, corners),
        "landmarks3D": _map_points(m, _ibug68_3d(mesh)),
        "headPose": np.array([pose.yaw, pose.pitch, pose.roll], np.float32),
        "gazeVector": gaze_vectors(mesh, pose.rotation),
        "presence": np.float32(face.mesh.presence),
    }
    labels["landmarks2D"] = labels["landmarks3D"][:, :2].copy()
    if options.mesh:
        labels["landmarks478"] = _map_points(m, mesh)
    if options.uncertainty:
        u = point_uncertainty(frame, roi_from_landmarks(mesh), landmarker)
        labels["uncertainty478"] = u.mesh * np.float32(m[0, 0])
        labels["uncertainty68"] = u.ibug68 * np.float32(m[0, 0])
    if not all(np.isfinite(v).all() for k, v in labels.items() if k != "colorImages"):
        raise ValueError("non-finite labels")
    return labels


def write_atomically(target: Path, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    """Write the .npz under a temporary name in the same folder, then rename it into place."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compress else np.savez)(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output_folder(out_dir: Path) -> None:
    """Create the folder and prove it writable before any work starts (a full or read-only disk fails here)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise DatasetError(f"cannot write to the output folder {out_dir}: {exc.strerror or exc}") from None


def frames_per_second(results: list[VideoResult], elapsed: float) -> float:
    frames = sum(r.frames_read for r in results if not r.skipped)
    return frames / elapsed if elapsed > 0 else math.nan
