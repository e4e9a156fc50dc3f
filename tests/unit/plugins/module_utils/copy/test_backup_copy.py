import os
import threading
import pwd
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_layout as layout
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import backup_copy as c
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import io as cio
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import methods as m
from ansible_collections.pgexclusive.backup.plugins.module_utils import repository as rp
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import EMPTY_DIRS, TOP_FILES
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

LABEL = """START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: pg_start_backup
BACKUP FROM: primary
START TIME: 2026-11-21 10:56:35 UTC
LABEL: run-1
START TIMELINE: 1
"""


def test_normal_exit_codes_per_tool():
    assert m.is_normal_exit("tar", 1) and m.is_normal_exit("rsync", 24)
    assert not m.is_normal_exit("tar", 2) and not m.is_normal_exit("rsync", 23)
    assert not m.is_normal_exit("command", 1)


def test_tar_names():
    assert layout.tar_name("base", "none") == "base.tar"
    assert layout.tar_name("16384", "zstd") == "16384.tar.zst"
    with pytest.raises(BackupError):
        layout.tar_name("base", "lz4")


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


def test_label_checked_and_fixed():
    assert c.check_label(LABEL, "run-1")["start_wal_file"] == "000000010000000000000002"
    with pytest.raises(BackupError, match="not this run's"):
        c.check_label(LABEL, "run-2")
    assert "BACKUP METHOD: streamed" in c.label_for_copy(LABEL, True)
    assert c.label_for_copy(LABEL, False) == LABEL


def test_restore_hint_only_asks_for_the_fix_on_15_plus():
    assert "BACKUP METHOD: streamed" in c.restore_hint(True)
    assert "as it is" in c.restore_hint(False)


SYSTEM_IDENTIFIER = 7309871234567890123
NOBODY = pwd.getpwnam("nobody")


def make_data_dir(root, waldir=False):
    """A data directory in backup mode with a tablespace; with ``waldir``, pg_wal links to another disk."""
    data = root / "data"
    for d in ("base/1", "pg_stat_tmp", "pg_tblspc", "base/pgsql_tmp", "global"):
        (data / d).mkdir(parents=True)
    if waldir:
        (root / "waldisk/archive_status").mkdir(parents=True)
        os.symlink(str(root / "waldisk"), str(data / "pg_wal"))
    else:
        (data / "pg_wal/archive_status").mkdir(parents=True)
    (data / "global/pg_control").write_bytes(struct.pack("=Q", SYSTEM_IDENTIFIER) + b"\0" * 100)
    (data / "PG_VERSION").write_text("15\n")
    (data / "base/1/1259").write_text("x" * 100)
    (data / "base/pgsql_tmp/tmp1").write_text("t")
    (data / "pg_wal/000000010000000000000002").write_text("w")
    (data / "pg_stat_tmp/global.stat").write_text("s")
    (data / "postmaster.pid").write_text("123\n")
    (data / "backup_label").write_text(LABEL)
    (data / "tablespace_map").write_text("16384 %s\n" % (root / "ts"))
    (root / "ts/PG_15_1").mkdir(parents=True)
    (root / "ts/PG_15_1/f").write_text("ts")
    os.symlink(str(root / "ts"), str(data / "pg_tblspc/16384"))
    return data


def test_plain_copy_layout(tmp_path):
    data = make_data_dir(tmp_path)
    out = tmp_path / "backup"
    result = c.Copier(str(data), str(out), "run-1", method="copy", fix_label=True).copy()
    copy = out / "data"
    assert (copy / "PG_VERSION").exists() and (copy / "base/1/1259").exists()
    assert (copy / "pg_wal").is_dir() and not any((copy / "pg_wal").iterdir())
    assert (copy / "pg_stat_tmp").is_dir() and not any((copy / "pg_stat_tmp").iterdir())
    assert not (copy / "postmaster.pid").exists() and not (copy / "base/pgsql_tmp").exists()
    assert "BACKUP METHOD: streamed" in (copy / "backup_label").read_text()
    assert "pg_start_backup" in (data / "backup_label").read_text(), "the live label is never changed"
    assert (copy / "tablespace_map").exists()
    link = copy / "pg_tblspc/16384"
    assert link.is_symlink() and os.readlink(str(link)) == "../../tablespaces/16384"
    assert (link / "PG_15_1/f").read_text() == "ts"
    assert result["tablespaces"] == [{"oid": 16384, "name": None, "location": str(tmp_path / "ts"), "path": str(tmp_path / "ts")}]
    assert result["label_fixed"] is True and not (out / ".staging").exists()


def test_copy_refuses_another_label(tmp_path):
    data = make_data_dir(tmp_path)
    with pytest.raises(BackupError, match="not this run's"):
        c.Copier(str(data), str(tmp_path / "b"), "other", method="copy").copy()


