"""The rules between a copy's options, each with the message and the hint the user reads."""

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.options import METHODS, check_copy_options
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def refusal(**options):
    with pytest.raises(BackupError) as caught:
        check_copy_options(**options)
    return caught.value


@pytest.mark.parametrize("options", [
    dict(method="tar"),
    dict(method="tar", compression="zstd", parallel=4),
    dict(method="tar", repository="backup@repo1:/srv/pg"),
    dict(method="rsync", repository="/mnt/local-target"),
    dict(method="rsync", rsync_target="backup@repo1:/srv/pg"),
    dict(method="copy", include_wal=True, wal_archive_dir="/archive", verify_restore=True),
    dict(method="command", command="snap"),
], ids=lambda options: "-".join("%s=%s" % item for item in sorted(options.items())))
def test_options_that_fit_pass(options):
    check_copy_options(**options)


def test_every_method_is_known():
    assert METHODS == ("tar", "rsync", "copy", "command")
    error = refusal(method="ftp")
    assert error.msg == "Unknown copy method 'ftp'." and error.hint == "Use one of tar, rsync, copy, command."


@pytest.mark.parametrize("method", ["rsync", "copy", "command"])
def test_compression_applies_to_tar_only(method):
    error = refusal(method=method, compression="gzip", command="snap")
    assert error.msg == "Compression 'gzip' only applies to the tar method."
    assert error.hint == "Set compression to none, or use method tar."


def test_parallel_is_one_or_more():
    error = refusal(method="copy", parallel=0)
    assert error.msg == "parallel is 0; it must be 1 or more." and "copy workers" in error.hint


@pytest.mark.parametrize("command", [None, ""])
def test_the_command_method_needs_a_command(command):
    error = refusal(method="command", command=command)
    assert error.msg == "The command method needs a command." and error.hint == "Set exclusive_backup_command."


def test_the_repository_replaces_the_rsync_target():
    error = refusal(method="rsync", repository="h:/srv", rsync_target="h:/old")
    assert "Both exclusive_backup_repository and exclusive_backup_rsync_target are set" in error.msg
    assert error.hint == "Set one of them: exclusive_backup_repository."


def test_the_rsync_target_needs_the_rsync_method():
    error = refusal(method="tar", rsync_target="h:/srv")
    assert error.msg == "exclusive_backup_rsync_target needs the rsync method, and the method is tar."
    assert "exclusive_backup_repository" in error.hint


@pytest.mark.parametrize("method", ["copy", "command"])
def test_a_repository_needs_tar_or_rsync(method):
    error = refusal(method=method, command="snap", repository="h:/srv")
    assert error.msg == "The %s method copies on the database host only: a repository needs the tar or rsync method." % method


def test_tar_sends_to_another_host_only():
    error = refusal(method="tar", repository="/srv/local")
    assert "tar method sends to a repository on another host only, and '/srv/local' is a local path" in error.msg
    assert "[user@]host:/path" in error.hint


def test_a_repository_that_is_no_host_and_path_is_refused():
    assert "is not [user@]host:/absolute/path" in refusal(method="rsync", repository="h:relative").msg


@pytest.mark.parametrize("where", [dict(repository="h:/srv"), dict(repository="/mnt/local"),
                                   dict(rsync_target="h:/srv")])
def test_verify_restore_needs_the_copy_on_the_database_host(where):
    error = refusal(method="rsync", verify_restore=True, **where)
    assert error.msg.startswith("exclusive_backup_verify_restore restores the copy on the database host")
    assert "Restore a copy on the repository host instead" in error.hint


def test_include_wal_needs_the_archive():
    error = refusal(method="tar", include_wal=True)
    assert error.msg == "include_wal needs wal_archive_dir."
    assert error.hint == "Set exclusive_backup_wal_archive_dir to the WAL archive's directory."
