"""Hostile backups against the real pg_backup_restore module, run as root: a backup is data, never a key to the host.

Per major, one tar backup (compression none) and one plain copy taken by the
exclusive_backup role of a database with a table in a tablespace. From them,
backups are built by hand as an attacker with write access to a repository
would: members appended to base.tar (a hard link to a root-only file, a
character device, a FIFO, a link out of the target, a file under a link of
the archive), base.tar re-compressed with zstd for the .tar.zst path, and a
plain copy whose tablespaces/<oid> is a link to a root-only directory. The
attacker recomputes backup_manifest with the collection's own writer; the
restores run with verify: false, as a user told that the manifest is missing
would. One playbook runs every restore. Each must fail naming the member,
and afterwards:

- the victims (a root-only 0600 file, a root-only directory with a 0600 key
  in it, outside every target) keep inode, owner, mode, mtime, content and
  link count;
- no device node or FIFO exists under the target;
- nothing outside the target is owned by postgres, and no restored file
  holds the key;
- the live server is out of backup mode and still holds its rows.
"""

import io
import json
import os
import pwd
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from restore_helpers import make_dir, restore_port, socket_dir, stop_restored
from runner import run_role, run_tasks, task
from testbed.fixtures import SELECTED, handed_out
from testbed.osuser import OS_USER, open_to_postgres

from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import write_manifest

KEY = b"root-only key: never postgres's\n"
ROWS = 500


def victims(where):
    """A root-only 0600 file and a root-only 0700 directory holding a 0600 key, outside every target."""
    where.mkdir(mode=0o755, parents=True)
    shadow = where / "shadow"
    shadow.write_bytes(KEY)
    shadow.chmod(0o600)
    secret = where / "secret"
    secret.mkdir(mode=0o700)
    (secret / "key").write_bytes(KEY)
    (secret / "key").chmod(0o600)
    for path in (where, shadow, secret, secret / "key"):
        os.chown(str(path), 0, 0)
    return shadow, secret


def snapshot(path):
    st = os.lstat(str(path))
    content = path.read_bytes() if stat.S_ISREG(st.st_mode) else sorted(os.listdir(str(path)))
    return {"inode": st.st_ino, "owner": (st.st_uid, st.st_gid), "mode": oct(st.st_mode), "mtime": st.st_mtime_ns,
            "links": st.st_nlink, "content": content}


def member(name, kind, linkname="", mode=0o600, data=None):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid, info.mtime = kind, linkname, mode, 0, 0, 1700000000
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    if data is not None:
        info.size = len(data)
    return info, data


