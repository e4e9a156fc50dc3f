"""safety_stop_watchdog: its decision under the lock with a fake cursor, and the detached process itself (no server)."""

import ast
import json
import os
import subprocess

import psycopg2
import pytest
import signal
import sys
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_api
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop import watchdog as safety_stop_watchdog
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.lease import (
    BY_MAX_DURATION, lease_path, start_lease)
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import (
    EXPIRED_NOT_IN_PROGRESS, EXPIRED_OTHER_LABEL, EXPIRED_STOPPED, EXPIRED_UNREACHABLE, RUNNING, STOPPED,
    is_watchdog_of, read_record, write_record)


class FakeCursor:
    """Answers the statements in order; an exception as an answer is raised by the statement."""

    def __init__(self, answers):
        self.answers, self.sent = list(answers), []

    def execute(self, sql, args=None):
        self.sent.append((sql, args))
        if isinstance(self.answers[0], Exception):
            raise self.answers.pop(0)

    def fetchone(self):
        return (self.answers.pop(0),)


def bounded(stop_answer, *after):
    """The answers of a bounded guarded stop: the current statement_timeout, the limit, the stop, the reset."""
    return ["0", "10s", stop_answer, "0", *after]


class Cancelled(psycopg2.Error):
    pgcode = backup_api.QUERY_CANCELED


def config(tmp_path, outcome=RUNNING, lease=1, heartbeat_timeout=None):
    path = str(tmp_path / "rec.json")
    now = time.time()
    record = {"label": "mine", "start_lsn": "0/2000028", "outcome": outcome, "lease": lease, "started_epoch": now,
              "expires_epoch": now + lease if lease else None, "heartbeat_timeout": heartbeat_timeout}
    write_record(path, record)
    if heartbeat_timeout:
        start_lease(path, now)
    return dict(record_path=path, record=record, api="native",
                connect={"host": str(tmp_path / "no-socket-here"), "port": 1, "dbname": "x", "connect_timeout": 1})


def test_stops_only_through_the_guarded_statement_with_its_label(tmp_path):
    cursor = FakeCursor(bounded("0/3000100"))
    assert safety_stop_watchdog.decide(config(tmp_path), cursor) == {
        "outcome": EXPIRED_STOPPED, "stop_lsn": "0/3000100", "archive_wait_cut": False}
    assert cursor.sent == [
        (backup_api.TIMEOUT_SETTING_SQL, None),
        (backup_api.SET_TIMEOUT_SQL, ("%dms" % (backup_api.ENDING_LIMIT * 1000),)),
        (backup_api.GUARDED_STOP_SQL["native"], {"label": "mine", "start_lsn": "0/2000028"}),
        (backup_api.SET_TIMEOUT_SQL, ("0",))]


def test_a_stop_cut_short_in_its_archive_wait_ended_the_backup(tmp_path):
    """The extension's stop waits for the archive after ending the backup: the limit cuts the wait, not the stop."""
    cursor = FakeCursor(bounded(Cancelled("canceling statement due to statement timeout"), None))
    assert safety_stop_watchdog.decide(config(tmp_path), cursor) == {
        "outcome": EXPIRED_STOPPED, "stop_lsn": None, "archive_wait_cut": True}
    assert cursor.sent[-1] == (backup_api.THIS_BACKUP_IN_PROGRESS_SQL, {"label": "mine", "start_lsn": "0/2000028"})


def test_a_stop_cut_short_before_the_backup_ended_is_an_error(tmp_path):
    cursor = FakeCursor(bounded(Cancelled("canceling statement due to statement timeout"), True))
    with pytest.raises(backup_api.StopCutShort) as cut:
        safety_stop_watchdog.decide(config(tmp_path), cursor)
    assert cut.value.ended is False and "had not ended" in str(cut.value)


def test_other_errors_of_the_stop_are_not_taken_for_a_cut(tmp_path):
    with pytest.raises(psycopg2.Error):
        safety_stop_watchdog.decide(config(tmp_path), FakeCursor(bounded(psycopg2.Error("division by zero"))))


def test_reports_another_label_or_nothing(tmp_path):
    assert safety_stop_watchdog.decide(config(tmp_path), FakeCursor(bounded(None, "theirs"))) == {
        "outcome": EXPIRED_OTHER_LABEL, "other_label": "theirs"}
    assert safety_stop_watchdog.decide(config(tmp_path), FakeCursor(bounded(None, None))) == {
        "outcome": EXPIRED_NOT_IN_PROGRESS}


