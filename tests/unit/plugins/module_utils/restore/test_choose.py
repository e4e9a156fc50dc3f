import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import restore
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.restore.backup_on_disk import write


def record(sysid, status="complete", finished="2026-11-21T10:00:00Z"):
    return {"status": status, "system_identifier": sysid, "finished_at": finished}


def test_latest_complete_of_one_cluster():
    records = {"a": record("1", finished="2026-11-21T10:00:00Z"), "b": record("1", finished="2026-11-22T10:00:00Z"),
               "c": record("1", "failed", "2026-11-23T10:00:00Z"), "d": record("2", finished="2026-11-24T10:00:00Z"),
               "e": None}
    assert restore.latest_complete(records, "1") == "b"
    assert restore.latest_complete(records, "2") == "d"
    with pytest.raises(BackupError, match="complete backups of 2 clusters"):
        restore.latest_complete(records)
    with pytest.raises(BackupError, match="no complete backup of the cluster with system identifier 3"):
        restore.latest_complete(records, "3")


def test_choose_backup_refuses_an_incomplete_one_unless_allowed(tmp_path):
    write(tmp_path / "dest" / "old", dict(record("7"), label="old"))
    write(tmp_path / "dest" / "broken", dict(record("7", "failed", "2026-12-01T00:00:00Z"), error="copy failed"))
    path, rec = restore.choose_backup(dest=str(tmp_path / "dest"))
    assert path.endswith("/old") and rec["label"] == "old"
    with pytest.raises(BackupError, match=r"is not complete \(status failed: copy failed\)"):
        restore.choose_backup(str(tmp_path / "dest" / "broken"))
    assert restore.choose_backup(str(tmp_path / "dest" / "broken"), allow_incomplete=True)[1]["status"] == "failed"
    with pytest.raises(BackupError, match="is of the cluster 7, not 8"):
        restore.choose_backup(str(tmp_path / "dest" / "old"), system_identifier="8")
    with pytest.raises(BackupError, match="either backup_dir or dest"):
        restore.choose_backup()
    with pytest.raises(BackupError, match="holds no readable backup.json"):
        restore.choose_backup(str(tmp_path))
