"""The lease: when it ends, how the controller's shell command renews it, and the copy that ends with it."""

import os
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop import during_copy as safety_stop_copy
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.lease import (
    BY_HEARTBEAT, BY_MAX_DURATION, ENDED, RENEWED, end_lease, lease_end, lease_lost, lease_path, lease_renewed_at,
    renew_command, renew_interval, renewal_outcome, start_lease)
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import EXPIRED_STOPPED, RUNNING, update_record, write_record
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.io import copy_tree, open_root
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def rec(**fields):
    base = {"outcome": RUNNING, "started_epoch": 1000.0, "lease": None, "expires_epoch": None,
            "expires_at": None, "heartbeat_timeout": None}
    return dict(base, **fields)


def test_the_lease_ends_at_the_first_limit():
    assert lease_end(rec(), None) is None
    assert lease_end(rec(lease=600, expires_epoch=1600.0), None) == (1600.0, BY_MAX_DURATION)
    assert lease_end(rec(heartbeat_timeout=60), 1300.0) == (1360.0, BY_HEARTBEAT)
    both = rec(lease=600, expires_epoch=1600.0, heartbeat_timeout=60)
    assert lease_end(both, 1300.0) == (1360.0, BY_HEARTBEAT)
    assert lease_end(both, 1590.0) == (1600.0, BY_MAX_DURATION), "renewals never pass max_duration"
    assert lease_end(rec(heartbeat_timeout=60), None) == (1060.0, BY_HEARTBEAT), "a removed lease file renews nothing"


def test_why_a_lease_is_lost():
    renewed = rec(heartbeat_timeout=60)
    assert lease_lost(renewed, 1300.0, 1359.9) is None
    assert "stopped renewing" in lease_lost(renewed, 1300.0, 1360.0)
    assert "heartbeat_timeout is 60 s" in lease_lost(renewed, 1300.0, 1400.0)
    assert "max_duration" in lease_lost(rec(lease=5, expires_epoch=1005.0, expires_at="T"), None, 1005.0)
    assert lease_lost(None, None, 0) == "its state record is gone"
    assert lease_lost(rec(outcome="stopped"), None, 0) == "its state record says stopped"
    expired = rec(outcome=EXPIRED_STOPPED, heartbeat_timeout=60, expired_by=BY_HEARTBEAT, lease_renewed_at="T1")
    assert "the last renewal was at T1" in lease_lost(expired, None, 0), "the watchdog's own reason"
    assert lease_lost(rec(), None, 10 ** 10) is None, "no limit: never lost while running"


def test_renewal_interval_is_a_quarter_of_the_timeout():
    assert renew_interval(60) == 15.0 and renew_interval(4) == 1.0 and renew_interval(2) == 1.0


@pytest.mark.parametrize("name", ["plain.json", "it's a \"label\" $(touch x) `y`.json"])
def test_the_renew_command_touches_only_an_existing_lease(tmp_path, name):
    path = str(tmp_path / name)
    start_lease(path, 1000.0)

    def shell():
        return subprocess.run(["/bin/sh", "-c", renew_command(path)], capture_output=True, text=True,
                              cwd=str(tmp_path), check=False)

    done = shell()
    assert renewal_outcome(done.stdout) == RENEWED, done
    assert time.time() - lease_renewed_at(path) < 5
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(lease_path(path))]), "nothing else ran"
    end_lease(path)
    assert renewal_outcome(shell().stdout) == ENDED
    assert not os.path.exists(lease_path(path)), "a late renewal never brings the lease back"
    end_lease(path)


def test_renewal_outcome_reads_through_noise():
    assert renewal_outcome("BECOME-SUCCESS-abc\npgx-lease-renewed\n") == RENEWED
    assert renewal_outcome("pgx-lease-ended") == ENDED
    assert renewal_outcome("") is None and renewal_outcome(None) is None
    assert renewal_outcome("sudo: a password is required") is None


def leased_record(tmp_path, heartbeat_timeout=4):
    path = str(tmp_path / "rec.json")
    now = time.time()
    write_record(path, rec(started_epoch=now, heartbeat_timeout=heartbeat_timeout))
    start_lease(path, now)
    return path


def test_a_copy_under_a_renewed_lease_returns_its_result(tmp_path):
    path = leased_record(tmp_path)
    stop = threading.Event()

    def renew():
        while not stop.wait(0.5):
            os.utime(lease_path(path))

    renewer = threading.Thread(target=renew)
    renewer.start()
    try:
        result = safety_stop_copy.copy_while_leased(path, lambda: time.sleep(6) or {"copied": True}, threading.Event())
    finally:
        stop.set()
        renewer.join()
    assert result == {"copied": True}


def test_a_copy_whose_lease_ends_is_terminated_and_fails(tmp_path, monkeypatch):
    """No renewals: the guard ends the copy's child process within a second of the end, and says why."""
    monkeypatch.setattr(safety_stop_copy, "OUTCOME_WAIT", 3)
    path = leased_record(tmp_path, heartbeat_timeout=4)
    children = []

    def copy():
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        children.append(child)
        child.wait()
        raise BackupError("the copy command exited with %s" % child.returncode)

    def watchdog():
        time.sleep(4.2)
        update_record(path, outcome=EXPIRED_STOPPED, expired_by=BY_HEARTBEAT, lease_renewed_at="T0")

    acting = threading.Thread(target=watchdog)
    acting.start()
    started = time.time()
    with pytest.raises(BackupError) as failed:
        safety_stop_copy.copy_while_leased(path, copy, threading.Event())
    acting.join()
    took = time.time() - started
    assert children[0].returncode is not None and children[0].returncode < 0, "the child was signalled"
    # Not a timing test: the child sleeps 120 s, so ending within a minute shows the guard ended it
    # (a loaded CI machine took 9 s where a quiet one takes 5).
    assert 4 <= took < 60
    assert "The copy was stopped: the backup's lease ended (the controller stopped renewing" in failed.value.msg
    assert "outcome expired-stopped" in failed.value.msg
    assert failed.value.facts["lease_lost"]


def test_a_copy_never_starts_on_an_ended_lease(tmp_path, monkeypatch):
    monkeypatch.setattr(safety_stop_copy, "OUTCOME_WAIT", 0)
    path = leased_record(tmp_path)
    update_record(path, outcome="stopped")
    ran = []
    with pytest.raises(BackupError, match="The copy did not start: the backup's lease ended"):
        safety_stop_copy.copy_while_leased(path, lambda: ran.append(1), threading.Event())
    assert ran == []


def test_without_a_record_path_the_copy_just_runs():
    assert safety_stop_copy.copy_while_leased(None, lambda: "done", threading.Event()) == "done"


def test_a_cancelled_tree_copy_starts_no_further_file(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for index in range(3):
        (source / f"f{index}").write_text("x")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BackupError, match="was cancelled"):
        with open_root(str(source)) as root:
            copy_tree(root, str(tmp_path / "dst"), cancel=cancel)
    assert not [p for p in (tmp_path / "dst").iterdir() if p.is_file()]


def test_descendants_finds_grandchildren():
    shell = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & wait"])
    try:
        deadline = time.time() + 5
        while len(safety_stop_copy.descendants(os.getpid())) < 2 and time.time() < deadline:
            time.sleep(0.05)
        found = safety_stop_copy.descendants(os.getpid())
        assert shell.pid in found and len(found) >= 2
    finally:
        safety_stop_copy.terminate_children(grace=2)
        shell.wait(5)
    assert shell.returncode is not None
