"""Shared verifier helpers (testinfra): the scenario's state and a restore through the test bed."""

import json
import os

import pytest

STATE_DIR = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
TESTBED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testbed.py")


@pytest.fixture
def state(host):
    return json.loads(host.file(os.path.join(STATE_DIR, "state.json")).content_string)


@pytest.fixture
def backups(host, state):
    """label -> backup.json of every backup the role wrote."""
    found = {}
    dest = state["dest"]
    if host.file(dest).is_directory:
        for name in host.file(dest).listdir():
            record = host.file(os.path.join(dest, name, "backup.json"))
            if record.exists:
                found[name] = json.loads(record.content_string)
    return found


@pytest.fixture
def restore_check(host, state):
    def run(backup_dir):
        import sys
        out = host.check_output("%s %s restore-check %s %s", sys.executable, TESTBED, STATE_DIR, backup_dir)
        return json.loads(out.splitlines()[-1])
    return run


@pytest.fixture
def in_backup(host, state):
    def check():
        return host.file(os.path.join(state["data_dir"], "backup_label")).exists
    return check


@pytest.fixture
def failure(host):
    f = host.file(os.path.join(STATE_DIR, "failure.txt"))
    return f.content_string if f.exists else None


@pytest.fixture
def rows(host, state):
    """rows(restored=False): demo.t's rows by phase, of the scenario's server or of the one the role restored."""
    def run(restored=False):
        import sys
        command = "%s %s rows %s --restored" if restored else "%s %s rows %s"
        out = host.check_output(command, sys.executable, TESTBED, STATE_DIR)
        return json.loads(out.splitlines()[-1])
    return run