def test_a_normal_stop_recorded_first_wins(tmp_path):
    cursor = FakeCursor([])
    assert safety_stop_watchdog.decide(config(tmp_path, outcome=STOPPED), cursor) is None
    assert cursor.sent == [], "nothing is sent once the record says stopped"


class RecordingConnection:
    """Notes what the record said when the watchdog released the lock."""

    def __init__(self, cfg, answers):
        self.cfg, self.answers, self.at_unlock = cfg, answers, None

    def cursor(self):
        conn = self

        class Cursor(FakeCursor):
            def execute(self, sql, args=None):
                if sql == backup_api.UNLOCK_SQL:
                    conn.at_unlock = read_record(conn.cfg["record_path"])["outcome"]
                super().execute(sql, args)

        self.opened = Cursor(self.answers)
        return self.opened

    def close(self):
        pass


def test_the_outcome_is_recorded_before_the_lock_is_released(tmp_path, monkeypatch):
    cfg = config(tmp_path)
    # Answers in order: the lock, the bounded guarded stop, the unlock.
    conn = RecordingConnection(cfg, [None, *bounded("0/3000100"), None])
    monkeypatch.setattr(safety_stop_watchdog, "connect_retrying", lambda _config: conn)
    safety_stop_watchdog.expire(cfg, {"expired_by": "max_duration"})
    assert conn.at_unlock == EXPIRED_STOPPED, "a stop waiting for the lock must read the outcome"
    assert conn.opened.sent[0] == (backup_api.LOCK_SQL, (backup_api.STOP_LOCK_KEY,))
    assert conn.opened.sent[3][0] == backup_api.GUARDED_STOP_SQL["native"], "the stop is backup_api's guarded statement"
    assert read_record(cfg["record_path"])["stop_lsn"] == "0/3000100"


def test_the_bootstrap_carries_the_sources_and_the_record_path(tmp_path):
    argv = safety_stop_watchdog.watchdog_argv("/state/1/abc.json")
    assert argv[0] == sys.executable and argv[1] == "-c" and argv[3] == "/state/1/abc.json"
    assert "def write_record" in argv[2] and "def decide" in argv[2] and "GUARDED_STOP_SQL = {" in argv[2]
    compile(argv[2], "bootstrap", "exec")


def test_the_bootstrap_carries_every_module_the_carried_sources_import():
    """A module_utils import the bootstrap does not carry fails only in the detached process, at expiry."""
    argv = safety_stop_watchdog.watchdog_argv("/state/1/abc.json")
    carried = ast.literal_eval(argv[2].split("for name, source in ", 1)[1].split(":\n", 1)[0])
    names = [name for name, _source in carried]
    assert names[-1] == safety_stop_watchdog.__name__
    package = names[-1].rsplit(".", 1)[0]
    for position, (name, source) in enumerate(carried):
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(package):
                continue
            # Only the carried modules are registered there, not the package above them.
            assert node.module != package, "%s imports from the package, not from a module" % name
            assert node.module in names[:position], "%s imports %s, not carried before it" % (name, node.module)


def run_outside_the_collection(argv, cfg):
    """argv as spawn runs it, but where nothing of the collection is importable: cwd /, no PYTHONPATH."""
    return subprocess.run(argv, input=json.dumps(cfg).encode("utf-8"), capture_output=True, cwd="/",
                          env={"PATH": os.environ["PATH"]}, timeout=60, check=False)


def test_the_bootstrap_runs_the_carried_modules_where_the_collection_cannot_be_imported(tmp_path):
    """The detached process has only the sources it carries: the packages above them are never registered."""
    outside = run_outside_the_collection([sys.executable, "-c", "import ansible_collections"], {})
    assert b"No module named 'ansible_collections'" in outside.stderr, "the collection must not be importable here"
    cfg = config(tmp_path, lease=1)
    cfg["record"]["expires_epoch"] = time.time() - 1   # already ended: the watchdog acts at once
    done = run_outside_the_collection(safety_stop_watchdog.watchdog_argv(cfg["record_path"]), cfg)
    assert done.returncode == 0 and done.stdout.strip().isdigit(), done.stderr
    pid = int(done.stdout)
    try:
        deadline = time.time() + 20
        while read_record(cfg["record_path"])["outcome"] == RUNNING and time.time() < deadline:
            time.sleep(0.1)
        rec = read_record(cfg["record_path"])
        assert rec["outcome"] == EXPIRED_UNREACHABLE and rec["error"] and rec["watchdog_pid"] == pid, rec
        assert rec["expired_by"] == BY_MAX_DURATION, rec
    finally:
        if is_watchdog_of(pid, cfg["record_path"]):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("left_out", range(len(safety_stop_watchdog._CARRIED)))
