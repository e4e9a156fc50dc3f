import os

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import restore
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import check_targets as targets
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def test_check_target_dir_decides_and_set_aside_renames(tmp_path):
    assert restore.check_target_dir(str(tmp_path / "new"), False) is False
    empty = tmp_path / "empty"
    empty.mkdir()
    assert restore.check_target_dir(str(empty), False) is False
    full = tmp_path / "full"
    full.mkdir()
    (full / "f").write_text("x")
    with pytest.raises(BackupError, match="is not empty"):
        restore.check_target_dir(str(full), False)
    assert restore.check_target_dir(str(full), True) is True
    assert (full / "f").read_text() == "x", "checking changes nothing"
    assert targets.set_aside(str(full), "T") == str(tmp_path / "full.pgx-aside-T")
    assert (tmp_path / "full.pgx-aside-T" / "f").read_text() == "x" and not full.exists()


def test_check_target_dir_refuses_a_running_postmaster_even_with_force(tmp_path):
    (tmp_path / "postmaster.pid").write_text("%d\n%s\n" % (os.getpid(), tmp_path))
    with pytest.raises(BackupError, match="A postmaster \\(PID %d\\) runs" % os.getpid()):
        restore.check_target_dir(str(tmp_path), True)
    assert (tmp_path / "postmaster.pid").exists()


def test_tablespace_targets_by_oid_or_old_path_else_beside_the_data_directory_never_the_backups_path():
    text = "16384 /live/a\n16385 /live/b\n16386 /live/c\n"
    assert restore.tablespace_targets(text, ["16384", "16385", "16386", "16387"], {16384: "/new/a", "/live/b": "/new/b"},
                                      "/srv/restored.tablespaces") == {
        "16384": "/new/a", "16385": "/new/b", "16386": "/srv/restored.tablespaces/16386",
        "16387": "/srv/restored.tablespaces/16387"}
    assert targets.default_tablespaces_dir("/srv/restored/") == "/srv/restored.tablespaces"
