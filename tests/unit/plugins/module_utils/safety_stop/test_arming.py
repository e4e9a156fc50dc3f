"""safety_stop: records and reports without a server."""


import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop import arming as safety_stop
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import (
    EXPIRED_STOPPED, RUNNING, record_path, write_record)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

STARTED = {"label": "nightly", "api": "native", "start_lsn": "0/2000028",
           "start_wal_file": "000000010000000000000002", "start_time": "2026-11-21 10:00:00 UTC"}


def params(**extra):
    base = {"max_duration": 60, "controller_host": "ctl", "job_id": "7", "state_dir": "/nonexistent"}
    base.update(extra)
    return base


def test_new_record_holds_who_when_and_the_lease():
    record = safety_stop.new_record(params(), STARTED, host_now=0)
    assert record["label"] == "nightly" and record["controller_host"] == "ctl" and record["job_id"] == "7"
    assert record["started_at"] == "1970-01-01T00:00:00Z" and record["expires_at"] == "1970-01-01T00:01:00Z"
    assert record["lease"] == 60 and record["expires_epoch"] == 60 and record["outcome"] == RUNNING
    unleased = safety_stop.new_record(params(max_duration=0, job_id=""), STARTED, host_now=0)
    assert unleased["lease"] is None and unleased["expires_at"] is None and unleased["job_id"] is None


def test_state_dir_problem_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BackupError, match="safety stop needs a state record") as exc:
        safety_stop.require_state_dir(str(blocker), "1", 60)
    assert "state_dir" in exc.value.hint
    assert safety_stop.require_state_dir(str(blocker), "1", 0)[0].startswith("No state record")
    assert safety_stop.require_state_dir(str(tmp_path / "new"), "1", 60) == []


def test_report_marks_a_running_record_without_watchdog_as_lost(tmp_path):
    record = dict(safety_stop.new_record(params(), STARTED), watchdog_pid=2 ** 22 + 1)
    path = record_path(str(tmp_path), "1", "nightly")
    write_record(path, record)
    item = safety_stop.all_reports(str(tmp_path), "1")[0]
    assert item["watchdog_running"] is False and item["effective_outcome"] == "watchdog-lost"
    assert "pg_stop_backup label: nightly" in item["what_to_do"]


def test_disarm_marks_stopped_only_a_running_record(tmp_path):
    path = record_path(str(tmp_path), "1", "nightly")
    write_record(path, dict(safety_stop.new_record(params(max_duration=0), STARTED)))
    assert safety_stop.disarm(path, {"outcome": EXPIRED_STOPPED}, "0/3") is False
    safety_stop.disarm(path, {"outcome": RUNNING, "watchdog_pid": None}, "0/3000100")
    assert safety_stop.all_reports(str(tmp_path), "1")[0]["outcome"] == "stopped"


def test_safety_stopped_backup_fails_its_stop():
    with pytest.raises(BackupError, match="already stopped by its safety stop") as exc:
        safety_stop.refuse_safety_stopped({"label": "nightly", "lease": 5, "expires_at": "t", "stop_lsn": "0/5"})
    assert exc.value.facts["safety_stopped"] and exc.value.facts["stop_lsn"] == "0/5"