def test_copy_refuses_without_backup_label(tmp_path):
    data = make_data_dir(tmp_path)
    (data / "backup_label").unlink()
    with pytest.raises(BackupError, match="no exclusive backup is in progress"):
        c.Copier(str(data), str(tmp_path / "b"), "run-1", method="tar").copy()


def test_tar_tool_failure_is_a_failure_but_exit_1_is_a_warning(tmp_path):
    data = make_data_dir(tmp_path)
    calls = []

    def fake(rc):
        def run(argv, env=None, pass_fds=()):
            calls.append(argv)
            with open(argv[argv.index("-cf") + 1], "w") as out:
                out.write("x" * len(calls))
            return rc, "", "tar: file changed as we read it"
        return run
    result = c.Copier(str(data), str(tmp_path / "b"), "run-1", run=fake(1)).copy()
    assert result["warnings"] and len(calls) == 2   # base + one tablespace
    assert result["output_bytes"] == dict(zip(result["outputs"], (1, 2)))
    with pytest.raises(BackupError, match="tar exited with 2"):
        c.Copier(str(data), str(tmp_path / "b2"), "run-1", run=fake(2)).copy()


def test_command_method_gets_environment_and_restorable_label(tmp_path):
    data = make_data_dir(tmp_path)
    seen = {}

    def run(argv, env=None, pass_fds=()):
        seen.update(env)
        return 0, "", ""
    out = tmp_path / "b"
    result = c.Copier(str(data), str(out), "run-1", method="command", command="snap", fix_label=True, run=run).copy()
    assert seen["PGX_DATA_DIRECTORY"] == str(data) and seen["PGX_LABEL"] == "run-1"
    assert seen["PGX_TABLESPACES"] == "16384=%s" % (tmp_path / "ts")
    assert "streamed" in (out / layout.RESTORABLE_LABEL_FILE).read_text()
    assert "BACKUP METHOD: streamed" in result["restore_hint"]


def test_options_checked():
    with pytest.raises(BackupError):
        c.Copier("/d", "/b", "l", method="copy", compression="gzip")
    with pytest.raises(BackupError):
        c.Copier("/d", "/b", "l", method="command")
    with pytest.raises(BackupError):
        c.Copier("/d", "/b", "l", method="ftp")


@pytest.mark.skipif(not __import__("shutil").which("rsync"), reason="rsync is not installed")
def test_rsync_to_a_target_creates_label_directory_and_keeps_links(tmp_path):
    data = make_data_dir(tmp_path)
    target = tmp_path / "remote"
    result = c.Copier(str(data), str(tmp_path / "local" / "run-1"), "run-1", method="rsync",
                      fix_label=True, repository=str(target)).copy()
    copy = target / "run-1" / "data"
    assert "BACKUP METHOD: streamed" in (copy / "backup_label").read_text()
    assert not (copy / "postmaster.pid").exists() and not any((copy / "pg_wal").iterdir())
    assert os.readlink(copy / "pg_tblspc/16384") == "../../tablespaces/16384", "the copy's link, not the live one"
    assert (copy / "pg_tblspc/16384/PG_15_1/f").exists()
    assert (target / "run-1" / "tablespaces" / "16384" / "PG_15_1" / "f").exists()
    assert not result["warnings"]


def test_balanced_shares_are_near_equal_and_keep_every_job():
    jobs = [(size, "f%d" % i) for i, size in enumerate([100, 90, 50, 40, 30, 20, 10, 5, 5, 1])]
    shares = cio.balanced(jobs, 3)
    assert sorted(j for share in shares for j in share) == sorted(jobs)
    totals = [sum(j[0] for j in share) for share in shares]
    assert max(totals) - min(totals) <= 10
    assert len(cio.balanced(jobs[:2], 4)) == 2, "no empty share for a worker with nothing to do"


