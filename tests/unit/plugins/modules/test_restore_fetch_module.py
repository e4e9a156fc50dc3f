"""pg_restore_fetch run as Ansible runs it (arguments in a file), against a repository "on another host"."""

import pytest

from ansible_collections.pgexclusive.backup.tests.unit.plugins.modules.test_backup_dir_modules import run_module
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.restore.test_fetch import SYSID, backup


@pytest.mark.parametrize("check", [True, False])
def test_the_module_stages_the_newest_complete_backup(tmp_path, fake_ssh, check):
    backup(tmp_path / "repository", "nightly")
    args = dict(repository="repo1:%s" % (tmp_path / "repository"), data_directory=str(tmp_path / "data"),
                system_identifier=SYSID, _ansible_check_mode=check)
    result = run_module("pg_restore_fetch", tmp_path, **args)
    assert not result.get("failed"), result
    assert result["backup_dir"] == str(tmp_path / "data.fetch" / "nightly")
    assert (tmp_path / "data.fetch" / "nightly" / "backup.json").exists() != check


def test_a_local_path_fails_with_a_hint(tmp_path):
    result = run_module("pg_restore_fetch", tmp_path, repository=str(tmp_path), data_directory=str(tmp_path / "d"))
    assert result["failed"] and "is not on another host" in result["msg"] and "backup_dir or dest" in result["msg"]
