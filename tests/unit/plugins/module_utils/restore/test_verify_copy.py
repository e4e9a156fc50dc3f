import io
import tarfile

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import verify_copy as rv
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import write_manifest


def tool(tmp_path, rc, output):
    path = tmp_path / "pg_verifybackup"
    path.write_text("#!/bin/sh\necho '%s' \"$@\"\nexit %d\n" % (output, rc))
    path.chmod(0o755)
    return str(path)


def plain_backup(tmp_path):
    backup = tmp_path / "backup"
    (backup / "data" / "pg_wal").mkdir(parents=True)
    (backup / "data" / "PG_VERSION").write_text("15\n")
    write_manifest(str(backup), 1, "0/2000028", "0/3000100")
    return backup


def test_a_plain_copy_with_a_manifest_is_checked_by_pg_verifybackup(tmp_path):
    backup = plain_backup(tmp_path)
    checked = rv.verify_backup(str(backup), tool(tmp_path, 0, "backup successfully verified"))
    assert checked["method"] == "pg_verifybackup"
    assert checked["command"].endswith("pg_verifybackup -n -m %s/backup_manifest %s/data" % (backup, backup))


def test_pg_verifybackup_failing_refuses_the_backup(tmp_path):
    backup = plain_backup(tmp_path)
    with pytest.raises(BackupError, match="pg_verifybackup found the backup .* damaged: checksum mismatch"):
        rv.verify_backup(str(backup), tool(tmp_path, 1, "checksum mismatch"))


def test_without_pg_verifybackup_the_collection_checks_every_file_against_the_manifest(tmp_path):
    backup = plain_backup(tmp_path)
    checked = rv.verify_backup(str(backup), None)
    assert checked["method"] == "manifest" and checked["reason"] == "no pg_verifybackup at hand" and checked["files"] == 1
    (backup / "data" / "PG_VERSION").write_text("16\n")
    with pytest.raises(BackupError, match="does not match its backup_manifest: PG_VERSION does not have the SHA256"):
        rv.verify_backup(str(backup), None)


def test_without_a_manifest_the_backup_is_refused(tmp_path):
    backup = plain_backup(tmp_path)
    (backup / "backup_manifest").unlink()
    with pytest.raises(BackupError, match="has no backup_manifest") as raised:
        rv.verify_backup(str(backup), tool(tmp_path, 0, "never asked"))
    assert "verify: false" in raised.value.hint


def versioned_tool(tmp_path, major, rc=0, output="backup successfully verified"):
    """A pg_verifybackup of ``major`` that records its arguments in calls.txt."""
    path = tmp_path / "pg_verifybackup"
    path.write_text("#!/bin/sh\n"
                    "if [ \"$1\" = --version ]; then echo 'pg_verifybackup (PostgreSQL) %d.2'; exit 0; fi\n"
                    "echo \"$@\" >> %s/calls.txt\necho '%s'\nexit %d\n" % (major, tmp_path, output, rc))
    path.chmod(0o755)
    return str(path)


def tar_backup(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    with tarfile.open(str(backup / "base.tar"), "w") as tar:
        for name, data in (("PG_VERSION", b"15\n"), ("backup_label", b"START WAL LOCATION: 0/2000028 (file x)\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    write_manifest(str(backup), 1, "0/2000028", "0/3000100")
    return backup


def test_a_tar_backup_is_checked_by_pg_verifybackup_18_in_tar_format(tmp_path):
    backup = tar_backup(tmp_path)
    checked = rv.verify_backup(str(backup), versioned_tool(tmp_path, 18))
    assert checked["method"] == "pg_verifybackup"
    assert checked["command"].endswith("-F t -n -i backup.json -m %s/backup_manifest %s" % (backup, backup))
    assert (tmp_path / "calls.txt").read_text().split() == checked["command"].split()[1:]


def test_pg_verifybackup_18_failing_on_a_tar_backup_refuses_it(tmp_path):
    backup = tar_backup(tmp_path)
    tool = versioned_tool(tmp_path, 18, 1, 'error: checksum mismatch for file "base/1/112" in archive "base.tar.gz"')
    with pytest.raises(BackupError, match='damaged: .*checksum mismatch for file "base/1/112"'):
        rv.verify_backup(str(backup), tool)


@pytest.mark.parametrize("major, why", [(15, "pg_verifybackup 15 reads tar backups from 18 on"),
                                        (None, "no pg_verifybackup at hand")])
def test_without_a_tool_that_reads_tar_the_manifest_is_checked_by_the_collection(tmp_path, major, why):
    backup = tar_backup(tmp_path)
    checked = rv.verify_backup(str(backup), versioned_tool(tmp_path, major) if major else None)
    assert checked["method"] == "manifest" and checked["reason"] == why and checked["files"] == 2, checked
    assert not (tmp_path / "calls.txt").exists(), "pg_verifybackup 15 is never asked to read tar archives"


def test_a_build_without_the_compression_falls_back_to_the_manifest(tmp_path):
    backup = tar_backup(tmp_path)
    tool = versioned_tool(tmp_path, 18, 1, "pg_verifybackup: error: this build does not support compression with ZSTD")
    checked = rv.verify_backup(str(backup), tool)
    assert checked["method"] == "manifest" and "does not support compression with ZSTD" in checked["reason"]


def test_a_pg_verifybackup_that_never_returns_is_stopped_at_the_timeout(tmp_path):
    """PostgreSQL 18's pg_verifybackup loops on a .tar.gz of several gzip members: the restore must not wait forever."""
    backup = plain_backup(tmp_path)
    path = tmp_path / "pg_verifybackup"
    path.write_text("#!/bin/sh\nexec sleep 60\n")
    path.chmod(0o755)
    with pytest.raises(BackupError, match="did not finish checking the backup .* within 1 s") as raised:
        rv.verify_backup(str(backup), str(path), timeout=1)
    assert "restore_verify: false" in raised.value.hint
