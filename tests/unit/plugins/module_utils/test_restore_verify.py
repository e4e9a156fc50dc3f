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
