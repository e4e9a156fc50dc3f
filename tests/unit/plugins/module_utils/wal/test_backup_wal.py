import os

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.wal import backup_wal as w
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


MB16 = 16 * 1024 * 1024


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
