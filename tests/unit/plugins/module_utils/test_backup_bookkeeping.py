import json
import os

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_record as r
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal import backup_wal as w
from ansible_collections.pgexclusive.backup.plugins.module_utils import retention as rt
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

MB16 = 16 * 1024 * 1024
RESTORABLE = {"label": "x", "start_lsn": "0/2000028", "stop_lsn": "0/3000100",
              "stop_wal_file": "000000010000000000000003", "archived": True}


def test_record_drops_unknowns_and_orders_keys():
    rec = r.build_record({"label": "x", "stop_lsn": None, "zeta": 1, "api": "native"}, "failed")
    assert list(rec)[:3] == ["format", "label", "status"] and "stop_lsn" not in rec
    assert rec["status"] == "failed" and list(rec)[-1] == "zeta"
    with pytest.raises(BackupError):
        r.build_record({}, "half")


def test_segments_between_crosses_the_log_id():
    names = w.segments_between("0000000100000000000000FE", "000000010000000100000001", MB16)
    assert names == ["0000000100000000000000FE", "0000000100000000000000FF",
                     "000000010000000100000000", "000000010000000100000001"]
    assert w.segments_between("000000010000000000000002", "000000010000000000000002", MB16) == ["000000010000000000000002"]


def test_segments_between_refuses_nonsense():
    with pytest.raises(BackupError, match="timeline"):
        w.segments_between("000000010000000000000002", "000000020000000000000003", MB16)
    with pytest.raises(BackupError, match="comes before"):
        w.segments_between("000000010000000000000003", "000000010000000000000002", MB16)
    with pytest.raises(BackupError):
        w.segments_between("nope", "000000010000000000000002", MB16)


def test_complete_needs_facts_that_show_a_restorable_backup():
    assert r.build_record(RESTORABLE, "complete")["status"] == "complete"
    assert r.build_record(dict(RESTORABLE, archived=False, wal_included=["000000010000000000000003"]),
                          "complete")["status"] == "complete"
    rec = r.build_record(dict(RESTORABLE, stop_lsn=None, archived=False), "complete")
    assert rec["status"] == "failed"
    assert rec["error"].startswith("no stop LSN: this run's stop did not end this backup; WAL neither archived")
    assert r.incomplete_because(dict(RESTORABLE, archived=False, wal_included=[])).startswith("WAL neither")
    assert "error" not in r.build_record({"label": "x"}, "failed"), "a failed record keeps the caller's error"


def test_include_wal_copies_and_names_what_is_missing(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    seg = 1024 * 1024
    for name in ("000000010000000000000002", "000000010000000000000003"):
        (archive / name).write_bytes(b"\0" * seg)
    (archive / "000000010000000000000002.00000028.backup").write_text("h")
    backup = tmp_path / "backup"
    backup.mkdir()
    copied = w.include_wal(str(archive), str(backup), str(backup / "wal"), "000000010000000000000002",
                           "000000010000000000000003", "000000010000000000000002.00000028.backup")
    assert len(copied) == 3 and (backup / "wal" / "000000010000000000000003").exists()
    with pytest.raises(BackupError, match="000000010000000000000004 is not in the archive"):
        w.include_wal(str(archive), str(backup), str(backup / "wal2"), "000000010000000000000002",
                      "000000010000000000000004")
    assert not (backup / "wal2").exists(), "a missing segment is found before anything is written"
    with pytest.raises(BackupError, match="not inside the backup directory"):
        w.include_wal(str(archive), str(backup), str(tmp_path / "elsewhere"), "000000010000000000000002",
                      "000000010000000000000003")
    with pytest.raises(BackupError, match="never replaces a file"):
        w.include_wal(str(archive), str(backup), str(backup / "wal"), "000000010000000000000002",
                      "000000010000000000000003")


def test_open_inside_refuses_a_link_at_any_depth(tmp_path):
    live = tmp_path / "live"
    (live / "pg_wal").mkdir(parents=True)
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "data").symlink_to(live)
    with pytest.raises(BackupError, match="data is a symbolic link"):
        w.open_inside(str(backup), str(backup / "data" / "pg_wal"))
    assert os.listdir(live / "pg_wal") == []


CLUSTER = {"system_identifier": "111", "data_directory": None, "host": None}


