import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import restore
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.restore.backup_on_disk import RECORD


def test_wal_needed_and_missing(tmp_path):
    rec = {"start_wal_file": "000000010000000000000002", "start_lsn": "0/2000028",
           "stop_wal_file": "000000010000000000000004"}
    needed = restore.wal_needed(rec)
    assert needed == ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / needed[0]).write_text("")
    (tmp_path / "b" / needed[2]).write_text("")
    assert restore.missing_wal(needed, [str(tmp_path / "a"), None, str(tmp_path / "b")]) == needed[1]
    assert restore.wal_needed({}) == []


def test_wal_in_the_backup_is_found_before_anything_is_laid_out(tmp_path):
    (tmp_path / "data" / "pg_wal").mkdir(parents=True)
    (tmp_path / "data" / "pg_wal" / "000000010000000000000003").write_text("")
    rec = {"wal_included": ["000000010000000000000002"]}
    assert restore.wal_in_backup(str(tmp_path), rec) == {"000000010000000000000002", "000000010000000000000003"}
    assert restore.wal_in_backup(str(tmp_path / "tar-backup"), {}) == set()
    needed = ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004"]
    assert restore.missing_wal(needed, [None], restore.wal_in_backup(str(tmp_path), rec)) == needed[2]


def test_check_wal_at_hand(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "000000010000000000000002").write_text("")
    with pytest.raises(BackupError, match="The WAL segment 000000010000000000000003, which the backup needs") as exc:
        restore.check_wal_at_hand({"wal_archive_dir": str(archive)}, str(tmp_path / "b"), RECORD)
    assert exc.value.facts == {"missing_wal": "000000010000000000000003"}
    assert "Nothing was restored." in exc.value.msg
    (archive / "000000010000000000000003").write_text("")
    restore.check_wal_at_hand({"wal_archive_dir": str(archive)}, str(tmp_path / "b"), RECORD)
    # A custom restore_command fetches from where only it knows.
    restore.check_wal_at_hand({"restore_command": "fetch %f %p"}, str(tmp_path / "b"), RECORD)
