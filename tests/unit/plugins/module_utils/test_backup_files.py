import os
import subprocess

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_files as bf

EXTRA = ["*.log"]


def test_the_empty_dirs_are_left_out_whole_and_the_rest_where_the_list_says():
    for name in bf.EMPTY_DIRS:
        assert bf.is_excluded(name) and bf.is_excluded(name + "/archive_status/x.done")
    assert bf.is_excluded("postmaster.pid") and not bf.is_excluded("base/postmaster.pid")
    assert bf.is_excluded("base/1/pgsql_tmp12") and bf.is_excluded("global/pg_internal.init")
    assert not bf.is_excluded("backup_label") and not bf.is_excluded("tablespace_map")
    assert not bf.is_excluded("base/pg_wal"), "only the data directory's own pg_wal is emptied"
    assert bf.is_excluded("log/x.log", EXTRA) and not bf.is_excluded("log/x.log")


def make_tree(root):
    """A data directory with an entry for every rule, pg_wal a link to another disk (initdb --waldir)."""
    data = root / "data"
    for d in ("base/1/pgsql_tmp", "base/pg_wal", "global", "pg_stat_tmp", "pg_replslot/slot", "pg_tblspc", "log"):
        (data / d).mkdir(parents=True)
    for f in ("PG_VERSION", "base/1/1259", "base/1/pgsql_tmp/t", "base/pg_wal/kept", "base/postmaster.pid",
              "global/pg_control", "global/pg_internal.init", "pg_stat_tmp/global.stat", "pg_replslot/slot/state",
              "postmaster.pid", "postmaster.opts", "backup_label", "backup_label.old", "tablespace_map", "log/x.log"):
        (data / f).write_text(f)
    wal = root / "waldisk"
    (wal / "archive_status").mkdir(parents=True)
    (wal / "000000010000000000000002").write_text("w")
    os.symlink(str(wal), str(data / "pg_wal"))
    os.symlink(str(root / "ts"), str(data / "pg_tblspc/16384"))
    return data


def expected(data, extra=(), prefix="", staged=False):
    kept = set()
    for current, dirs, files in os.walk(str(data)):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(current, name), str(data))
            if not bf.is_excluded(prefix + rel, extra, staged):
                kept.add(rel)
        dirs[:] = [d for d in dirs
                   if not bf.is_excluded(prefix + os.path.relpath(os.path.join(current, d), str(data)), extra, staged)]
    return kept


def tar_members(data, args):
    listed = subprocess.run(["tar", "-C", str(data), "-cf", "-"] + args + ["."], capture_output=True, check=True)
    names = subprocess.run(["tar", "-tf", "-"], input=listed.stdout, capture_output=True, check=True)
    return {n[2:].rstrip("/") for n in names.stdout.decode().split("\n") if n not in ("", "./")}


def rsync_members(data, target, args):
    subprocess.run(["rsync", "-a"] + args + [str(data) + "/", str(target) + "/"], check=True)
    found = set()
    for current, dirs, files in os.walk(str(target)):
        found.update(os.path.relpath(os.path.join(current, n), str(target)) for n in dirs + files)
    return found


def test_tar_and_rsync_leave_out_exactly_what_is_excluded(tmp_path):
    data = make_tree(tmp_path)
    want = expected(data, EXTRA)
    assert "pg_wal" not in want and "base/pg_wal/kept" in want and "pg_tblspc/16384" in want
    assert tar_members(data, bf.tar_exclude_args(EXTRA)) == want
    assert rsync_members(data, tmp_path / "r", bf.rsync_exclude_args(EXTRA)) == want


def test_with_staged_files_all_three_leave_out_the_live_label(tmp_path):
    data = make_tree(tmp_path)
    want = expected(data, EXTRA, staged=True)
    assert want == expected(data, EXTRA) - set(bf.STAGED_FILES) and "backup_label" not in want
    assert tar_members(data, bf.tar_exclude_args(EXTRA, staged=True)) == want
    assert rsync_members(data, tmp_path / "r", bf.rsync_exclude_args(EXTRA, staged=True)) == want


def test_a_tablespace_gets_the_name_patterns_only(tmp_path):
    ts = tmp_path / "ts" / "PG_15_1"
    for d in ("1/pgsql_tmp", "pg_wal"):
        (ts / d).mkdir(parents=True)
    for f in ("1/16385", "1/pgsql_tmp/t", "pg_wal/f", "postmaster.pid", "1/x.log"):
        (ts / f).write_text(f)
    root = tmp_path / "ts"
    want = expected(root, EXTRA, prefix="pg_tblspc/16384/")
    assert want == {"PG_15_1", "PG_15_1/1", "PG_15_1/1/16385", "PG_15_1/pg_wal", "PG_15_1/pg_wal/f",
                    "PG_15_1/postmaster.pid"}
    assert tar_members(root, bf.tar_exclude_args(EXTRA, top=False)) == want
    assert rsync_members(root, tmp_path / "r", bf.rsync_exclude_args(EXTRA, top=False)) == want


def test_rsync_and_tar_are_rendered_from_the_lists():
    tar, rsync = bf.tar_exclude_args(), bf.rsync_exclude_args()
    for name in bf.EMPTY_DIRS + bf.TOP_FILES:
        assert "--exclude=./" + name in tar and "--exclude=/" + name in rsync
    for pattern in bf.ANYWHERE:
        assert "--exclude=" + pattern in tar and "--exclude=" + pattern in rsync
    assert len(rsync) == len(bf.EMPTY_DIRS + bf.TOP_FILES + bf.ANYWHERE)
