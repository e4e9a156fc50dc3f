import json

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_record as r
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

MB16 = 16 * 1024 * 1024


def test_record_drops_unknowns_and_orders_keys():
    rec = r.build_record({"label": "x", "stop_lsn": None, "zeta": 1, "api": "native"}, "failed")
    assert list(rec)[:3] == ["format", "label", "status"] and "stop_lsn" not in rec
    assert rec["status"] == "failed" and list(rec)[-1] == "zeta"
    with pytest.raises(BackupError):
        r.build_record({}, "half")


def test_segments_between_crosses_the_log_id():
    names = r.segments_between("0000000100000000000000FE", "000000010000000100000001", MB16)
    assert names == ["0000000100000000000000FE", "0000000100000000000000FF",
                     "000000010000000100000000", "000000010000000100000001"]
    assert r.segments_between("000000010000000000000002", "000000010000000000000002", MB16) == ["000000010000000000000002"]


def test_segments_between_refuses_nonsense():
    with pytest.raises(BackupError, match="timeline"):
        r.segments_between("000000010000000000000002", "000000020000000000000003", MB16)
    with pytest.raises(BackupError, match="comes before"):
        r.segments_between("000000010000000000000003", "000000010000000000000002", MB16)
    with pytest.raises(BackupError):
        r.segments_between("nope", "000000010000000000000002", MB16)


def test_include_wal_copies_and_names_what_is_missing(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    seg = 1024 * 1024
    for name in ("000000010000000000000002", "000000010000000000000003"):
        (archive / name).write_bytes(b"\0" * seg)
    (archive / "000000010000000000000002.00000028.backup").write_text("h")
    copied = r.include_wal(str(archive), str(tmp_path / "wal"), "000000010000000000000002",
                           "000000010000000000000003", "000000010000000000000002.00000028.backup")
    assert len(copied) == 3 and (tmp_path / "wal" / "000000010000000000000003").exists()
    with pytest.raises(BackupError, match="000000010000000000000004 is not in the archive"):
        r.include_wal(str(archive), str(tmp_path / "wal2"), "000000010000000000000002", "000000010000000000000004")


def test_retention_keeps_newest_complete_and_never_current():
    records = {
        "a": {"status": "complete", "finished_at": "2026-01-01T00:00:00Z"},
        "b": {"status": "complete", "finished_at": "2026-01-02T00:00:00Z"},
        "c": {"status": "failed", "finished_at": "2026-01-03T00:00:00Z"},
        "d": {"status": "complete", "finished_at": "2026-01-04T00:00:00Z"},
        "broken": None,
    }
    assert r.retention_plan(records, 2, "d") == ["a"]
    assert r.retention_plan(records, 1, "d") == ["a", "b"]
    assert r.retention_plan(records, 1, "a") == ["b"]
    assert r.retention_plan(records, 0, "d") == []


def test_scan_and_write(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "not-a-backup").mkdir()
    r.write_record(str(tmp_path / "x"), r.build_record({"label": "x"}, "complete"))
    found = r.scan_backups(str(tmp_path))
    assert list(found) == ["x"] and found["x"]["status"] == "complete"
    assert json.loads((tmp_path / "x" / "backup.json").read_text())["format"] == 1
