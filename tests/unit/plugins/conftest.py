"""Fixtures of the unit tests: an ssh on PATH that runs the remote side here, for a repository on another host;
a bound on a test that would hang (ansible-test units has no pytest-timeout, and refuses unknown marks)."""

import json
import os
import signal
import sys

import pytest

FAKE_SSH = """#!{python}
# ssh that logs its arguments and runs the remote command here: sh -c, as sshd would.
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_SSH_FAIL"):
    sys.stderr.write(os.environ["FAKE_SSH_FAIL"] + "\\n")
    sys.exit(255)
i = 0
while args[i].startswith("-"):
    i += 2 if args[i] in ("-o", "-i", "-l", "-p", "-F") else 1
os.execvp("sh", ["sh", "-c", " ".join(args[i + 1:])])
"""


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    """An ssh on PATH that runs the remote side locally; returns the list of argv it was called with."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(FAKE_SSH.format(python=sys.executable))
    (bindir / "ssh").chmod(0o755)
    log = tmp_path / "ssh.log"
    log.touch()
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    return lambda: [json.loads(line) for line in log.read_text().splitlines()]


NO_HANG_SECONDS = 10


@pytest.fixture
def no_hang():
    """The test fails, instead of hanging, when it is still running after NO_HANG_SECONDS: a FIFO opened blocking
    waits for a writer that never comes. The alarm's exception ends the blocked system call (PEP 475)."""
    def expired(_signum, _frame):
        raise AssertionError("still blocked after %d s" % NO_HANG_SECONDS)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(NO_HANG_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