def hostile_tar(source, where, members, zstd=False):
    """A copy of the tar backup ``source`` whose base.tar has ``members`` appended (and is zstd-compressed if asked),
    with the manifest and record an attacker recomputes."""
    shutil.copytree(str(source), str(where))
    base = where / "base.tar"
    with tarfile.open(str(base), "a", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    if zstd:
        subprocess.run(["zstd", "-q", "--rm", "-o", str(where / "base.tar.zst"), str(base)], check=True)
    recompute(where)
    return where


def recompute(where):
    record = json.loads((where / "backup.json").read_text())
    write_manifest(str(where), record["timeline"], record["start_lsn"], record["stop_lsn"])
    record["outputs"] = sorted(p.name for p in where.iterdir() if p.name not in ("backup.json", "backup_manifest"))
    record["output_bytes"] = {name: (where / name).stat().st_size for name in record["outputs"] if (where / name).is_file()}
    (where / "backup.json").write_text(json.dumps(record))


def slug(case):
    return case.replace(" ", "-").replace(".", "")


class Hostile:
    """The backups, the victims, one restore per case and what each left."""


CASES = ("hard link to a root-only file", "hard link on the .tar.zst path", "character device on the .tar.zst path",
         "FIFO", "symbolic link out", "member under a link of the archive", "plain tablespace linked out")


@pytest.fixture(scope="module", params=SELECTED, ids=lambda m: f"pg{m}")
def hostile(request, clusters, testbed_dir):
    major = request.param
    root = Path(tempfile.mkdtemp(prefix=f"hostile-{major}-", dir=str(testbed_dir)))
    root.chmod(0o755)
    for pg in handed_out(clusters(major)):
        db = pg.create_database()
        ts = f"ts_hb_{db}"
        pg.create_tablespace(ts)
        restored = []
        try:
            pg.sql(f"CREATE TABLE t (id int PRIMARY KEY) TABLESPACE {ts}", dbname=db)
            pg.sql(f"INSERT INTO t SELECT generate_series(1, {ROWS})", dbname=db)
            scratch = make_dir(root / "play")
            backups = root / "backups"
            run = run_role(pg, scratch, exclusive_backup_dest=str(backups), exclusive_backup_compression="none")
            assert run.rc == 0, run.output[-6000:]
            tar_dir = backups / run.result["label"]
            run = run_role(pg, scratch, exclusive_backup_dest=str(backups), exclusive_backup_method="copy")
            assert run.rc == 0, run.output[-6000:]
            plain_dir = backups / run.result["label"]
            oid = str(json.loads((tar_dir / "backup.json").read_text())["tablespaces"][0]["oid"])
            h = Hostile()
            h.pg, h.db, h.root = pg, db, root
            h.victims, h.before = {}, {}
            for case in CASES:
                shadow, secret = h.victims[case] = victims(root / "victims" / slug(case))
                h.before[case] = {p: snapshot(p) for p in (shadow, secret, secret / "key")}
            hand_made = root / "hand-made"
            hand_made.mkdir()

            def shadow(case):
                return str(h.victims[case][0])

            def secret(case):
                return str(h.victims[case][1])

            built = {
                "hard link to a root-only file": (
                    [member("./pgx_stolen", tarfile.LNKTYPE, linkname=shadow("hard link to a root-only file"))],
                    "./pgx_stolen", False),
                "hard link on the .tar.zst path": (
                    [member("./pgx_stolen", tarfile.LNKTYPE, linkname=shadow("hard link on the .tar.zst path"))],
                    "./pgx_stolen", True),
                "character device on the .tar.zst path": (
                    [member("./pgx_null", tarfile.CHRTYPE, mode=0o666)], "./pgx_null", True),
                "FIFO": ([member("./pgx_fifo", tarfile.FIFOTYPE, mode=0o666)], "./pgx_fifo", False),
                "symbolic link out": (
                    [member("./pgx_secret", tarfile.SYMTYPE, linkname=secret("symbolic link out"))], "./pgx_secret", False),
                "member under a link of the archive": (
                    [member("./pg_tblspc/99999", tarfile.SYMTYPE, linkname=secret("member under a link of the archive")),
                     member("./pg_tblspc/99999/planted", tarfile.REGTYPE, mode=0o4755, data=b"#!/bin/sh\n")],
                    "./pg_tblspc/99999/planted", False),
            }
            h.backup, h.named = {}, {}
            for case, (members, named, zstd) in built.items():
                h.backup[case] = hostile_tar(tar_dir, hand_made / slug(case), members, zstd)
                h.named[case] = [named, "base.tar.zst" if zstd else "base.tar"]
            plain = hand_made / "plain-tablespace-linked-out"
            shutil.copytree(str(plain_dir), str(plain), symlinks=True)
            shutil.rmtree(str(plain / "tablespaces" / oid))
            (plain / "tablespaces" / oid).symlink_to(secret("plain tablespace linked out"))
            h.backup["plain tablespace linked out"] = plain
            h.named["plain tablespace linked out"] = [str(plain / "tablespaces" / oid)]
            h.targets, tasks = {}, []
            for case in CASES:
                target = root / ("restored-" + slug(case))
                h.targets[case] = target
                restored.append(target / "data")
                sock = socket_dir(root / ("sock-%d" % len(tasks)))
                tasks.append(task(
                    "pg_backup_restore", backup_dir=str(h.backup[case]), data_directory=str(target / "data"),
                    tablespace_mapping={oid: str(target / "ts")}, wal_archive_dir=str(pg.archive_dir),
                    bindir=str(Path(pg.inst.tool("pg_ctl")).parent), verify=False, timeout=120,
                    settings={"port": str(restore_port()), "listen_addresses": "", "unix_socket_directories": str(sock),
                              "shared_buffers": "16MB"}))
            open_to_postgres(root)
            results = run_tasks(tasks)
            h.results = dict(zip(CASES, results))
            for data in restored:
                stop_restored(data, pg.inst)
            yield h
        finally:
            for data in restored:
                stop_restored(data, pg.inst)
            pg.sql(f"DROP DATABASE IF EXISTS {db}")
            pg.sql(f"DROP TABLESPACE IF EXISTS {ts}")
            shutil.rmtree(str(root), ignore_errors=True)


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_backup_fails_naming_the_member_and_hands_over_nothing(hostile, case):
    h = hostile
    before = h.before[case]
    assert {p: snapshot(p) for p in before} == before, "the victims are unchanged"
    target = h.targets[case]
    postgres = pwd.getpwnam(OS_USER).pw_uid
    for top, _dirs, files in os.walk(str(target)):
        for name in [top] + [os.path.join(top, f) for f in files]:
            st = os.lstat(name)
            assert not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode)), name
            assert not (st.st_mode & (stat.S_ISUID | stat.S_ISGID)) or stat.S_ISDIR(st.st_mode), name
            if stat.S_ISREG(st.st_mode):
                with open(name, "rb") as handle:
                    assert KEY not in handle.read(), f"{name} holds the root-only key"
    for top, dirs, files in os.walk(str(h.root / "victims" / slug(case))):
        for name in [top] + [os.path.join(top, n) for n in dirs + files]:
            assert os.lstat(name).st_uid != postgres, f"{name}, outside the target, is postgres's"
    result = h.results[case]
    msg = result.get("msg", "")
    assert result.get("failed") and all(name in msg for name in h.named[case]), (case, msg, result.get("_output", "")[-3000:])
    assert "refuses" in msg or "follows no link of a backup" in msg, msg


def test_the_live_server_is_untouched(hostile):
    h = hostile
    assert not h.pg.in_backup()
    assert h.pg.value("SELECT count(*) FROM t", dbname=h.db) == ROWS
