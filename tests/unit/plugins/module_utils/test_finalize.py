"""The pure parts of the finalize phase, and its failure bookkeeping on real files."""

import json
import os

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import finalize as f
from ansible_collections.pgexclusive.backup.plugins.module_utils import retention
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import record_part
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

SEGMENT = 1024 * 1024
RESULTS = {
    "run": {"label": "L2", "host": "db1", "method": "rsync", "compression": "none", "data_directory": "/pg"},
    "start": {"start_lsn": "0/2000028", "start_wal_file": "000000010000000000000002", "timeline": 1,
              "api": "extension"},
    "copy": {"system_identifier": "7", "data_directory": "/pg"},
    "stop": {"stop_lsn": "0/3000100", "stop_wal_file": "000000010000000000000003", "archived": True},
}


def finalize_params(backup_dir, **changes):
    params = dict((name, spec.get("default")) for name, spec in f.finalize_argument_spec().items())
    params.update(backup_dir=str(backup_dir), results=RESULTS)
    params.update(changes)
    return params


def older_complete_backup(dest):
    """An earlier complete backup L1 of the cluster RESULTS describe, under ``dest``."""
    older = dest / "L1"
    (older / "data").mkdir(parents=True)
    # Its copy's own label agrees with its record: retention counts only such backups.
    (older / "data" / "backup_label").write_text("START WAL LOCATION: 0/1000028 (file 000000010000000000000001)\n")
    (older / "backup.json").write_text(json.dumps(dict(status="complete", system_identifier="7", host="db1",
                                                       data_directory="/pg", start_lsn="0/1000028")))
    return older


def test_finalize_refuses_options_that_cannot_work(tmp_path):
    with pytest.raises(BackupError, match="include_wal needs wal_archive_dir"):
        f.finalize(finalize_params(tmp_path, include_wal=True), False)
    with pytest.raises(BackupError, match="retention needs dest"):
        f.finalize(finalize_params(tmp_path, retention=2), False)
    assert not os.listdir(tmp_path), "nothing is written for options that cannot work"


