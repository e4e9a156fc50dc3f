import os
import threading
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import io as cio
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.copy.live_data_directory import (
    NOBODY, make_data_dir, swap_for_link, elsewhere)


def test_balanced_shares_are_near_equal_and_keep_every_job():
    jobs = [(size, "f%d" % i) for i, size in enumerate([100, 90, 50, 40, 30, 20, 10, 5, 5, 1])]
    shares = cio.balanced(jobs, 3)
    assert sorted(j for share in shares for j in share) == sorted(jobs)
    totals = [sum(j[0] for j in share) for share in shares]
    assert max(totals) - min(totals) <= 10
    assert len(cio.balanced(jobs[:2], 4)) == 2, "no empty share for a worker with nothing to do"


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