def test_retention_keeps_newest_complete_and_never_current():
    records = {
        "a": {"status": "complete", "start_lsn": "0/2000028", "system_identifier": "111"},
        "b": {"status": "complete", "start_lsn": "0/5000028", "system_identifier": 111},
        "c": {"status": "failed", "start_lsn": "0/7000028", "system_identifier": "111"},
        "d": {"status": "complete", "start_lsn": "1/1000028", "system_identifier": "111"},
        "broken": None,
    }
    assert rt.retention_plan(records, 2, "d", CLUSTER)["removed"] == ["a"]
    assert rt.retention_plan(records, 1, "d", CLUSTER)["removed"] == ["a", "b"]
    assert rt.retention_plan(records, 1, "a", CLUSTER)["removed"] == ["b"]
    plan = rt.retention_plan(records, 0, "d", CLUSTER)
    assert plan["removed"] == [] and plan["kept"] == ["a", "b", "d"] and plan["failed_backups"] == ["broken", "c"]
    with pytest.raises(BackupError, match="keep is -1"):
        rt.retention_plan(records, -1, "d", CLUSTER)


def test_retention_orders_by_start_lsn_not_by_date_and_never_counts_a_record_its_copy_disagrees_with():
    records = {
        "real-old": {"status": "complete", "start_lsn": "0/2000028", "finished_at": "2026-01-01T00:00:00Z",
                     "system_identifier": "111"},
        "real-new": {"status": "complete", "start_lsn": "0/9000028", "finished_at": "2026-01-02T00:00:00Z",
                     "system_identifier": "111"},
        "planted": {"status": "complete", "start_lsn": "0/3000028", "finished_at": "2099-01-01T00:00:00Z",
                    "system_identifier": "111"},
        "forged-lsn": {"status": "complete", "start_lsn": "F/0", "system_identifier": "111"},
    }
    plan = rt.retention_plan(records, 1, "real-new", CLUSTER)
    assert plan["kept"] == ["forged-lsn", "real-new"], "unproved, a record claiming a later start would be kept"
    plan = rt.retention_plan(records, 1, "x", CLUSTER, lambda label: "no label" if label.startswith(("p", "f")) else None)
    assert plan["kept"] == ["real-new"] and plan["removed"] == ["real-old"]
    assert plan["unproved"] == ["forged-lsn", "planted"], "left alone, neither counted nor removed"


def test_same_cluster():
    record = {"system_identifier": "111", "data_directory": "/pg/a", "host": "db1"}
    assert rt.same_cluster(record, {"system_identifier": "111"})
    assert rt.same_cluster(record, {"system_identifier": "111", "data_directory": "/pg/a/", "host": "db1"})
    assert not rt.same_cluster(record, {"system_identifier": "222"})
    assert not rt.same_cluster(record, {"system_identifier": "111", "data_directory": "/pg/b"})
    assert not rt.same_cluster(record, {"system_identifier": "111", "host": "db2"})
    assert not rt.same_cluster({"status": "complete"}, {"system_identifier": "111"})


def test_a_failed_removal_is_an_error_and_leaves_no_complete_record(tmp_path, monkeypatch):
    for label, start in (("old", "0/2000028"), ("new", "0/4000028")):
        (tmp_path / label / "data").mkdir(parents=True)
        (tmp_path / label / "data" / "backup_label").write_text(
            "START WAL LOCATION: %s (file 00000001000000000000000%s)\n" % (start, start[2]))
        r.write_record(str(tmp_path / label), r.build_record(dict(RESTORABLE, label=label, start_lsn=start,
                                                                  system_identifier="111"), "complete"))

    def busy(path):
        raise OSError(16, "Device or resource busy", path)
    monkeypatch.setattr(rt.shutil, "rmtree", busy)
    params = dict(dest=str(tmp_path), keep=1, current="new", system_identifier="111", data_directory=None, host=None)
    with pytest.raises(BackupError, match="Retention could not remove the backup .*old: .*busy") as exc:
        rt.apply_retention(params, False)
    assert exc.value.facts["removed"] == []
    assert not (tmp_path / "old" / "backup.json").exists(), "a half-removed backup must not claim to be complete"
    assert r.read_record(str(tmp_path / "new"))["status"] == "complete"


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
        ORDER, SCHEMA, facts_from_results)
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


def test_retention_never_counts_a_tar_copy_claiming_a_start_after_the_backup_just_taken_nor_reads_its_archives(tmp_path):
    cluster = dict(CLUSTER, system_identifier="111")
    for label, lsn in (("real-old", "0/2000028"), ("real-new", "0/9000028"), ("forged-later", "F/28")):
        (tmp_path / label).mkdir()
        # Not a tar at all: retention must not read a tar copy's archives (its backup_label is their last member).
        (tmp_path / label / "base.tar.zst").write_bytes(b"not an archive")
        r.write_record(str(tmp_path / label), {"label": label, "status": "complete", "start_lsn": lsn,
                                               "system_identifier": "111"})
    params = dict(cluster, dest=str(tmp_path), keep=1, current="real-new")
    plan = rt.apply_retention(params, True)
    assert plan["unproved"] == ["forged-later"] and plan["kept"] == ["real-new"] and plan["removed"] == ["real-old"], plan
