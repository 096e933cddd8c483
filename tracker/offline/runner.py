"""Run ``label_video`` over many videos: a local process pool, or a Dask cluster.

Each video is one task. A task that fails is reported and submitted once more; a second failure is
recorded and the run goes on. Progress (videos done, frames per second over all workers, videos per
minute) goes to the callback as each video finishes. With Dask, the workers write the files
themselves, so the output folder must be one they can all reach (a shared or network filesystem).
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from .dataset import DatasetOptions, VideoResult, label_video

log = logging.getLogger(__name__)

ATTEMPTS = 2      # the first try and one retry


class SchedulerError(RuntimeError):
    """The Dask scheduler cannot be used (distributed missing, or the address does not answer)."""


@dataclass(frozen=True)
class Failure:
    video: str
    error: str


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    frames: int
    elapsed: float
    last: VideoResult | Failure

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
        return sum(r.frames_read for r in self.results if not r.skipped)


ProgressFn = Callable[[Progress], None]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Bookkeeper:
    """Shared by both back ends: records results, decides retries, reports progress."""

    def __init__(self, total: int, progress: ProgressFn | None) -> None:
        self.report = RunReport()
        self.total = total
        self.progress = progress
        self.start = time.perf_counter()
        self.attempts: dict[str, int] = {}

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

    def _tell(self, last: VideoResult | Failure) -> None:
        self.report.elapsed = time.perf_counter() - self.start
        if self.progress:
            done = len(self.report.results) + len(self.report.failures)
            self.progress(Progress(done, self.total, self.report.frames, self.report.elapsed, last))


def run_local(videos: list[Path], out_dir: Path, options: DatasetOptions, workers: int = 1,
              progress: ProgressFn | None = None) -> RunReport:
    """Label the videos on a pool of ``workers`` processes on this machine."""
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    book = _Bookkeeper(len(videos), progress)
    # spawn: each worker starts clean (no inherited onnxruntime or OpenCV thread state).
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending = {pool.submit(label_video, str(v), str(out_dir), options): str(v) for v in videos}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                video = pending.pop(future)
                try:
                    book.success(future.result())
                except Exception as exc:   # noqa: BLE001 - any failure of one video is reported, never fatal
                    if book.failure(video, exc):
                        pending[pool.submit(label_video, video, str(out_dir), options)] = video
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
             progress: ProgressFn | None = None, max_pending: int = 1000) -> RunReport:
    """Label the videos as tasks on a Dask cluster through ``client`` (a ``distributed.Client``).

    At most ``max_pending`` tasks are submitted at a time, so a million videos never sit in the
    scheduler (or this process) at once.
    """
    from distributed import as_completed

    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, not {max_pending}")
    book = _Bookkeeper(len(videos), progress)
    futures: dict[str, str] = {}
    waiting = iter([str(v) for v in videos])

    def submit(video: str, attempt: int):
        future = client.submit(label_video, video, str(out_dir), options, pure=False,
                               key=f"facewire-dataset-{attempt}-{video}")
        futures[future.key] = video
        return future

    queue = as_completed([submit(v, 0) for v in islice(waiting, max_pending)])
    for future in queue:
        video = futures.pop(future.key)
        try:
            book.success(future.result())
        except Exception as exc:   # noqa: BLE001 - reported and retried, never fatal
            if book.failure(video, exc):
                queue.add(submit(video, book.attempts[video]))
        finally:
            future.release()
        if len(futures) < max_pending:
            following = next(waiting, None)
            if following is not None:
                queue.add(submit(following, 0))
    book.report.elapsed = time.perf_counter() - book.start
    return book.report
