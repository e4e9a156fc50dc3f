"""The test bed itself: clear errors, and no server outlives the run that started it."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from testbed import Cluster, TestbedError, provide

REPO = Path(__file__).resolve().parents[2]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not reaped it yet.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def wait_gone(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


def test_unknown_major_is_a_clear_error():
    with pytest.raises(TestbedError, match="PostgreSQL 13 is not provided by the test bed; choose one of 14, 15, 16, 18"):
        provide(13)


def test_port_in_use_is_a_clear_error(scratch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(TestbedError, match=f"Port {port} on 127.0.0.1 is in use"):
            Cluster.create(provide(14), scratch / "busy", port=port)


def test_cli_starts_and_stops_a_cluster(scratch):
    root = scratch / "by-hand"
    cli = [sys.executable, "-m", "tests.testbed"]
    out = subprocess.run([*cli, "start", "14", "--dir", str(root)], cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    pid = int((root / "data/postmaster.pid").read_text().split()[0])
    try:
        assert alive(pid)
        assert f"stop             python -m tests.testbed stop {root}" in out.stdout
    finally:
        stopped = subprocess.run([*cli, "stop", str(root)], cwd=REPO, capture_output=True, text=True, check=False)
    assert stopped.returncode == 0, stopped.stderr
    assert wait_gone(pid)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupted_test_run_stops_its_servers(scratch, signum):
    (scratch / "test_sleeper.py").write_text(textwrap.dedent("""
        import pathlib
        import time

        def test_sleeps(pg):
            pathlib.Path("in-test").touch()
            time.sleep(120)
    """))
    (scratch / "conftest.py").write_text("from testbed.fixtures import *  # noqa\n")
    tmp = scratch / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PGX_MAJORS="14", TMPDIR=str(tmp),
               PYTHONPATH=f"{REPO / 'tests'}:{REPO / 'tests/output/collections'}")
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(scratch),
         "-c", os.devnull, str(scratch / "test_sleeper.py")],
        cwd=scratch, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The fixture may restart its server while it sets it up; only once the
        # test body runs is the postmaster.pid the one the interrupt must stop.
        deadline = time.monotonic() + 60
        while not (scratch / "in-test").exists() and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.2)
        pidfiles = list(tmp.glob("pgx-testbed-*/pg14/data/postmaster.pid"))
        assert pidfiles, run.stdout.read() if run.poll() is not None else "no server started"
        pid = int(pidfiles[0].read_text().split()[0])
        run.send_signal(signum)
        run.wait(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert wait_gone(pid), f"postmaster {pid} outlived the interrupted run"