def test_a_failed_step_leaves_a_failed_record_naming_it(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "000000010000000000000002").write_bytes(b"\0" * SEGMENT)
    backup = tmp_path / "backups" / "L2"
    (backup / "data").mkdir(parents=True)
    with pytest.raises(BackupError) as failure:
        f.finalize(finalize_params(backup, include_wal=True, wal_archive_dir=str(archive)), False)
    facts = failure.value.facts
    assert facts["complete"] is False and facts["step"] == "wal" and facts["record_written"] is True
    assert "its wal step failed: WAL file 000000010000000000000003 is not in the archive" in failure.value.msg
    record = json.loads((backup / "backup.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("wal: WAL file 000000010000000000000003")
    assert record["stop_lsn"] == "0/3000100", "the failed record keeps what is known"


def test_a_complete_backup_with_included_wal_and_retention(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in ("000000010000000000000002", "000000010000000000000003"):
        (archive / name).write_bytes(b"\0" * SEGMENT)
    dest = tmp_path / "backups"
    older = older_complete_backup(dest)
    backup = dest / "L2"
    (backup / "data").mkdir(parents=True)
    (backup / "data" / "backup_label").write_text("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n")
    done = f.finalize(finalize_params(backup, include_wal=True, wal_archive_dir=str(archive), dest=str(dest),
                                      retention=1), False)
    assert done["complete"] and done["record"]["status"] == "complete"
    assert done["wal_files"] == ["000000010000000000000002", "000000010000000000000003"]
    assert done["record"]["wal_included"] == done["wal_files"]
    assert done["removed"] == ["L1"] and not older.exists()
    assert sorted(done["durations"]) == ["record", "retention", "wal"]


def test_a_failed_retention_says_the_backup_is_complete(tmp_path, monkeypatch):
    dest = tmp_path / "backups"
    older = older_complete_backup(dest)
    backup = dest / "L2"
    (backup / "data").mkdir(parents=True)
    (backup / "data" / "backup_label").write_text("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n")

    def busy(path):
        raise OSError(16, "Device or resource busy", path)
    monkeypatch.setattr(retention.shutil, "rmtree", busy)
    with pytest.raises(BackupError) as failure:
        f.finalize(finalize_params(backup, dest=str(dest), retention=1), False)
    assert failure.value.facts["complete"] is True and failure.value.facts["record_written"] is True
    assert failure.value.msg.startswith("The backup in %s is complete, but retention failed" % backup)
    assert json.loads((backup / "backup.json").read_text())["status"] == "complete"
    assert not (older / "backup.json").exists(), "a half-removed backup no longer claims to be complete"


def test_check_mode_writes_nothing(tmp_path):
    backup = tmp_path / "L2"
    backup.mkdir()
    done = f.finalize(finalize_params(backup), True)
    assert done["record"]["status"] == "complete" and not done["changed"]
    assert os.listdir(backup) == []


def test_the_restore_check_starts_the_history_of_checks_in_the_record(tmp_path, monkeypatch):
    """The drill runs before backup.json is written: it gets the record's facts, and its result goes into it."""
    seen = []
    entry = {"time": "2026-11-21T10:00:00Z", "ok": True, "check_ran": True, "duration": 3.0,
             "checks": [{"name": "rows", "ok": True, "returned": "1000"}]}

    def drill(params, check_mode):
        seen.append(params)
        return {"ok": True, "check_ran": True, "duration": 3.0, "server_version": "15.1", "history_entry": entry}
    monkeypatch.setattr(f, "verify_restore_task", drill)
    monkeypatch.setattr(f.connection, "psycopg2", object())
    checks = [{"name": "rows", "sql": "SELECT count(*) FROM t", "expect": 1000, "db": "postgres"}]
    backup = tmp_path / "backups" / "L2"
    (backup / "data").mkdir(parents=True)
    done = f.finalize(finalize_params(backup, verify_restore=True, verify_restore_checks=checks), False)
    assert seen[0]["checks"] == checks and seen[0]["record"]["stop_wal_file"] == "000000010000000000000003"
    assert done["record"]["checks"] == [entry] and done["record"]["status"] == "complete"
    assert done["record"]["verify_restore"]["ok"] is True

    failed_entry = dict(entry, ok=False, error="The restored copy failed the check 'rows'")

    def failing(params, check_mode):
        raise BackupError("The restored copy failed the check 'rows'", "hint", check_ran=True,
                          history_entry=failed_entry)
    monkeypatch.setattr(f, "verify_restore_task", failing)
    other = tmp_path / "backups" / "L3"
    (other / "data").mkdir(parents=True)
    with pytest.raises(BackupError) as failure:
        f.finalize(finalize_params(other, verify_restore=True, verify_restore_checks=checks), False)
    assert failure.value.facts["step"] == "verify_restore"
    record = json.loads((other / "backup.json").read_text())
    assert record["status"] == "failed" and record["checks"] == [failed_entry]


def test_finalize_takes_the_parts_the_phases_returned_and_adds_its_own(tmp_path):
    """The old results and the phases' parts give one record; the WAL step's part adds wal_included."""
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in ("000000010000000000000002", "000000010000000000000003"):
        (archive / name).write_bytes(b"\0" * SEGMENT)
    parts = [{"phase": "run", "facts": RESULTS["run"]}] + [
        record_part(phase, RESULTS[phase], partial=True) for phase in ("start", "copy", "stop")]
    records = []
    for label, given in (("by-parts", dict(parts=parts, results={})), ("by-results", {})):
        backup = tmp_path / label
        (backup / "data").mkdir(parents=True)
        done = f.finalize(finalize_params(backup, include_wal=True, wal_archive_dir=str(archive), **given), False)
        records.append(dict(done["record"], finished_at=None))
    assert records[0] == records[1] and records[0]["wal_included"][-1] == "000000010000000000000003"
    with pytest.raises(BackupError, match="Finalize needs the parts"):
        f.finalize(finalize_params(tmp_path, results={}), False)
