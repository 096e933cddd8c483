"""Command line: ``facewire`` (subcommands) and ``facetracker`` (the daemon, with OpenSeeFace's flags)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("facewire")

# Exit codes: 0 success, 1 a check failed or nothing was found, 2 bad input or environment.
EXIT_BAD_INPUT = 2


def _user_errors() -> tuple[type[BaseException], ...]:
    from .analysis import ImageError
    from .evaluation import EvaluationError
    from .runtime import ModelError
    return ImageError, EvaluationError, ModelError


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _progress(done: int, total: int, name: str) -> None:
    if sys.stderr.isatty():
        print(f"\r[{done}/{total}] {name[:50]:<50}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    else:
        log.info("[%d/%d] %s", done, total, name)


def _analyzer_config(args: argparse.Namespace):
    from .analysis import AnalyzerConfig
    return AnalyzerConfig(detector=args.detector, detection_threshold=args.detection_threshold, mesh=args.mesh,
                          focal_px=args.focal)


def _add_analysis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", choices=("auto", "short", "full"), default="auto",
                   help="BlazeFace model: short range (near faces), full range (small/distant faces), or auto "
                        "(short range, then full range when it finds nothing). Default: auto")
    p.add_argument("--detection-threshold", type=float, default=0.5, metavar="P",
                   help="minimum detection score 0..1 (default 0.5)")
    p.add_argument("--mesh", choices=("attention", "mesh", "v2"), default="attention",
                   help="landmark model: the 478-point attention mesh with irises (default), the plain "
                        "468-point mesh, or FaceMesh V2 (478 points, better on turned faces, about twice as slow)")
    p.add_argument("--focal", type=float, default=None, metavar="PIXELS",
                   help="camera focal length in pixels for head pose (translation in mm needs it); by default a "
                        "weak-perspective camera is assumed, as the photo's camera is unknown")


def _face_json(face) -> dict:
    def arr(a, digits=2):
        return np.round(np.asarray(a, dtype=np.float64), digits).tolist()

    pose = face.pose
    return {
        "box": arr(face.box),
        "detection_score": round(face.detection_score, 4),
        "presence": round(face.presence, 4),
        "landmarks": arr(face.landmarks),
        "confidence": arr(face.confidence, 3),
        "ibug68": arr(face.ibug68),
        "irises": {name: None if iris is None else {"centre": arr(iris.centre), "radius": round(iris.radius, 2)}
                   for name, iris in (("right", face.right_iris), ("left", face.left_iris))},
        "pose": {
            "yaw": round(pose.yaw, 2), "pitch": round(pose.pitch, 2), "roll": round(pose.roll, 2),
            "quaternion_xyzw": arr(pose.quaternion, 5),
            "translation_mm": arr(pose.translation, 1),
            "reprojection_error_px": round(pose.reprojection_error, 3),
        },
    }


def cmd_analyze(args: argparse.Namespace) -> int:
    import cv2

    from .analysis import FaceAnalyzer, load_image
    from .drawing import draw_face

    image = load_image(args.image)
    analyzer = FaceAnalyzer(_analyzer_config(args))
    faces = analyzer.analyze(image)
    uncertainty = []
    if args.uncertainty:
        from .offline.uncertainty import face_uncertainty
        uncertainty = [face_uncertainty(image, f, analyzer.landmarker) for f in faces]
    if args.json:
        doc = {"image": str(args.image), "width": image.shape[1], "height": image.shape[0],
               "faces": [_face_json(f) for f in faces]}
        for face_doc, u in zip(doc["faces"], uncertainty):
            face_doc["uncertainty_px"] = u.as_json()
        if faces and len(faces[0].landmarks) >= 478:     # the blendshape model reads the 478-point meshes
            from .blendshapes import BlendshapeModel
            model = BlendshapeModel()
            for face_doc, face in zip(doc["faces"], faces):
                shapes = model(face.landmarks).as_dict()
                face_doc["blendshapes"] = {name: round(float(v), 4) for name, v in shapes.items()}
        print(json.dumps(doc))
    else:
        print(f"{args.image}: {len(faces)} face(s)")
        for i, f in enumerate(faces):
            x0, y0, x1, y1 = f.box
            print(f"  face {i}: box ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}) score {f.detection_score:.2f} "
                  f"presence {f.presence:.2f}  yaw {f.pose.yaw:+.1f} pitch {f.pose.pitch:+.1f} "
                  f"roll {f.pose.roll:+.1f} deg  distance {f.pose.translation[2] / 10:.0f} cm")
            if uncertainty:
                print(f"          {uncertainty[i].summary()}")
    if args.mesh_out and faces:
        from .offline.mesh_export import MeshExportError, export_mesh
        try:
            written = export_mesh(args.mesh_out, image, faces[0].landmarks)
        except MeshExportError as exc:
            log.error("%s", exc)
            return EXIT_BAD_INPUT
        log.info("wrote %s", ", ".join(map(str, written)))
    if args.draw:
        canvas = image.copy()
        for i, f in enumerate(faces):
            irises = [(i_.centre, i_.radius) for i_ in (f.right_iris, f.left_iris) if i_ is not None]
            draw_face(canvas, f.landmarks, f.ibug68, f.pose, label=f"face {i}", irises=irises)
        if not cv2.imwrite(str(args.draw), canvas):
            log.error("could not write %s (unknown image extension or unwritable folder)", args.draw)
            return EXIT_BAD_INPUT
        log.info("wrote %s", args.draw)
    return 0 if faces else 1


def cmd_eval_landmarks(args: argparse.Namespace) -> int:
    from .analysis import FaceAnalyzer
    from .evaluation import evaluate_landmarks

    report = evaluate_landmarks(args.directory, FaceAnalyzer(_analyzer_config(args)), _progress)
    print(f"{'image':<34} {'NME68 %':>8} {'NME51 %':>8}")
    for s in report.scores:
        if s.found:
            flag = "  FAIL" if s.failed else ""
            print(f"{s.image:<34} {s.nme68 * 100:8.2f} {s.nme51 * 100:8.2f}{flag}")
        else:
            print(f"{s.image:<34} {'no face':>8} {'':>8}  FAIL")
    summary = report.summary()
    print(f"\n{summary['images']} images, face found in {summary['found']}\n"
          f"NME 68 points: mean {summary['mean_nme68'] * 100:.2f}%  median {summary['median_nme68'] * 100:.2f}%\n"
          f"NME 51 points (no jaw): mean {summary['mean_nme51'] * 100:.2f}%  "
          f"median {summary['median_nme51'] * 100:.2f}%\n"
          f"failure rate (NME > 10% or no face): {summary['failure_rate'] * 100:.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "images": [s.__dict__ for s in report.scores]},
                                              indent=1))
    return 0


def cmd_eval_pose(args: argparse.Namespace) -> int:
    from .analysis import FaceAnalyzer
    from .evaluation import evaluate_pose

    report = evaluate_pose(args.directory, args.truth, FaceAnalyzer(_analyzer_config(args)), _progress)
    print(f"{'image':<28} {'yaw':>14} {'pitch':>14} {'roll':>14}   (truth / ours, degrees)")
    for s in report.scores:
        cells = [f"{t:6.1f}/{p:6.1f}" for t, p in zip(s.truth, s.predicted)]
        print(f"{s.image:<28} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14}" + ("" if s.found else "  no face"))
    m = report.summary()
    print(f"\n{m['images']} images ({m['skipped_out_of_range']} skipped beyond 99 degrees), face found in "
          f"{m['found']}\nmean absolute error: yaw {m['mae_yaw']:.2f}  pitch {m['mae_pitch']:.2f}  "
          f"roll {m['mae_roll']:.2f}  mean {m['mae_mean']:.2f} degrees")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facewire",
        description="Facewire: real-time face tracking for VTubing apps (OpenSeeFace's protocol, VMC, iFacialMocap, "
                    "msgpack over UDP or ZeroMQ), and its tools.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                help="what to do; each command has its own --help")

    p = sub.add_parser("analyze", help="find faces in one image: landmarks, 68 points, irises, head pose",
                       description="Analyse one image and print the faces found (or JSON with --json).")
    p.add_argument("image", type=Path, help="image file (jpg, png, ...)")
    p.add_argument("--json", action="store_true", help="print every result as one JSON document")
    p.add_argument("--draw", type=Path, metavar="OUT.png", help="also write a picture with the results drawn on it")
    p.add_argument("--uncertainty", action="store_true",
                   help="per-point uncertainty in pixels: the spread of each point over 8 jittered crops "
                        "(8 extra mesh runs per face)")
    p.add_argument("--mesh-out", type=Path, metavar="FACE.obj|FACE.ply",
                   help="write the first face's 468-point mesh with MediaPipe's canonical triangles: .obj with "
                        ".mtl and texture PNG beside it, or .ply with per-vertex colour")
    _add_analysis_options(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("eval-landmarks", help="landmark accuracy (NME) on a folder of photos with .pts files",
                       description="For every image with a NAME.pts (iBUG 68 points, zero-based) beside it: NME "
                                   "normalised by the outer eye corners (points 36 and 45) over 68 points and over "
                                   "the 51 non-jaw points; then mean, median and failure rate (NME > 10% or no "
                                   "face). With several faces, the one overlapping the annotation most is scored.")
    p.add_argument("directory", type=Path, help="folder of images, each with its NAME.pts beside it")
    p.add_argument("--json", metavar="OUT.json", help="also write per-image scores and the summary as JSON")
    _add_analysis_options(p)
    p.set_defaults(func=cmd_eval_landmarks)

    p = sub.add_parser("eval-pose", help="head-pose accuracy against AFLW2000 ground truth",
                       description="Mean absolute yaw/pitch/roll error against a CSV with columns image, "
                                   "pitch_deg, yaw_deg, roll_deg (AFLW2000 convention) and optionally "
                                   "in_range_99deg (rows with 0 are skipped, as AFLW2000 benchmarks do).")
    p.add_argument("directory", type=Path, help="folder of the images the CSV names")
    p.add_argument("--truth", type=Path, required=True, metavar="CSV", help="ground-truth table")
    _add_analysis_options(p)
    p.set_defaults(func=cmd_eval_pose)
    p = sub.add_parser("track", help="the tracking daemon (same as the facetracker command)", add_help=False)
    p.set_defaults(func=None)

    from .offline.dataset_cli import add_dataset_command
    add_dataset_command(sub)

    from facewire.client.commands import add_client_commands
    add_client_commands(sub)     # monitor, calibrate, expressions, keys: the client side, no tracker needed
    from .offline.contours_cli import add_contour_commands
    add_contour_commands(sub)    # contours detect|annotate|compute|export|import|render|annotations
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "track":
        return facetracker_main(argv[1:], prog="facewire track")
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except _user_errors() as exc:
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


def facetracker_main(argv: list[str] | None = None, prog: str = "facetracker") -> int:
    try:
        from .daemon import facetracker_main as run     # imports OpenCV and onnxruntime: takes a moment
    except KeyboardInterrupt:
        return 130
    return run(argv, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
