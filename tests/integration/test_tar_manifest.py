"""Tar backups with their backup_manifest, against real servers: PostgreSQL 18's pg_verifybackup checks them.

Per major and compression (none, gzip, zstd), one backup through the role of
a database with a table in a tablespace while a writer commits, the WAL
included. Then:

- pg_verifybackup of PostgreSQL 18 (the test bed's, whatever the server's
  major) verifies the tar backup as it lies; its build has no zstd, so a
  zstd backup is verified after its archives are decompressed beside the
  same manifest (the manifest describes the bytes inside the archives, not
  the compressed files);
- one byte changed inside a member, re-packed, and a member dropped: both
  pg_verifybackup and the restore's check fail naming the file;
- without a tool that reads tar (15's), the restore's check reads every file
  against the manifest itself (manifest.verify_copy), and a truncated archive
  fails it;
- the restore engine (pg_backup_restore) restores the backup and the rows are
  checked against the stop LSN.
"""

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from restore_helpers import stop_restored
from restore_proof import Writer, add_rows_after, check_rows_against_stop, create_table
from runner import run_role, run_tasks, task
from testbed import free_port, provide
from testbed.fixtures import SELECTED, handed_out
from testbed.osuser import chown_postgres, open_to_postgres

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.verify_copy import verify_backup

COMPRESSIONS = ("none", "gzip", "zstd")
SUFFIX = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
TAR_FLAG = {"none": [], "gzip": ["--gzip"], "zstd": ["--zstd"]}
TS_ROWS = 20000


@pytest.fixture(scope="module")
def verifybackup18():
    tool = provide(18).tool("pg_verifybackup")
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout
    assert "(PostgreSQL) 18" in out, out
    return tool


@pytest.fixture(scope="module")
def verifybackup15():
    return provide(15).tool("pg_verifybackup")


def verify(tool, backup_dir):
    proc = subprocess.run([tool, "-F", "t", "-n", "-i", "backup.json", str(backup_dir)], capture_output=True, text=True,
                          check=False, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    return proc.returncode, proc.stdout + proc.stderr


def unpack(archive, target):
    target.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(target), "-xf", str(archive)], check=True)
    return target


def repack(source, archive, compression):
    """``source``'s contents as ``archive``, './'-named members as the copy writes them."""
    archive.unlink()
    subprocess.run(["tar", "-C", str(source), "-cf", str(archive)] + TAR_FLAG[compression] + ["."], check=True)


def decompressed_beside(backup_dir, where, compression):
    """The backup with every archive uncompressed (base.tar, <oid>.tar, ...), the same manifest and record."""
    where.mkdir()
    for path in backup_dir.iterdir():
        if path.name.endswith(SUFFIX[compression]):
            with open(where / (path.name[:-len(SUFFIX[compression])] + ".tar"), "wb") as out:
                subprocess.run(["zstd", "-dcq", str(path)], stdout=out, check=True)
        else:
            shutil.copy(path, where / path.name)
    return where


class Backup:
    """One tar backup of ``cluster`` taken by the role, with a writer running, and what it should hold."""


@pytest.fixture(scope="module", params=[(m, c) for m in SELECTED for c in COMPRESSIONS],
                ids=lambda p: "pg%d-%s" % p)