def tree(root):
    return {str(p.relative_to(root)): (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in root.rglob("*")}


def test_parallel_copy_writes_the_same_tree_as_one_stream(tmp_path):
    data = make_data_dir(tmp_path)
    for i in range(40):
        (data / "base/1" / str(16384 + i)).write_bytes(os.urandom(1000 * (i + 1)))
    one = c.Copier(str(data), str(tmp_path / "one"), "run-1", method="copy", fix_label=True).copy()
    many = c.Copier(str(data), str(tmp_path / "many"), "run-1", method="copy", fix_label=True, parallel=3).copy()
    assert tree(tmp_path / "one") == tree(tmp_path / "many")
    assert one["bytes"] == many["bytes"]
    assert "BACKUP METHOD: streamed" in (tmp_path / "many/data/backup_label").read_text()


def test_parallel_zstd_uses_threads_and_other_compressions_do_not():
    assert m.tar_compress_args("zstd", 2) == ["--use-compress-program=zstd -1 -T2"]
    assert m.tar_compress_args("zstd", 1) == ["--use-compress-program=zstd -1 -T1"], "level and threads never left to the host"
    assert m.tar_compress_args("gzip", 4) == ["--gzip"]
    argv = m.tar_data_command("/d", "/s", "/b/base.tar.zst", "zstd", parallel=2)
    assert "--use-compress-program=zstd -1 -T2" in argv and "--zstd" not in argv
    with pytest.raises(BackupError):
        c.Copier("/d", "/b", "l", method="copy", parallel=0)


@pytest.mark.parametrize("parallel", [1, 3])
def test_gzip_is_a_gzip_tar_reads(tmp_path, parallel):
    import subprocess
    data = make_data_dir(tmp_path)
    (data / "base/1/big").write_bytes(os.urandom(300000) + b"x" * 300000)
    out = tmp_path / "backup"
    result = c.Copier(str(data), str(out), "run-1", method="tar", compression="gzip", fix_label=True,
                      parallel=parallel).copy()
    assert result["outputs"] == ["base.tar.gz", "16384.tar.gz"]
    listed = subprocess.run(["tar", "-tzf", str(out / "base.tar.gz")], capture_output=True, text=True, check=True)
    assert "./base/1/big" in listed.stdout.split() and "backup_label" in listed.stdout.split()
    assert "./postmaster.pid" not in listed.stdout.split()
    extracted = tmp_path / "x"
    extracted.mkdir()
    subprocess.run(["tar", "-xzf", str(out / "base.tar.gz"), "-C", str(extracted)], check=True)
    assert (extracted / "base/1/big").read_bytes() == (data / "base/1/big").read_bytes()
    assert "BACKUP METHOD: streamed" in (extracted / "backup_label").read_text()


def test_parallel_gzip_small_blocks_and_tar_failure(tmp_path):
    import gzip
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(os.urandom(50000))
    out = tmp_path / "o.tar.gz"
    rc, _err = cio.gzip_parallel(["tar", "-C", str(source), "-cf", "-", "."], str(out), 2, block=1000)
    assert rc == 0 and len(gzip.open(str(out)).read()) % 512 == 0
    rc, err = cio.gzip_parallel(["tar", "-C", str(tmp_path / "missing"), "-cf", "-", "."], str(out), 2)
    assert rc == 2 and "missing" in err


@pytest.mark.parametrize("size,block", [(0, 1000), (999, 1000), (1000, 1000), (250000, 1000), (3 << 20, 1 << 20)])
def test_parallel_gzip_writes_one_member_that_ends_where_the_file_ends(tmp_path, size, block):
    """pg_verifybackup -F t reads a .tar.gz as one gzip member: whatever follows the first is never read."""
    import zlib
    payload = (os.urandom(size // 2) + b"pgx" * size)[:size]
    source = tmp_path / "payload"
    source.write_bytes(payload)
    out = tmp_path / "o.gz"
    rc, _err = cio.gzip_parallel(["cat", str(source)], str(out), 3, block=block)
    raw = out.read_bytes()
    one = zlib.decompressobj(31)
    assert rc == 0 and one.decompress(raw) == payload and one.eof and one.unused_data == b""
    assert subprocess.run(["gzip", "-t", str(out)], check=False).returncode == 0
    assert int.from_bytes(raw[-4:], "little") == size and int.from_bytes(raw[-8:-4], "little") == zlib.crc32(payload)


def copied_data_dir(out, method, tmp_path):
    """The copy as a directory: data/ as it is, a tar backup extracted."""
    if method != "tar":
        return out / "data"
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "-xf", str(out / "base.tar"), "-C", str(extracted)], check=True)
    return extracted


@pytest.mark.parametrize("method", ["tar", "rsync", "copy"])
def test_pg_wal_in_the_copy_is_a_real_empty_directory_even_when_the_live_one_is_a_link(tmp_path, method):
    data = make_data_dir(tmp_path, waldir=True)
    shutil.rmtree(str(data / "pg_stat_tmp"))
    os.symlink(str(tmp_path / "waldisk"), str(data / "pg_stat_tmp"))   # a stats directory on tmpfs, say
    out = tmp_path / "backup"
    c.Copier(str(data), str(out), "run-1", method=method, fix_label=True).copy()
    if method == "tar":
        listing = subprocess.run(["tar", "-tvf", str(out / "base.tar")], capture_output=True, text=True,
                                 check=True).stdout.splitlines()
        entries = [line for line in listing if line.split()[5].strip("./").startswith("pg_wal")]
        assert len(entries) == 1 and entries[0].startswith("d") and entries[0].split()[5] == "pg_wal/", entries
    copy = copied_data_dir(out, method, tmp_path)
    for name in EMPTY_DIRS:
        st = os.lstat(str(copy / name))
        assert stat.S_ISDIR(st.st_mode) and not any((copy / name).iterdir()), name
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.stat(str(data)).st_uid, name
    assert "BACKUP METHOD: streamed" in (copy / "backup_label").read_text()
    assert not (copy / "postmaster.pid").exists() and (copy / "base/1/1259").exists()
    (copy / "pg_wal/000000010000000000000009").write_text("restore check")
    assert sorted(os.listdir(str(tmp_path / "waldisk"))) == ["000000010000000000000002", "archive_status"]


def test_rsync_target_gets_a_real_empty_pg_wal_and_a_second_run_keeps_it_so(tmp_path):
    data = make_data_dir(tmp_path, waldir=True)
    target = tmp_path / "remote"
    for _run in range(2):
        c.Copier(str(data), str(tmp_path / "local" / "run-1"), "run-1", method="rsync", fix_label=True,
                 repository=str(target)).copy()
        pg_wal = target / "run-1" / "data" / "pg_wal"
        assert not pg_wal.is_symlink() and pg_wal.is_dir() and not any(pg_wal.iterdir())
        (pg_wal / "000000010000000000000009").write_text("include_wal")
    assert stat.S_IMODE(os.stat(str(target / "run-1" / "data")).st_mode) == stat.S_IMODE(os.stat(str(data)).st_mode)


def tree_copy(source, target, **kwargs):
    """cio.copy_tree of the directory ``source``, opened as the Copier opens its roots."""
    with cio.open_root(str(source)) as root:
        return cio.copy_tree(root, target, **kwargs)


def test_copy_tree_copies_links_as_links_and_never_their_targets(tmp_path):
    data = make_data_dir(tmp_path)
    (tmp_path / "secret").write_text("secret")
    os.symlink(str(tmp_path / "secret"), str(data / "base/1/link"))
    os.symlink(str(tmp_path), str(data / "base/dirlink"))
    tree_copy(data, str(tmp_path / "copy"))
    copy = tmp_path / "copy"
    assert os.readlink(str(copy / "base/1/link")) == str(tmp_path / "secret")
    assert os.readlink(str(copy / "base/dirlink")) == str(tmp_path)
    assert not (copy / "pg_wal").exists(), "copy_tree leaves out the empty dirs: the Copier makes new ones"


def test_copy_tree_keeps_mode_owner_and_content(tmp_path):
    data = make_data_dir(tmp_path)
    src = data / "base/1/1259"
    os.chmod(str(src), 0o640)
    if os.geteuid() == 0:
        os.chown(str(src), NOBODY.pw_uid, NOBODY.pw_gid)
    tree_copy(data, str(tmp_path / "copy"), workers=2)
    copied = tmp_path / "copy/base/1/1259"
    st, orig = os.stat(str(copied)), os.stat(str(src))
    assert copied.read_bytes() == src.read_bytes() and stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (orig.st_uid, orig.st_gid, orig.st_mtime_ns)


def swap(monkeypatch, action):
    """Run ``action`` after the walk, just before the files are copied: the window of a swap."""
    copy_files = cio.copy_files

    def swapped(*args):
        action()
        return copy_files(*args)
    monkeypatch.setattr(cio, "copy_files", swapped)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_swapped_for_a_link_after_the_walk_fails_the_copy(tmp_path, monkeypatch, workers):
    data = make_data_dir(tmp_path)
    (tmp_path / "secret").write_text("root's secret")
    victim = data / "base/1/1259"

    def action():
        # Atomic, as the threads of workers=2 may both get here: the victim is never missing for a moment.
        link = tmp_path / ("link-%d" % threading.get_ident())
        os.symlink(str(tmp_path / "secret"), str(link))
        os.replace(str(link), str(victim))
    swap(monkeypatch, action)
    with pytest.raises(BackupError, match="base/1/1259 became a symbolic link during the copy.*take the backup again"):
        tree_copy(data, str(tmp_path / "copy"), workers=workers)
    assert not any(b"secret" in p.read_bytes() for p in (tmp_path / "copy").rglob("*") if p.is_file())


def test_a_directory_swapped_for_a_link_after_the_walk_fails_the_copy(tmp_path, monkeypatch):
    data = make_data_dir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/1259").write_text("root's secret")

    def action():
        if not (data / "base/1").is_symlink():
            os.rename(str(data / "base/1"), str(tmp_path / "moved"))
            os.symlink(str(tmp_path / "elsewhere"), str(data / "base/1"))
    swap(monkeypatch, action)
    with pytest.raises(BackupError, match="base/1 became a symbolic link during the copy"):
        tree_copy(data, str(tmp_path / "copy"))
    assert not (tmp_path / "copy/base/1/1259").exists()


def test_files_that_vanish_are_skipped(tmp_path, monkeypatch):
    data = make_data_dir(tmp_path)
    swap(monkeypatch, lambda: shutil.rmtree(str(data / "base/1"), ignore_errors=True))
    assert tree_copy(data, str(tmp_path / "copy")) == 3
    assert sorted(p.name for p in (tmp_path / "copy").rglob("*") if p.is_file()) == [
        "PG_VERSION", "pg_control", "tablespace_map"]


def test_copy_method_refuses_an_existing_copy(tmp_path):
    data = make_data_dir(tmp_path)
    (tmp_path / "b/data").mkdir(parents=True)
    with pytest.raises(BackupError, match="already exist"):
        c.Copier(str(data), str(tmp_path / "b"), "run-1", method="copy").copy()


def test_tablespace_links_are_resolved_once(tmp_path):
    data = make_data_dir(tmp_path)
    os.symlink(str(tmp_path / "ts"), str(tmp_path / "ts-link"))
    os.unlink(str(data / "pg_tblspc/16384"))
    os.symlink("../../ts-link", str(data / "pg_tblspc/16384"))
    (data / "pg_tblspc/16390").mkdir()   # in place: copied with the data directory
    real = os.path.realpath(str(tmp_path / "ts"))
    with c.open_sources(str(data)) as sources:
        assert sources.records() == [{"oid": 16384, "name": None, "location": real, "path": real}]


@pytest.mark.parametrize("method", ["tar", "copy", "command"])
def test_a_tablespace_link_to_a_directory_of_another_owner_is_refused_before_anything_is_copied(tmp_path, method):
    data = make_data_dir(tmp_path)
    foreign = "/"
    if os.geteuid() == 0:
        foreign = str(tmp_path / "foreign")
        os.mkdir(foreign)
        os.chown(foreign, NOBODY.pw_uid, NOBODY.pw_gid)
    os.unlink(str(data / "pg_tblspc/16384"))
    os.symlink(foreign, str(data / "pg_tblspc/16384"))
    with pytest.raises(BackupError) as raised:
        c.Copier(str(data), str(tmp_path / "b"), "run-1", method=method, command="true").copy()
    message = str(raised.value)
    assert "Tablespace 16384" in message
    assert "leads to %s, owned by uid %d" % (foreign, os.stat(foreign).st_uid) in message
    assert "owned by uid %d" % os.getuid() in message and "take the backup again" in message
    assert not (tmp_path / "b").exists(), "refused before anything is copied"


def swap_for_link(path, target):
    """What the server's OS user can do to a directory it owns the parent of: rename it away, put a link in its place."""
    os.rename(str(path), str(path) + ".moved")
    os.symlink(str(target), str(path))


def elsewhere(tmp_path):
    """A directory the copy must never read, holding a file named like the tablespace's and data directory's."""
    other = tmp_path / "elsewhere"
    (other / "PG_15_1").mkdir(parents=True)
    (other / "PG_15_1/f").write_text("elsewhere")
    (other / "backup_label").write_text(LABEL)
    (other / "secret").write_text("elsewhere")
    return other


def swap_after_the_check(monkeypatch, action):
    """Run ``action`` right after the Copier opened and checked its sources, before any method reads them."""
    real = c.open_sources

    def opened(data_directory):
        sources = real(data_directory)
        action()
        return sources
    monkeypatch.setattr(c, "open_sources", opened)


def copied_files(out):
    """{name relative to its root: content} of what a copy wrote, plain or tar."""
    found = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name.endswith(".tar"):
            with tarfile.open(str(path)) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        found[path.name + ":" + os.path.normpath(member.name)] = tar.extractfile(member).read()
        elif path.is_file() and not path.is_symlink():
            found[str(path.relative_to(out))] = path.read_bytes()
    return found


@pytest.mark.parametrize("method", ["tar", "copy", "rsync"])
def test_a_tablespace_swapped_for_a_link_after_the_check_is_copied_as_checked(tmp_path, monkeypatch, method):
    data = make_data_dir(tmp_path)
    other = elsewhere(tmp_path)
    swap_after_the_check(monkeypatch, lambda: swap_for_link(tmp_path / "ts", other))
    result = c.Copier(str(data), str(tmp_path / "b"), "run-1", method=method).copy()
    files = copied_files(tmp_path / "b")
    assert b"elsewhere" not in b"".join(files.values()), "the copy read the link's target"
    assert b"ts" in [content for name, content in files.items() if name.endswith("PG_15_1/f")], files
    assert result["tablespaces"][0]["location"] == str(tmp_path / "ts"), "the record names the path as checked"


@pytest.mark.parametrize("method", ["tar", "copy", "rsync"])
def test_the_data_directory_swapped_for_a_link_after_the_check_is_copied_as_checked(tmp_path, monkeypatch, method):
    data = make_data_dir(tmp_path)
    other = elsewhere(tmp_path)
    swap_after_the_check(monkeypatch, lambda: swap_for_link(data, other))
    c.Copier(str(data), str(tmp_path / "b"), "run-1", method=method).copy()
    files = copied_files(tmp_path / "b")
    assert not [name for name in files if name.endswith("secret")], "the copy read the link's target"
    assert [name for name in files if name.endswith("base/1/1259")], files


@pytest.mark.parametrize("which", ["data", "ts"])
def test_a_root_swapped_for_a_link_between_its_resolution_and_its_open_is_refused(tmp_path, monkeypatch, which):
    data = make_data_dir(tmp_path)
    other = elsewhere(tmp_path)
    real = os.path.realpath

    def resolve_then_swap(path):
        resolved = real(path)
        if resolved == str(tmp_path / which) and not os.path.islink(resolved):
            swap_for_link(tmp_path / which, other)
        return resolved
    monkeypatch.setattr(c.os.path, "realpath", resolve_then_swap)
    with pytest.raises(BackupError, match="%s is a symbolic link now, not the directory it was resolved to: it was "
                       "swapped during the backup. It was not followed; nothing was copied" % (tmp_path / which)):
        c.Copier(str(data), str(tmp_path / "b"), "run-1", method="tar").copy()
    assert not (tmp_path / "b").exists()


def test_an_external_tool_reads_the_opened_directory_only_when_it_is_passed_the_descriptor(tmp_path):
    """The /proc/self/fd path is the descriptor's: without pass_fds the tool finds no such directory."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d/f").write_text("d")
    with cio.open_root(str(tmp_path / "d")) as root:
        swap_for_link(tmp_path / "d", elsewhere(tmp_path))
        rc, _out, _err = cio.run_argv(["tar", "-C", root.source, "-cf", str(tmp_path / "d.tar"), "."],
                                      pass_fds=(root.fd,))
        assert rc == 0
        assert cio.run_argv(["tar", "-C", root.source, "-cf", str(tmp_path / "x.tar"), "."])[0] != 0
    with tarfile.open(str(tmp_path / "d.tar")) as tar:
        assert sorted(tar.getnames()) == [".", "./f"]


def test_without_proc_the_copy_refuses_before_anything_is_copied(tmp_path, monkeypatch):
    """A tool given /proc/self/fd/<n> without /proc would read nothing, or what another mount has there."""
    real = cio.SourceRoot

    class WithoutProc(real):
        def __init__(self, path, fd):
            real.__init__(self, path, fd)
            self.source = str(tmp_path / "no-proc" / str(fd))
    monkeypatch.setattr(cio, "SourceRoot", WithoutProc)
    data = make_data_dir(tmp_path)
    with pytest.raises(BackupError, match="the copy reads through /proc/self/fd, which this host does not provide"):
        c.Copier(str(data), str(tmp_path / "b"), "run-1").copy()
    assert not (tmp_path / "b").exists()


def as_unprivileged(func):
    """func() as a user whom file modes bind: nobody when the tests run as root (root ignores modes).

    A BackupError in the child comes back as a BackupError; anything else as an AssertionError.
    """
    if os.geteuid() != 0:
        return func()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            try:
                func()
                answer = "ok\n"
            except BackupError as exc:
                answer = "BackupError\n" + str(exc)
            except BaseException as exc:
                answer = "other\n" + repr(exc)
            os.write(write, answer.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        kind, _nl, text = pipe.read().partition("\n")
    os.waitpid(pid, 0)
    if kind == "BackupError":
        raise BackupError(text)
    assert kind == "ok", text


@pytest.fixture
def shared_tmp():
    """A directory nobody can reach (tmp_path lives under root's private 0700 directory)."""
    path = tempfile.mkdtemp(prefix="pgx-copy-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def unreadable_tree(shared_tmp, entry):
    root = Path(shared_tmp)
    data = make_data_dir(root)
    shutil.rmtree(str(root / "ts"))
    os.unlink(str(data / "pg_tblspc/16384"))
    (root / "out").mkdir()
    for path in [root / "out", data] + list(data.rglob("*")):
        if os.geteuid() == 0:
            os.lchown(str(path), NOBODY.pw_uid, NOBODY.pw_gid)
    os.chmod(str(data / entry), 0)
    return data, root / "out" / "copy"


@pytest.mark.parametrize("entry", ["base/1", "base/1/1259"])
def test_an_unreadable_directory_or_file_fails_the_copy(shared_tmp, entry):
    data, target = unreadable_tree(shared_tmp, entry)
    with pytest.raises(BackupError, match="Could not read %s: Permission denied.*as root or as the server's OS user"
                       % (data / entry)):
        as_unprivileged(lambda: tree_copy(data, str(target)))
    os.chmod(str(data / entry), 0o700)
    as_unprivileged(lambda: tree_copy(data, str(target) + "2"))


def test_the_result_names_the_cluster(tmp_path):
    data = make_data_dir(tmp_path)
    os.symlink(str(data), str(tmp_path / "current"))
    for method in ("copy", "tar"):
        result = c.Copier(str(tmp_path / "current"), str(tmp_path / method), "run-1", method=method).copy()
        assert result["system_identifier"] == str(SYSTEM_IDENTIFIER)
        assert result["data_directory"] == os.path.realpath(str(data))


def test_command_method_writes_the_restorable_label_before_the_command_runs(tmp_path):
    data = make_data_dir(tmp_path)
    out = tmp_path / "b"

    def run(argv, env=None, pass_fds=()):
        assert "streamed" in open(env["PGX_BACKUP_LABEL_RESTORABLE"]).read()
        return 0, "", ""
    c.Copier(str(data), str(out), "run-1", method="command", command="snap", fix_label=True, run=run).copy()
    assert stat.S_IMODE(os.stat(str(out / layout.RESTORABLE_LABEL_FILE)).st_mode) == 0o644


# -- a repository on another host, over SSH ------------------------------------------

def test_repository_names_host_path_and_user():
    repo = rp.Repository.parse("backup@repo1:/srv/pg backups/")
    assert (repo.user, repo.host, repo.path) == ("backup", "repo1", "/srv/pg backups")
    assert rp.Repository.parse("[fd00::5]:/srv", user="backup").command("true")[-2:] == ["fd00::5", "true"]
    assert rp.Repository.parse("/srv/local") is None and rp.Repository.parse("./a:b") is None
    for bad in ("repo1:relative", "-oProxyCommand=x:/srv", "-l@repo:/srv", "a@b@c:/srv"):
        with pytest.raises(BackupError, match="is not \\[user@\\]host:/absolute/path"):
            rp.Repository.parse(bad)
    with pytest.raises(BackupError, match="Give the user once"):
        rp.Repository.parse("backup@repo1:/srv", user="other")


def test_the_users_ssh_options_come_first_so_that_they_win():
    repo = rp.Repository.parse("repo1:/srv", user="backup", key="/root/k", options=["-o", "BatchMode=no"])
    argv = repo.ssh_argv()
    assert argv[:3] == ["ssh", "-o", "BatchMode=no"]
    assert argv.index("BatchMode=no") < argv.index("BatchMode=yes")
    assert argv[argv.index("-i"):argv.index("-i") + 4] == ["-i", "/root/k", "-o", "IdentitiesOnly=yes"]
    assert "ServerAliveInterval=15" in argv and argv[-2:] == ["-l", "backup"]


def test_a_repository_that_drops_off_the_network_fails_the_copy_in_75_seconds():
    # README and the fleet's fault test (test_fleet_faults.py) rely on this number.
    argv = rp.Repository.parse("repo1:/srv").ssh_argv()
    options = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "-o")
    # ssh gives up at the first check past ServerAliveCountMax unanswered ones.
    assert int(options["ServerAliveInterval"]) * (int(options["ServerAliveCountMax"]) + 1) == 75
    assert options["ConnectTimeout"] == "30" and options["BatchMode"] == "yes"
    patient = rp.Repository.parse("repo1:/srv", options=["-o", "ServerAliveCountMax=20"]).ssh_argv()
    assert patient.index("ServerAliveCountMax=20") < patient.index("ServerAliveCountMax=4")


def test_tar_streams_into_the_repository_and_the_record_goes_last(tmp_path, fake_ssh):
    data = make_data_dir(tmp_path)
    repo_dir = tmp_path / "re po $HOME"
    repo_dir.mkdir()
    local = tmp_path / "records" / "run-1"
    result = c.Copier(str(data), str(local), "run-1", method="tar", compression="gzip", fix_label=True, parallel=2,
                      repository="backup@repohost:%s" % repo_dir, ssh_key="/k", ssh_options=["-o", "X=a b"]).copy()
    backup = repo_dir / "run-1"
    assert sorted(os.listdir(str(backup))) == ["16384.tar.gz", "base.tar.gz"]
    assert stat.S_IMODE(os.stat(str(backup)).st_mode) == 0o700
    assert result["repository"] == "backup@repohost:%s/run-1" % repo_dir
    assert result["bytes"] == sum(os.path.getsize(str(backup / n)) for n in os.listdir(str(backup)))
    assert os.listdir(str(local)) == [], "nothing of the copy on the database host"
    extracted = tmp_path / "x"
    extracted.mkdir()
    subprocess.run(["tar", "-C", str(extracted), "-xzf", str(backup / "base.tar.gz")], check=True)
    assert "BACKUP METHOD: streamed" in (extracted / "backup_label").read_text()
    assert ["-o", "X=a b"] == fake_ssh()[0][:2], "an option with a space stays one argument"

    (local / "backup.json").write_text('{"status": "complete"}\n')
    (local / "pg_wal.tar.gz").write_text("wal")
    sent = rp.send_record(str(local), "backup@repohost:%s" % repo_dir)
    assert sent["sent"] == ["pg_wal.tar.gz", "backup.json"]
    assert (backup / "backup.json").read_text() == '{"status": "complete"}\n'
    assert (backup / "pg_wal.tar.gz").read_text() == "wal" and not (backup / rp.RECORD_PART).exists()
    last = fake_ssh()[-1][-1]
    assert last.index("sync -f") < last.index("mv -f"), "the repository is synced before backup.json appears"


@pytest.mark.skipif(not __import__("shutil").which("rsync"), reason="rsync is not installed")
def test_rsync_into_the_repository_through_the_ssh_options(tmp_path, fake_ssh):
    data = make_data_dir(tmp_path)
    repo_dir = tmp_path / "repo"
    result = c.Copier(str(data), str(tmp_path / "records" / "run-1"), "run-1", method="rsync", fix_label=True,
                      repository="repohost:%s" % repo_dir, ssh_user="backup", ssh_key="/k b").copy()
    copy = repo_dir / "run-1" / "data"
    assert "BACKUP METHOD: streamed" in (copy / "backup_label").read_text()
    assert not any((copy / "pg_wal").iterdir()) and (repo_dir / "run-1/tablespaces/16384/PG_15_1/f").exists()
    assert result["bytes"] is None and result["repository"] == "backup@repohost:%s/run-1" % repo_dir
    rsync_calls = [call for call in fake_ssh() if "rsync" in call]
    assert rsync_calls and all(["-i", "/k b"] == call[call.index("-i"):call.index("-i") + 2] for call in rsync_calls)


def test_a_backup_in_the_repository_is_never_overwritten(tmp_path, fake_ssh):
    data = make_data_dir(tmp_path)
    (tmp_path / "repo/run-1").mkdir(parents=True)
    (tmp_path / "repo/run-1/backup.json").write_text("{}")
    with pytest.raises(BackupError, match="already holds a backup"):
        c.Copier(str(data), str(tmp_path / "records/run-1"), "run-1", repository="h:%s/repo" % tmp_path).copy()
    assert os.listdir(str(tmp_path / "repo/run-1")) == ["backup.json"]


def test_ssh_failures_say_what_ssh_said(tmp_path, fake_ssh, monkeypatch):
    data = make_data_dir(tmp_path)
    monkeypatch.setenv("FAKE_SSH_FAIL", "Host key verification failed.")
    with pytest.raises(BackupError, match="ssh exited with 255: Host key verification failed.") as failure:
        c.Copier(str(data), str(tmp_path / "records/run-1"), "run-1", repository="h:/srv").copy()
    assert "known_hosts" in failure.value.hint
    (tmp_path / "records/run-1/backup.json").write_text("{}")
    with pytest.raises(BackupError, match="ssh exited with 255"):
        rp.send_record(str(tmp_path / "records/run-1"), "h:/srv")


def test_a_repository_needs_tar_or_rsync_and_the_record_a_remote_one(tmp_path):
    with pytest.raises(BackupError, match="needs the tar or rsync method"):
        c.Copier("/d", "/b", "l", method="copy", repository="h:/srv")
    with pytest.raises(BackupError, match="tar method sends to a repository on another host only"):
        c.Copier("/d", "/b", "l", method="tar", repository="/srv/local")
    with pytest.raises(BackupError, match="holds no backup.json"):
        rp.send_record(str(tmp_path), "h:/srv")
    with pytest.raises(BackupError, match="is not one"):
        rp.send_record(str(tmp_path), "/srv/local")


def copy_params(**changes):
    spec = c.copy_argument_spec()
    params = dict((name, option.get("default")) for name, option in spec.items())
    params.update(label="nightly", backup_dir="/nonexistent/nightly")
    params.update(changes)
    return params


def test_send_record_in_check_mode_sends_nothing():
    result = c.copy_backup(copy_params(send_record=True, repository="backup@repo:/srv"), check_mode=True)
    assert result["changed"] and result["sent"] == [] and "would send backup.json" in result["msg"]


def test_a_failure_names_the_method_at_the_module_edge():
    with pytest.raises(BackupError, match="Only a repository on another host") as caught:
        c.copy_backup(copy_params(send_record=True, repository="/srv/local", method="rsync"), check_mode=False)
    assert caught.value.fail_kwargs()["method"] == "rsync"
