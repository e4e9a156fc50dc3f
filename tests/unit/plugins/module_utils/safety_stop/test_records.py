"""safety_stop_records: atomic records in a temporary directory; no server involved."""

import os
import subprocess
import sys
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import (
    RUNNING, STOPPED, WATCHDOG_LOST, describe_record, effective_outcome, is_watchdog_of, list_records,
    read_record, record_path, update_record, write_record)


def test_record_path_is_per_cluster_and_safe_for_any_label(tmp_path):
    evil = record_path(str(tmp_path), "123", "../../etc/passwd; 'x'")
    assert os.path.dirname(evil) == str(tmp_path / "123")
    assert os.path.basename(evil).endswith(".json") and "/" not in os.path.basename(evil)[:-5]
    assert record_path(str(tmp_path), "123", "a") != record_path(str(tmp_path), "456", "a")
    assert record_path(str(tmp_path), "123", "a") == record_path(str(tmp_path), "123", "a")


def test_write_is_atomic_and_private(tmp_path):
    path = record_path(str(tmp_path / "state"), "1", "nightly")
    write_record(path, {"label": "nightly", "outcome": RUNNING})
    assert read_record(path) == {"label": "nightly", "outcome": RUNNING}
    assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0, "the directory is 0700"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    update_record(path, outcome=STOPPED)
    assert read_record(path)["outcome"] == STOPPED
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)], "no temporary file is left"


def test_missing_record_reads_as_none_and_is_not_created_by_update(tmp_path):
    path = str(tmp_path / "1" / "x.json")
    assert read_record(path) is None
    assert update_record(path, outcome=STOPPED) is None
    assert not os.path.exists(path)


def test_list_records_oldest_first_skipping_temporary_files(tmp_path):
    for label, epoch in (("b", 20), ("a", 10)):
        write_record(record_path(str(tmp_path), "1", label), {"label": label, "started_epoch": epoch})
    (tmp_path / "1" / ".tmp-half").write_text("{")
    assert [r["label"] for r in list_records(str(tmp_path), "1")] == ["a", "b"]
    assert list_records(str(tmp_path), "2") == []


def test_running_record_without_its_watchdog_is_lost():
    leased = {"outcome": RUNNING, "lease": 60}
    assert effective_outcome(leased, watchdog_running=True) == RUNNING
    assert effective_outcome(leased, watchdog_running=False) == WATCHDOG_LOST
    assert effective_outcome({"outcome": RUNNING, "lease": None}, False) == RUNNING
    assert effective_outcome({"outcome": STOPPED, "lease": 60}, False) == STOPPED


def test_is_watchdog_of_checks_the_command_line(tmp_path):
    path = str(tmp_path / "r.json")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", path])
    try:
        # Until the child has exec'd, /proc shows the parent's command line.
        deadline = time.monotonic() + 10
        while not is_watchdog_of(proc.pid, path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert is_watchdog_of(proc.pid, path)
        assert not is_watchdog_of(proc.pid, path + ".other")
        assert not is_watchdog_of(os.getpid(), path)
    finally:
        proc.kill()
        proc.wait()


def test_describe_record_names_the_run():
    text = describe_record({"started_at": "2026-11-21T10:00:00Z", "controller_host": "ctl", "job_id": "42",
                            "lease": 60, "expires_at": "2026-11-21T10:01:00Z"})
    assert text == "started 2026-11-21T10:00:00Z by controller ctl (AWX job 42), lease 60 s until 2026-11-21T10:01:00Z"
    assert "no safety stop" in describe_record({"started_at": "t", "lease": None})