def tar_backup(request, clusters, testbed_dir):
    """One backup per major and compression, shared by this file's tests (each takes a role run and a restore)."""
    major, compression = request.param
    scratch = Path(tempfile.mkdtemp(prefix=f"t-mf-{major}-{compression}-", dir=testbed_dir))
    scratch.chmod(0o755)
    for pg in handed_out(clusters(major)):
        db = pg.create_database()
        name = f"ts_mf_{db}"
        pg.create_tablespace(name)
        try:
            pg.sql(f"CREATE TABLE in_ts (id int, pad text) TABLESPACE {name}", dbname=db)
            pg.sql(f"INSERT INTO in_ts SELECT g, repeat('x', 100) FROM generate_series(1, {TS_ROWS}) g", dbname=db)
            create_table(pg, db)
            with Writer(pg, db) as writer:
                run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"),
                               exclusive_backup_compression=compression, exclusive_backup_include_wal=True,
                               exclusive_backup_wal_archive_dir=str(pg.archive_dir))
            assert writer.error is None, writer.error
            add_rows_after(pg, db)
            assert run.rc == 0, run.output[-6000:]
            b = Backup()
            b.cluster, b.db, b.compression, b.writer, b.scratch = pg, db, compression, writer, scratch
            b.dir = scratch / "backups" / run.result["label"]
            b.record = json.loads((b.dir / "backup.json").read_text())
            b.oid = str(b.record["tablespaces"][0]["oid"])
            b.manifest = json.loads((b.dir / "backup_manifest").read_text())
            b.seconds = run.seconds
            yield b
        finally:
            pg.sql(f"DROP DATABASE IF EXISTS {db}")
            pg.sql(f"DROP TABLESPACE IF EXISTS {name}")
            shutil.rmtree(scratch, ignore_errors=True)


def test_the_manifest_describes_the_files_inside_the_archives(tar_backup):
    b = tar_backup
    suffix = SUFFIX[b.compression]
    assert sorted(p.name for p in b.dir.iterdir()) == sorted(
        ["backup.json", "backup_manifest", "base" + suffix, b.oid + suffix, "pg_wal" + suffix])
    assert b.record["status"] == "complete" and b.record["manifest"]["format"] == "tar"
    assert b.record["output_bytes"] == {name: (b.dir / name).stat().st_size for name in ("base" + suffix, b.oid + suffix)}
    files = {f["Path"]: f for f in b.manifest["Files"]}
    assert b.record["manifest"]["files"] == len(files)
    assert b.manifest["WAL-Ranges"] == [{"Timeline": b.record["timeline"], "Start-LSN": b.record["start_lsn"],
                                         "End-LSN": b.record["stop_lsn"]}]
    in_ts = [p for p in files if p.startswith(f"pg_tblspc/{b.oid}/")]
    assert in_ts and sum(files[p]["Size"] for p in in_ts) > TS_ROWS * 100, "the tablespace's files, under pg_tblspc/<oid>/"
    assert not [p for p in files if p.startswith("pg_wal/")], "WAL is no file of the manifest"
    # The label listed is the copy's (15+: BACKUP METHOD: streamed), as the archive holds it.
    base = unpack(b.dir / ("base" + suffix), b.scratch / "base")
    label = (base / "backup_label").read_bytes()
    assert files["backup_label"]["Checksum"] == hashlib.sha256(label).hexdigest()
    assert (b"BACKUP METHOD: streamed" in label) == (b.cluster.major >= 15)
    assert "tablespace_map" in files and "global/pg_control" in files
    print(f"pg{b.cluster.major} {b.compression}: {len(files)} files, {b.record['manifest']['bytes']} bytes, "
          f"manifest {b.record['manifest']['duration']}s, copy {b.record['copy_duration']}s, run {b.seconds:.1f}s")


def test_pg_verifybackup_18_verifies_the_tar_backup(tar_backup, verifybackup18):
    b = tar_backup
    rc, out = verify(verifybackup18, b.dir)
    if b.compression == "zstd":
        # The test bed's 18 is built without zstd: it refuses the archives, not the backup.
        assert rc != 0 and "does not support compression with ZSTD" in out, out
        rc, out = verify(verifybackup18, decompressed_beside(b.dir, b.scratch / "unzstd", "zstd"))
    assert rc == 0 and "backup successfully verified" in out, out


def damaged_copy(b, where):
    """The backup's archives uncompressed for zstd (the test bed's 18 reads no zstd), copied to ``where``."""
    if b.compression == "zstd":
        return decompressed_beside(b.dir, where, "zstd"), "none"
    shutil.copytree(b.dir, where)
    return where, b.compression


