"""The manifest of a copy in a repository on another host, read back: it lists exactly what the local walkers list.

The repository's ssh is replaced by ``sh -c`` on this host (the script is the
one ssh would run there); the copies are real plain and tar layouts.
"""
import os
import shutil
import subprocess

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import manifest as m
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


class LocalRepository(object):
    """A repository whose host is this one: what Repository.command would run over ssh, run by sh."""

    def __init__(self, path, fail_with=None):
        self.path = str(path)
        self.fail_with = fail_with

    def backup_path(self, backup_dir):
        return self.path + "/" + os.path.basename(backup_dir.rstrip("/"))

    def location(self, path):
        return "repo1:" + path

    def command(self, script):
        return ["sh", "-c", self.fail_with or script]


def plain_copy(root):
    data = root / "data"
    for sub in ("base/1", "global", "pg_wal", "pg_tblspc"):
        (data / sub).mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (data / "base/1/1259").write_bytes(os.urandom(70000))
    (data / "global/pg_control").write_bytes(os.urandom(8192))
    (data / "pg_wal/000000010000000000000002").write_bytes(b"w" * 100)
    (root / "tablespaces/16385/PG_15_1/5").mkdir(parents=True)
    (root / "tablespaces/16385/PG_15_1/5/16390").write_bytes(os.urandom(9000))
    (data / "pg_tblspc/16385").symlink_to("../../tablespaces/16385")
    return ["data", "tablespaces"]


def tar_copy(root, compression):
    staging = root.parent / (root.name + ".src")
    plain_copy(staging)
    suffix = {"none": "", "gzip": ".gz", "zstd": ".zst"}[compression]
    flags = {"none": [], "gzip": ["-z"], "zstd": ["--zstd"]}[compression]
    root.mkdir()
    subprocess.check_call(["tar", "-C", str(staging / "data"), "-cf", str(root / ("base.tar" + suffix))] + flags
                          + ["--exclude=./pg_tblspc/*", "."])
    subprocess.check_call(["tar", "-C", str(staging / "tablespaces/16385"), "-cf",
                           str(root / ("16385.tar" + suffix))] + flags + ["."])
    shutil.rmtree(staging)
    return sorted(os.listdir(root))


@pytest.mark.parametrize("layout", ["plain", "none", "gzip", "zstd"])
def test_read_back_lists_what_the_local_walk_lists(tmp_path, layout):
    repo = tmp_path / "repo"
    copy = repo / "pgx-db1-20261207T100000Z-0001"
    if layout == "plain":
        copy.mkdir(parents=True)
        outputs = plain_copy(copy)
    else:
        repo.mkdir()
        outputs = tar_copy(copy, layout)
    fmt, local = m.copy_entries(str(copy))
    read_fmt, read = m.read_back(LocalRepository(repo), str(copy), outputs)
    assert read_fmt == fmt == ("plain" if layout == "plain" else "tar")
    assert sorted(e["Path"] for e in read) == sorted(e["Path"] for e in local)
    assert len(read) == 4, [e["Path"] for e in read]
    assert {e["Path"]: e for e in read} == {e["Path"]: e for e in local}


def test_a_read_back_manifest_verifies_the_copy_and_catches_a_change(tmp_path):
    repo = tmp_path / "repo"
    backup_dir = tmp_path / "local" / "pgx-db1-20261207T100000Z-0001"
    backup_dir.mkdir(parents=True)
    copy = repo / backup_dir.name
    copy.mkdir(parents=True)
    outputs = plain_copy(copy)
    written = m.write_read_back_manifest(str(backup_dir), LocalRepository(repo), outputs, 1, "0/2000028",
                                         "0/2000100")
    assert written["read_back_from"] == "repo1:%s" % copy and written["files"] == 4
    assert written["verify"] == "pg_verifybackup -m %s/backup_manifest %s/data -n" % (copy, copy)
    assert not (copy / "backup_manifest").exists(), "send_record puts it there, with the record"
    shutil.copy(backup_dir / "backup_manifest", copy / "backup_manifest")
    assert m.verify_copy(str(copy))["files"] == 4
    (copy / "tablespaces/16385/PG_15_1/5/16390").write_bytes(os.urandom(9000))
    with pytest.raises(BackupError, match="16390 does not have the SHA256 checksum"):
        m.verify_copy(str(copy))


def test_a_failed_read_back_says_where_and_writes_no_manifest(tmp_path):
    backup_dir = tmp_path / "local" / "pgx-db1-20261207T100000Z-0001"
    backup_dir.mkdir(parents=True)
    repo = LocalRepository(tmp_path / "repo", fail_with="echo 'tar: data: Cannot open' >&2; exit 2")
    with pytest.raises(BackupError, match="could not be read back") as exc:
        m.write_read_back_manifest(str(backup_dir), repo, ["data"], 1, "0/2000028", "0/2000100")
    assert "repo1:%s/repo/%s" % (tmp_path, backup_dir.name) in exc.value.msg and "Cannot open" in exc.value.msg
    assert "ssh" in exc.value.hint
    assert not (backup_dir / "backup_manifest").exists()


def test_a_read_back_cut_short_is_refused(tmp_path):
    repo = tmp_path / "repo"
    copy = repo / "pgx-db1-20261207T100000Z-0001"
    copy.mkdir(parents=True)
    outputs = plain_copy(copy)
    cut = LocalRepository(repo, fail_with="cd %s && tar -cf - data | head -c 20000" % copy)
    with pytest.raises(BackupError, match="could not be read back"):
        m.read_back(cut, str(copy), outputs)


def test_what_is_not_a_copy_is_not_read_back(tmp_path):
    with pytest.raises(BackupError, match="neither data/"):
        m.read_back(LocalRepository(tmp_path), str(tmp_path / "x"), ["data", "etc"])
    with pytest.raises(BackupError, match="neither data/"):
        m.read_back(LocalRepository(tmp_path), str(tmp_path / "x"), [])
