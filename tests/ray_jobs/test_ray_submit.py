"""``ray job submit --working-dir <repo> -- python -m ray_jobs ingest --config job.yaml`` end to end.

Starts a private head node (``ray start --head --block`` in its own session, dashboard and job
server included: the ``ray[default]`` extra), submits the ingestion job with the repository as
its working dir, checks the exit statuses, the written Qdrant Edge collection and the report, and
stops the head node by process id (never ``ray stop``, which would stop every Ray cluster of
this user on the machine, other test runs' included).

Ray 2.60 turns token authentication on for new clusters; the test gives both the head node and
the submitting CLI its own token (``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN_PATH``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("aiohttp_cors", reason="ray job submit needs the dashboard: pip install 'ray[default]'")
pytest.importorskip("qdrant_edge")
pytest.importorskip("imageio_ffmpeg")

import video_factory as vf  # noqa: E402

from vtr_qdrant import VideoCollection  # noqa: E402
from vtr_qdrant.model.bundle import ModelBundle  # noqa: E402
from vtr_qdrant.store.edge import EdgeBackend  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.edge]

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (the head node's: workers get their own process groups, not sessions)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z" and int(entry) != os.getpid():  # zombies are gone already
            out.append(int(entry))
    return out


def _stop_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM every process of the head node's session (as ``ray stop`` does, but only these),
    then SIGKILL what is left after a grace period."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        for pid in _session_pids(proc.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap the session leader
            if not _session_pids(proc.pid):
                return
            time.sleep(0.25)


@dataclass
class Head:
    dashboard: str
    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    tmp = Path(tempfile.mkdtemp(prefix="rjs", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    token = tmp / "token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),  # the job's `python`
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
    )
    dash = _free_port()
    ports = [f"--port={_free_port()}", f"--dashboard-port={dash}", f"--ray-client-server-port={_free_port()}",
             f"--dashboard-agent-listen-port={_free_port()}"]
    log = tmp / "head.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--temp-dir={tmp / 'ray'}", "--disable-usage-stats", *ports],
            env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401 without the token: the dashboard is up
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the dashboard did not come up in 60 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield Head(url, env, log)
    finally:
        _stop_session(proc)
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def _submit(head: Head, *entrypoint: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    cmd = [RAY, "job", "submit", "--address", head.dashboard, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps({"excludes": [".git", "benchmarks/results", "*.egg-info"]}), "--", *entrypoint]
    try:
        return subprocess.run(cmd, env=head.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"ray job submit did not finish in {timeout} s:\n{e.stdout!r}\n{e.stderr!r}\nhead log:\n{head.log.read_text()[-2000:]}")


@pytest.mark.timeout(300)
def test_ray_job_submit_ingests_into_edge(head: Head, test_bundle: ModelBundle, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for colour in ("red", "blue", "yellow"):
        vf.color_video(videos / f"{colour}.mp4", (colour, "black"), seconds_per_color=0.5, size=(32, 32), fps=10)
    vf.random_bytes(videos / "noise.mp4")
    job = tmp_path / "job.yaml"
    job.write_text(
        f"sources: ['{videos}']\ncollection: vids\nbundle: 'local-dir:{test_bundle.path}'\nvideo_id: stem\n"
        f"sampling: {{num_frames: 4}}\nqdrant: {{edge_path: '{tmp_path / 'edge'}'}}\noutput_dir: '{tmp_path / 'out'}'\n"
        "decode: {timeout: 30}\n"
    )
    done = _submit(head, "python", "-m", "ray_jobs", "ingest", "--config", str(job), "--no-progress")
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "succeeded" in out, out
    assert "listed 4: ingested 3, skipped 0 unchanged, failed 1" in out  # the job's summary, tailed by the CLI
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["target"], report["write_mode"], report["ingested"], report["failed"]) == ("edge", "driver", 3, 1)
    assert report["failures"][0]["video_id"] == "noise" and report["failures"][0]["reason"] == "invalid_data"
    with EdgeBackend(tmp_path / "edge") as edge:
        vc = VideoCollection(edge, "vids", test_bundle)
        assert vc.count() == 3 and vc.count_points() == 3
        import numpy as np

        img = np.broadcast_to(np.array(vf.COLORS["blue"], np.uint8), (1, 32, 32, 3)).copy()
        assert vc.search(test_bundle.frame_encoder().encode(img)[0], limit=1, aggregation="max")[0].video_id == "blue"

    # a job that fails as a whole (here: a bad config, exit code 2) fails the submission
    bad = _submit(head, "python", "-m", "ray_jobs", "ingest", "--config", str(job), "--set", "encode.min_actors=3",
                  "--set", "encode.max_actors=2")
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "failed" in out.lower() and "encode.min_actors=3 exceeds" in out, out
