"""Run ``label_video`` over many videos: a local process pool, or a Dask cluster.

Each video is one task. A task that fails is reported and submitted once more; a second failure is
recorded and the run goes on. Progress (videos done, frames per second over all workers, videos per
minute) goes to the callback as each video finishes and every few seconds in between: running videos
report their frames through a queue (a multiprocessing manager's, or a ``distributed.Queue``). With Dask, the workers write the files
themselves, so the output folder must be one they can all reach (a shared or network filesystem).
"""
from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context
from queue import Empty
from pathlib import Path
from typing import Callable

from .dataset import DatasetOptions, VideoResult, label_video

log = logging.getLogger(__name__)

ATTEMPTS = 2      # the first try and one retry
POLL_SECONDS = 0.5
PROGRESS_SECONDS = 5.0   # a progress line at least this often while videos run


class SchedulerError(RuntimeError):
    """The Dask scheduler cannot be used (distributed missing, or the address does not answer)."""


@dataclass(frozen=True)
class Failure:
    video: str
    error: str


@dataclass(frozen=True)
class Progress:
    done: int                                  # videos finished (written, skipped or failed)
    total: int
    frames: int                                # frames read so far by all workers, running videos included
    elapsed: float
    last: VideoResult | Failure | None         # the video just finished; None for a periodic update

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def videos_per_minute(self) -> float:
        return 60.0 * self.done / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class RunReport:
    results: list[VideoResult] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    retries: int = 0
    elapsed: float = 0.0

    @property
    def frames(self) -> int:
        """Frames read by the videos that finished (not by failed attempts)."""
        return sum(r.frames_read for r in self.results if not r.skipped)


ProgressFn = Callable[[Progress], None]


class FrameCounter:
    """Picklable ``report_frames`` callback: workers put frame counts on a queue the driver drains."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def __call__(self, frames: int) -> None:
        self.queue.put(frames)

    def drain(self) -> int:
        total = 0
        if hasattr(self.queue, "get_nowait"):          # multiprocessing queue (local pool)
            while True:
                try:
                    total += self.queue.get_nowait()
                except Empty:
                    return total
        return sum(self.queue.get(batch=True))      # distributed.Queue: everything waiting, no blocking


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Bookkeeper:
    """Shared by both back ends: records results, decides retries, reports progress."""

    def __init__(self, total: int, progress: ProgressFn | None, every: float) -> None:
        self.report = RunReport()
        self.total = total
        self.progress = progress
        self.every = every
        self.start = self.last_tell = time.perf_counter()
        self.attempts: dict[str, int] = {}
        self.frames_seen = 0

    def success(self, result: VideoResult) -> None:
        self.report.results.append(result)
        self._tell(result)

    def failure(self, video: str, exc: BaseException) -> bool:
        """Record a failed attempt; True when the video should be tried again."""
        tries = self.attempts.get(video, 0) + 1
        self.attempts[video] = tries
        if tries < ATTEMPTS:
            self.report.retries += 1
            log.warning("%s failed (%s); retrying once", video, _describe(exc))
            return True
        failure = Failure(video, _describe(exc))
        self.report.failures.append(failure)
        log.error("%s failed again, skipped: %s", video, failure.error)
        self._tell(failure)
        return False

    def frames(self, count: int) -> None:
        """Frames reported by running videos; a periodic progress line when one is due."""
        self.frames_seen += count
        if self.every and time.perf_counter() - self.last_tell >= self.every:
            self._tell(None)

    def _tell(self, last: VideoResult | Failure | None) -> None:
        self.last_tell = time.perf_counter()
        self.report.elapsed = self.last_tell - self.start
        if self.progress:
            done = len(self.report.results) + len(self.report.failures)
            self.progress(Progress(done, self.total, self.frames_seen, self.report.elapsed, last))


def run_local(videos: list[Path], out_dir: Path, options: DatasetOptions, workers: int = 1,
              progress: ProgressFn | None = None, every: float = PROGRESS_SECONDS) -> RunReport:
    """Label the videos on a pool of ``workers`` processes on this machine."""
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    book = _Bookkeeper(len(videos), progress, every)
    # spawn: each worker starts clean (no inherited onnxruntime or OpenCV thread state).
    context = get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        counter = FrameCounter(manager.Queue())

        def submit(video: str):
            return pool.submit(label_video, video, str(out_dir), options, counter)

        pending = {submit(str(v)): str(v) for v in videos}
        while pending:
            done, _ = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            book.frames(counter.drain())
            for future in done:
                video = pending.pop(future)
                try:
                    book.success(future.result())
                except Exception as exc:   # noqa: BLE001 - any failure of one video is reported, never fatal
                    if book.failure(video, exc):
                        pending[submit(video)] = video
    book.report.elapsed = time.perf_counter() - book.start
    return book.report


def connect(address: str):
    """A ``distributed.Client`` for ``tcp://HOST:PORT``, with clear errors when it cannot be had."""
    try:
        from distributed import Client
    except ImportError:
        raise SchedulerError("--scheduler needs Dask's distributed package: pip install 'facewire[dask]'") from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def run_dask(videos: list[Path], out_dir: Path, options: DatasetOptions, client,
             progress: ProgressFn | None = None, max_pending: int = 1000,
             every: float = PROGRESS_SECONDS) -> RunReport:
    """Label the videos as tasks on a Dask cluster through ``client`` (a ``distributed.Client``).

    At most ``max_pending`` tasks are submitted at a time, so a million videos never sit in the
    scheduler (or this process) at once.
    """
    from distributed import Queue
    from distributed import wait as wait_any

    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, not {max_pending}")
    book = _Bookkeeper(len(videos), progress, every)
    counter = FrameCounter(Queue(f"facewire-frames-{uuid.uuid4().hex}", client=client))
    running: dict = {}
    waiting = iter([str(v) for v in videos])

    def submit(video: str, attempt: int) -> None:
        future = client.submit(label_video, video, str(out_dir), options, counter, pure=False,
                               key=f"facewire-dataset-{attempt}-{video}")
        running[future] = video

    for video in islice(waiting, max_pending):
        submit(video, 0)
    while running:
        try:
            done = wait_any(list(running), timeout=POLL_SECONDS, return_when="FIRST_COMPLETED").done
        except TimeoutError:
            done = set()
        book.frames(counter.drain())
        for future in done:
            video = running.pop(future)
            try:
                book.success(future.result())
            except Exception as exc:   # noqa: BLE001 - reported and retried, never fatal
                if book.failure(video, exc):
                    submit(video, book.attempts[video])
            finally:
                future.release()
            following = next(waiting, None) if len(running) < max_pending else None
            if following is not None:
                submit(following, 0)
    book.frames(counter.drain())
    book.report.elapsed = time.perf_counter() - book.start
    return book.report
