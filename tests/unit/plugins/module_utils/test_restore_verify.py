import os

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import restore_verify as rv
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def tool(tmp_path, rc, output):
    path = tmp_path / "pg_verifybackup"
    path.write_text("#!/bin/sh\necho '%s' \"$@\"\nexit %d\n" % (output, rc))
    path.chmod(0o755)
    return str(path)


def plain_backup(tmp_path):
    backup = tmp_path / "backup"
    (backup / "data").mkdir(parents=True)
    (backup / "backup_manifest").write_text("{}")
    return backup


def test_a_plain_copy_with_a_manifest_is_checked_by_pg_verifybackup(tmp_path):
    backup = plain_backup(tmp_path)
    checked = rv.verify_backup(str(backup), {}, tool(tmp_path, 0, "backup successfully verified"))
    assert checked["method"] == "pg_verifybackup"
    assert checked["command"].endswith("pg_verifybackup -n -m %s/backup_manifest %s/data" % (backup, backup))


def test_pg_verifybackup_failing_refuses_the_backup(tmp_path):
    backup = plain_backup(tmp_path)
    with pytest.raises(BackupError, match="pg_verifybackup found the backup .* damaged: checksum mismatch"):
        rv.verify_backup(str(backup), {}, tool(tmp_path, 1, "checksum mismatch"))


def test_without_tool_or_manifest_the_outputs_must_be_there(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "base.tar.zst").write_text("")
    assert rv.verifybackup_command(str(backup), None) is None
    assert rv.verify_backup(str(backup), {"outputs": ["base.tar.zst"]}, None)["method"] == "file list"
    with pytest.raises(BackupError, match="lacks 16384.tar.zst, which its backup.json lists"):
        rv.verify_backup(str(backup), {"outputs": ["base.tar.zst", "16384.tar.zst"]}, os.devnull)


def versioned_tool(tmp_path, major, rc=0, output="backup successfully verified"):
    """A pg_verifybackup of ``major`` that records its arguments in calls.txt."""
    path = tmp_path / "pg_verifybackup"
    path.write_text("#!/bin/sh\n"
                    "if [ \"$1\" = --version ]; then echo 'pg_verifybackup (PostgreSQL) %d.2'; exit 0; fi\n"
                    "echo \"$@\" >> %s/calls.txt\necho '%s'\nexit %d\n" % (major, tmp_path, output, rc))
    path.chmod(0o755)
    return str(path)


def tar_backup(tmp_path, sizes=None):
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "base.tar.gz").write_bytes(b"b" * 10)
    (backup / "16384.tar.gz").write_bytes(b"t" * 4)
    (backup / "backup_manifest").write_text("{}")
    record = {"outputs": ["base.tar.gz", "16384.tar.gz"], "output_bytes": sizes or {"base.tar.gz": 10, "16384.tar.gz": 4}}
    return backup, record


def test_a_tar_backup_is_checked_by_pg_verifybackup_18_in_tar_format(tmp_path):
    backup, record = tar_backup(tmp_path)
    checked = rv.verify_backup(str(backup), record, versioned_tool(tmp_path, 18))
    assert checked["method"] == "pg_verifybackup"
    assert checked["command"].endswith("-F t -n -i backup.json -m %s/backup_manifest %s" % (backup, backup))
    assert (tmp_path / "calls.txt").read_text().split() == checked["command"].split()[1:]


def test_pg_verifybackup_18_failing_on_a_tar_backup_refuses_it(tmp_path):
    backup, record = tar_backup(tmp_path)
    tool = versioned_tool(tmp_path, 18, 1, 'error: checksum mismatch for file "base/1/112" in archive "base.tar.gz"')
    with pytest.raises(BackupError, match='damaged: .*checksum mismatch for file "base/1/112"'):
        rv.verify_backup(str(backup), record, tool)


@pytest.mark.parametrize("major, why", [(15, "pg_verifybackup 15 reads tar backups from 18 on"),
                                        (None, "no pg_verifybackup at hand")])
def test_without_a_tool_that_reads_tar_the_record_sizes_and_list_are_checked(tmp_path, major, why):
    backup, record = tar_backup(tmp_path)
    checked = rv.verify_backup(str(backup), record, versioned_tool(tmp_path, major) if major else None)
    assert checked == {"method": "file list", "outputs": ["base.tar.gz", "16384.tar.gz"],
                       "sizes_checked": ["16384.tar.gz", "base.tar.gz"], "reason": why}
    assert not (tmp_path / "calls.txt").exists(), "pg_verifybackup 15 is never asked to read tar archives"


def test_a_build_without_the_compression_falls_back_to_the_record(tmp_path):
    backup, record = tar_backup(tmp_path)
    tool = versioned_tool(tmp_path, 18, 1, "pg_verifybackup: error: this build does not support compression with ZSTD")
    checked = rv.verify_backup(str(backup), record, tool)
    assert checked["method"] == "file list" and "does not support compression with ZSTD" in checked["reason"]


def test_a_size_other_than_the_record_says_refuses_the_backup(tmp_path):
    backup, record = tar_backup(tmp_path, {"base.tar.gz": 10, "16384.tar.gz": 5})
    with pytest.raises(BackupError, match="does not match its backup.json: 16384.tar.gz has 4 bytes, not 5"):
        rv.verify_backup(str(backup), record, None)


def test_without_a_manifest_the_reason_says_so(tmp_path):
    backup, record = tar_backup(tmp_path)
    (backup / "backup_manifest").unlink()
    checked = rv.verify_backup(str(backup), record, versioned_tool(tmp_path, 18))
    assert checked["method"] == "file list" and checked["reason"] == "no backup_manifest"


def test_a_pg_verifybackup_that_never_returns_is_stopped_at_the_timeout(tmp_path):
    """PostgreSQL 18's pg_verifybackup loops on a .tar.gz of several gzip members: the restore must not wait forever."""
    backup = plain_backup(tmp_path)
    path = tmp_path / "pg_verifybackup"
    path.write_text("#!/bin/sh\nexec sleep 60\n")
    path.chmod(0o755)
    with pytest.raises(BackupError, match="did not finish checking the backup .* within 1 s") as raised:
        rv.verify_backup(str(backup), {}, str(path), timeout=1)
    assert "restore_verify: false" in raised.value.hint