def test_a_module_left_out_of_the_carried_ones_fails_the_bootstrap(tmp_path, monkeypatch, left_out):
    """What the previous test proves holds only because every module the watchdog imports is carried."""
    carried = safety_stop_watchdog._CARRIED
    monkeypatch.setattr(safety_stop_watchdog, "_CARRIED", carried[:left_out] + carried[left_out + 1:])
    cfg = config(tmp_path, lease=1)
    failed = run_outside_the_collection(safety_stop_watchdog.watchdog_argv(cfg["record_path"]), cfg)
    assert failed.returncode != 0 and b"ModuleNotFoundError: No module named 'ansible_collections" in failed.stderr, failed
    assert read_record(cfg["record_path"]) == cfg["record"], "no watchdog started"


def test_detached_watchdog_records_an_unreachable_server(tmp_path):
    """The real process: it detaches, writes its PID, outlives its parent, and records what it found."""
    cfg = config(tmp_path, lease=1)
    pid = safety_stop_watchdog.spawn(cfg)
    try:
        assert is_watchdog_of(pid, cfg["record_path"])
        assert os.getsid(pid) != os.getsid(0), "a session of its own"
        assert read_record(cfg["record_path"])["watchdog_pid"] == pid
        deadline = time.time() + 20
        while read_record(cfg["record_path"])["outcome"] == RUNNING and time.time() < deadline:
            time.sleep(0.1)
        rec = read_record(cfg["record_path"])
        assert rec["outcome"] == EXPIRED_UNREACHABLE and rec["error"], rec
    finally:
        if is_watchdog_of(pid, cfg["record_path"]):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_before_expiry_ends_it_without_touching_the_record(tmp_path):
    cfg = config(tmp_path, lease=600)
    pid = safety_stop_watchdog.spawn(cfg)
    try:
        assert safety_stop_watchdog.end(pid, cfg["record_path"])
        deadline = time.time() + 5
        while is_watchdog_of(pid, cfg["record_path"]) and time.time() < deadline:
            time.sleep(0.05)
        assert not is_watchdog_of(pid, cfg["record_path"])
        assert read_record(cfg["record_path"])["outcome"] == RUNNING
        assert not safety_stop_watchdog.end(pid, cfg["record_path"]), "a PID that is no longer the watchdog is left alone"
    finally:
        if is_watchdog_of(pid, cfg["record_path"]):
            os.kill(pid, signal.SIGKILL)


def test_renewals_hold_the_backup_and_their_end_ends_it(tmp_path):
    """heartbeat_timeout 4: touched every second for 8 s the lease holds; untouched it ends 4 s after the last touch."""
    cfg = config(tmp_path, lease=0, heartbeat_timeout=4)
    pid = safety_stop_watchdog.spawn(cfg)
    try:
        for _second in range(8):
            os.utime(lease_path(cfg["record_path"]))
            time.sleep(1)
            assert read_record(cfg["record_path"])["outcome"] == RUNNING, "renewed, the lease holds"
        last = os.stat(lease_path(cfg["record_path"])).st_mtime
        deadline = time.time() + 20
        while read_record(cfg["record_path"])["outcome"] == RUNNING and time.time() < deadline:
            time.sleep(0.05)
        rec = read_record(cfg["record_path"])
        # The server is unreachable here: what counts is when the watchdog acted, and why.
        assert rec["outcome"] == EXPIRED_UNREACHABLE and rec["expired_by"] == "heartbeat", rec
        # Not before the timeout; that it came at all within the 20 s deadline is the outcome above
        # (an upper bound in seconds only measures how loaded the machine is).
        assert 4 <= time.time() - last
        # The outcome is recorded first, then the lease removed (safety_stop/watchdog.py::_finish).
        deadline = time.time() + 5
        while os.path.exists(lease_path(cfg["record_path"])) and time.time() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(lease_path(cfg["record_path"])), "the lease is ended with the outcome"
    finally:
        if is_watchdog_of(pid, cfg["record_path"]):
            os.kill(pid, signal.SIGKILL)