def test_a_changed_byte_inside_a_member_fails_naming_the_file(tar_backup, verifybackup18):
    b = tar_backup
    backup, compression = damaged_copy(b, b.scratch / "damaged")
    archive = backup / (b.oid + SUFFIX[compression])
    tree = unpack(archive, b.scratch / "ts-tree")
    files = {f["Path"]: f for f in b.manifest["Files"] if f["Path"].startswith(f"pg_tblspc/{b.oid}/")}
    victim = max(files, key=lambda p: files[p]["Size"])
    path = tree / victim[len(f"pg_tblspc/{b.oid}/"):]
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    repack(tree, archive, compression)
    rc, out = verify(verifybackup18, backup)
    assert rc != 0 and f'checksum mismatch for file "{victim}"' in out, out
    with pytest.raises(BackupError, match="pg_verifybackup found the backup .* damaged") as exc:
        verify_backup(str(backup), verifybackup18)
    assert victim in exc.value.msg


def test_a_member_dropped_fails_naming_the_file(tar_backup, verifybackup18):
    b = tar_backup
    backup, compression = damaged_copy(b, b.scratch / "dropped")
    archive = backup / ("base" + SUFFIX[compression])
    tree = unpack(archive, b.scratch / "base-tree")
    (tree / "backup_label").unlink()
    repack(tree, archive, compression)
    rc, out = verify(verifybackup18, backup)
    assert rc != 0 and '"backup_label" is present in the manifest but not on disk' in out, out
    with pytest.raises(BackupError, match='"backup_label" is present in the manifest but not on disk'):
        verify_backup(str(backup), verifybackup18)


def test_without_pg_verifybackup_18_the_manifest_is_checked_by_the_collection(tar_backup, verifybackup15):
    b = tar_backup
    checked = verify_backup(str(b.dir), verifybackup15)
    assert checked["method"] == "manifest" and "reads tar backups from 18 on" in checked["reason"], checked
    assert checked["files"] == len(b.manifest["Files"]), checked
    backup = b.scratch / "truncated"
    shutil.copytree(b.dir, backup)
    archive = backup / (b.oid + SUFFIX[b.compression])
    size = archive.stat().st_size
    with open(archive, "r+b") as handle:
        handle.truncate(size - 100)
    with pytest.raises(BackupError, match=f"{archive.name.replace('.', '[.]')} could not be read back"):
        verify_backup(str(backup), verifybackup15)


def test_pg_restore_checks_and_restores_the_tar_backup(tar_backup):
    import psycopg2
    b = tar_backup
    pg = b.cluster
    root = b.scratch / "restored"
    sock = root / "sock"
    sock.mkdir(parents=True)
    chown_postgres(sock)
    open_to_postgres(b.scratch)
    data = root / "data"
    result = run_tasks([task(
        "pg_backup_restore", backup_dir=str(b.dir), data_directory=str(data), bindir=str(pg.inst.bindir),
        tablespace_mapping={b.oid: str(root / "ts")},
        settings={"port": str(free_port()), "listen_addresses": "", "unix_socket_directories": str(sock),
                  "shared_buffers": "16MB"},
        timeout=180)])[0]
    try:
        assert not result.get("failed"), result.get("msg")
        verified = result["verification"]
        assert result["verified"] is True
        if pg.major >= 18 and b.compression != "zstd":
            assert verified["method"] == "pg_verifybackup" and " -F t -n " in verified["command"], verified
        else:
            assert verified["method"] == "manifest" and verified["reason"], verified
        assert result["restore_command"] == "false", "the WAL came from the backup"
        conn = psycopg2.connect(host=result["socket_dir"], port=result["port"], user="postgres", dbname=b.db)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM in_ts")
                assert cur.fetchone()[0] == TS_ROWS
                cur.execute("SELECT id FROM t")
                ids = [row[0] for row in cur.fetchall()]
        finally:
            conn.close()
        must_in, _must_out = check_rows_against_stop(b.writer, ids, b.record["stop_lsn"])
        assert set(range(1, 1001)) <= set(ids) and must_in > 0
    finally:
        stop_restored(data, pg.inst)
