import json
import os

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_record as r
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.restorable_record import RESTORABLE


def test_record_drops_unknowns_and_orders_keys():
    rec = r.build_record({"label": "x", "stop_lsn": None, "zeta": 1, "api": "native"}, "failed")
    assert list(rec)[:3] == ["format", "label", "status"] and "stop_lsn" not in rec
    assert rec["status"] == "failed" and list(rec)[-1] == "zeta"
    with pytest.raises(BackupError):
        r.build_record({}, "half")


def test_complete_needs_facts_that_show_a_restorable_backup():
    assert r.build_record(RESTORABLE, "complete")["status"] == "complete"
    assert r.build_record(dict(RESTORABLE, archived=False, wal_included=["000000010000000000000003"]),
                          "complete")["status"] == "complete"
    rec = r.build_record(dict(RESTORABLE, stop_lsn=None, archived=False), "complete")
    assert rec["status"] == "failed"
    assert rec["error"].startswith("no stop LSN: this run's stop did not end this backup; WAL neither archived")
    assert r.incomplete_because(dict(RESTORABLE, archived=False, wal_included=[])).startswith("WAL neither")
    assert "error" not in r.build_record({"label": "x"}, "failed"), "a failed record keeps the caller's error"


def test_a_complete_record_comes_after_the_fsync_of_everything_else(tmp_path, monkeypatch):
    backup = tmp_path / "x"
    backup.mkdir()
    (backup / "base.tar").write_bytes(b"x")
    events = []
    monkeypatch.setattr(r, "fsync_tree", lambda path: events.append(("fsync_tree", path, os.listdir(path))))
    real_write = r.write_record
    monkeypatch.setattr(r, "write_record", lambda path, rec: events.append(("record", rec["status"])) or
                        real_write(path, rec))
    params = dict(backup_dir=str(backup), status="complete", facts=RESTORABLE, manifest=False)
    result = r.record_backup(params, False)
    assert result["record"]["status"] == "complete"
    assert events == [("fsync_tree", str(backup), ["base.tar"]), ("record", "complete")]


def test_a_failed_fsync_makes_the_record_failed(tmp_path, monkeypatch):
    backup = tmp_path / "x"
    backup.mkdir()

    def broken(path):
        raise OSError(5, "Input/output error", path)
    monkeypatch.setattr(r, "fsync_tree", broken)
    params = dict(backup_dir=str(backup), status="complete", facts=RESTORABLE, manifest=False)
    with pytest.raises(BackupError, match="could not be made durable"):
        r.record_backup(params, False)
    saved = r.read_record(str(backup))
    assert saved["status"] == "failed" and "Input/output error" in saved["error"]


def test_check_mode_writes_nothing(tmp_path):
    params = dict(backup_dir=str(tmp_path / "x"), status="failed", facts={"label": "x", "start_lsn": "0/1"},
                  manifest=False)
    assert r.record_backup(params, True)["record"]["status"] == "failed"
    assert not (tmp_path / "x").exists()


def test_scan_and_write(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "not-a-backup").mkdir()
    r.write_record(str(tmp_path / "x"), r.build_record(RESTORABLE, "complete"))
    found = r.scan_backups(str(tmp_path))
    assert list(found) == ["x"] and found["x"]["status"] == "complete"
    assert json.loads((tmp_path / "x" / "backup.json").read_text())["format"] == 1


def test_the_record_is_picked_from_the_task_results_by_the_schema():
    from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import (
        ORDER, SCHEMA, assemble, parts_from_results, recorded)

    def facts_from_results(results):
        return recorded(assemble(parts_from_results(results)))
    results = {
        "run": {"label": "L", "host": "db1", "method": "tar", "compression": "zstd", "data_directory": "/fallback"},
        "info": {"server_version": "15.4", "api": "extension"},
        "start": {"api": "extension", "start_lsn": "0/2000028", "timeline": 1, "queries": ["SELECT 1"]},
        "copy": {"duration": 3.5, "data_directory": "/var/lib/pg", "system_identifier": "7", "repository": None},
        "stop": {"skipped": True, "changed": False},
        "wal": None,
        "verify": {"ok": True, "duration": 1.2},
    }
    facts = facts_from_results(results)
    assert facts == {"label": "L", "host": "db1", "method": "tar", "compression": "zstd", "data_directory": "/var/lib/pg",
                     "system_identifier": "7", "server_version": "15.4", "api": "extension", "timeline": 1,
                     "start_lsn": "0/2000028", "copy_duration": 3.5, "verify_restore": {"ok": True, "duration": 1.2}}
    # A copy that never ran: the run's own data directory; a start that failed early: the API pg_backup_info saw.
    fallback = facts_from_results(dict(results, copy={"skipped": True}, start={"failed": True, "msg": "x"}))
    assert fallback["data_directory"] == "/fallback" and fallback["api"] == "extension"
    assert "stop_lsn" not in facts, "a skipped stop gives nothing"
    assert [field for field, _sources in SCHEMA if field not in ORDER] == []


# -- the history of drills -----------------------------------------------------

def test_the_history_entry_keeps_what_the_drill_found():
    checks = [{"name": "count", "ok": False, "returned": "999"},
              {"name": "x", "ok": False, "returned": None, "error": "boom"}]
    entry = r.check_entry("2026-11-21T10:00:00Z", False, 12.5, checks, "The restored copy failed")
    assert entry == {"time": "2026-11-21T10:00:00Z", "ok": False, "check_ran": True, "duration": 12.5,
                     "checks": checks, "error": "The restored copy failed"}
    assert "error" not in r.check_entry("t", True, 1.0)


