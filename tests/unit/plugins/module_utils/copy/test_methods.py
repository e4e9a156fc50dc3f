import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import backup_copy as c
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import methods as m
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import EMPTY_DIRS, TOP_FILES
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def test_normal_exit_codes_per_tool():
    assert m.is_normal_exit("tar", 1) and m.is_normal_exit("rsync", 24)
    assert not m.is_normal_exit("tar", 2) and not m.is_normal_exit("rsync", 23)
    assert not m.is_normal_exit("command", 1)


def test_tar_command_excludes_live_label_and_empty_dirs_and_adds_staged_ones():
    argv = m.tar_data_command("/d", "/s", "/b/base.tar.gz", "gzip", ["*.log"])
    assert argv[:5] == ["tar", "-C", "/d", "-cf", "/b/base.tar.gz"]
    assert "--gzip" in argv and "--exclude=*.log" in argv
    assert "--exclude=./backup_label" in argv and "--exclude=./pg_wal" in argv
    assert argv[argv.index("."):] == [".", "-C", "/s", "backup_label"] + list(EMPTY_DIRS)


def test_rsync_command_anchors_keeps_links_and_takes_the_list_from_backup_files():
    argv = m.rsync_data_command("/d/", "/b/data")
    assert argv[:2] == ["rsync", "-a"] and argv[-2:] == ["/d/", "/b/data/"]
    assert "--exclude=/pg_wal" in argv and "--exclude=/backup_label" in argv
    assert all("--exclude=/" + name in argv for name in TOP_FILES)
    assert "--exclude=pgsql_tmp*" in argv and "-L" not in argv
    staged = m.rsync_staged_command("/s", "h:/b/data")
    assert staged == ["rsync", "-a", "/s/backup_label"] + ["/s/" + name for name in EMPTY_DIRS] + ["h:/b/data/"]


def test_parallel_zstd_uses_threads_and_other_compressions_do_not():
    assert m.tar_compress_args("zstd", 2) == ["--use-compress-program=zstd -1 -T2"]
    assert m.tar_compress_args("zstd", 1) == ["--use-compress-program=zstd -1 -T1"], "level and threads never left to the host"
    assert m.tar_compress_args("gzip", 4) == ["--gzip"]
    argv = m.tar_data_command("/d", "/s", "/b/base.tar.zst", "zstd", parallel=2)
    assert "--use-compress-program=zstd -1 -T2" in argv and "--zstd" not in argv
    with pytest.raises(BackupError):
        c.Copier("/d", "/b", "l", method="copy", parallel=0)