def test_append_check_adds_an_entry_and_changes_nothing_else(tmp_path):
    backup_dir = tmp_path / "b"
    backup_dir.mkdir()
    before = {"format": 1, "label": "b", "status": "complete", "data_directory": "/pg"}
    (backup_dir / "backup.json").write_text(json.dumps(before))
    r.append_check(str(backup_dir), {"ok": True})
    r.append_check(str(backup_dir), {"ok": False})
    after = json.loads((backup_dir / "backup.json").read_text())
    assert after.pop("checks") == [{"ok": True}, {"ok": False}]
    assert after == before


# -- the parts each phase returns ------------------------------------------------

RUN = {"label": "L", "host": "db1", "method": "tar", "compression": "zstd", "data_directory": "/fallback"}
START = {"api": "extension", "start_lsn": "0/2000028", "start_wal_file": "000000010000000000000002",
         "checkpoint_lsn": "0/2000060", "timeline": 1, "start_time": "2026-12-07 10:00:00+00", "queries": []}
COPY = {"system_identifier": "7", "data_directory": "/var/lib/pg", "repository": None, "duration": 3.5,
        "bytes": 100, "outputs": [], "output_bytes": 50, "tablespaces": [], "label_fixed": True,
        "restore_hint": None, "commands": []}
STOP = {"stop_lsn": "0/3000100", "stop_wal_file": "000000010000000000000003",
        "backup_history_file": "000000010000000000000002.00000028.backup", "archived": True, "duration": 9}


def run_part(**changes):
    return {"phase": "run", "facts": dict(RUN, **changes)}


def test_a_part_holds_every_field_its_phase_owns_and_nothing_else():
    part = r.record_part("copy", COPY)
    assert part["phase"] == "copy"
    assert sorted(part["facts"]) == sorted(field for field, owners in r.SCHEMA for phase, _key in owners
                                           if phase == "copy")
    assert part["facts"]["repository"] is None and part["facts"]["copy_duration"] == 3.5
    assert "commands" not in part["facts"]
    assert r.record_part("info", {"server_version": "15.4", "api": "extension", "config_settings": {}})["facts"] == {
        "server_version": "15.4", "api": "extension", "config_settings": {}}


def test_a_renamed_return_key_is_an_error_naming_it():
    renamed = dict(COPY, size=COPY["bytes"])
    del renamed["bytes"]
    with pytest.raises(BackupError, match="The copy phase's result has no bytes, which backup.json's bytes"):
        r.record_part("copy", renamed)
    with pytest.raises(BackupError, match="is not a phase"):
        r.record_part("copied", COPY)
    # A failed phase (or check mode) holds what it learned, None for the rest.
    assert r.record_part("copy", {"data_directory": "/pg"}, partial=True)["facts"]["bytes"] is None


def test_assemble_takes_each_field_from_its_first_owner_with_a_value():
    parts = [run_part(), r.record_part("start", START), r.record_part("copy", COPY), r.record_part("stop", STOP),
             r.record_part("info", {"server_version": "15.4", "api": "none", "config_settings": None})]
    facts = r.assemble(parts)
    assert facts["data_directory"] == "/var/lib/pg" and facts["api"] == "extension"
    assert "repository" not in facts, "None is no value"
    assert r.build_record(facts, "complete")["status"] == "complete"
    # Without a copy the run's own data directory; without a start the API the preflight saw.
    fallback = r.assemble([run_part(), r.record_part("info", {"server_version": "15.4", "api": "native",
                                                              "config_settings": None})])
    assert fallback["data_directory"] == "/fallback" and fallback["api"] == "native"


def test_assemble_refuses_parts_that_are_not_whole():
    with pytest.raises(BackupError, match="The run part of backup.json lacks data_directory"):
        r.assemble([{"phase": "run", "facts": dict((k, v) for k, v in RUN.items() if k != "data_directory")}])
    with pytest.raises(BackupError, match="has fields its phase does not own: size"):
        r.assemble([run_part(size=1)])
    with pytest.raises(BackupError, match="Two parts of backup.json are of the run phase"):
        r.assemble([run_part(), run_part()])
    with pytest.raises(BackupError, match="is not a part of backup.json"):
        r.assemble([{"phase": "later", "facts": {}}])


def test_parts_give_the_record_the_old_results_gave(tmp_path):
    results = {"run": RUN, "start": START, "copy": COPY, "stop": STOP}
    parts = [run_part()] + [r.record_part(phase, results[phase]) for phase in ("start", "copy", "stop")]
    params = dict(backup_dir=str(tmp_path / "L"), status="complete", facts={"finished_at": "t"}, manifest=False)
    by_parts = r.record_backup(dict(params, parts=parts, results={}), True)["record"]
    by_results = r.record_backup(dict(params, parts=[], results=results), True)["record"]
    assert json.dumps(by_parts) == json.dumps(by_results) and by_parts["status"] == "complete"
    assert list(by_parts) == [key for key in r.ORDER if key in by_parts]
    with pytest.raises(BackupError, match="Both parts and results"):
        r.record_backup(dict(params, parts=parts, results=results), True)


def test_a_failed_runs_partial_parts_give_a_failed_record_saying_what_is_missing(tmp_path):
    """The stop failed before it ended the backup: its part holds nothing, and the copy never ran."""
    parts = [run_part(), r.record_part("start", START), r.record_part("stop", {"label": "L"}, partial=True)]
    written = r.record_backup(dict(backup_dir=str(tmp_path / "L"), status="complete", parts=parts, results={},
                                   facts={}, manifest=False), True)
    record = written["record"]
    assert record["status"] == "failed" and record["start_lsn"] == "0/2000028" and "bytes" not in record
    assert record["error"].startswith("no stop LSN: this run's stop did not end this backup; no stop WAL file")
