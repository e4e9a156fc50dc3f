"""The restore check stays inside its scratch directory, on the production layout.

The live server here has pg_wal on its own directory (initdb --waldir), so its
pg_wal is a symbolic link, and the backups are taken the old way: a copy that
still carries that link (and, for tar, pg_tblspc links to the live
tablespaces). verify_restore must neither write into the live WAL directory, a
live tablespace or the archive, nor cost the live server a committed row.
"""

import hashlib
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    LABEL_FILE, parse_backup_label, restorable_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.verify_restore import verify_restore
from testbed import Cluster, provide
from testbed.fixtures import SELECTED

TIMELINE_1 = re.compile(r"^00000001[0-9A-F]{16}(\.[0-9A-F]{8}\.backup)?$")


class WalLinkedCluster(Cluster):
    """A cluster whose pg_wal links to <root>/wal, as initdb --waldir makes it."""

    def _pg(self, argv):
        if argv[0] == "initdb" and not any(str(arg).startswith("--waldir") for arg in argv):
            argv = [*argv, f"--waldir={self.root / 'wal'}"]
        return super()._pg(argv)


def live_wal(cluster):
    """The live server's WAL directory: the target of its pg_wal link."""
    return (cluster.data_dir / "pg_wal").resolve()


@pytest.fixture(scope="module", params=SELECTED, ids=lambda m: f"pg{m}")
def linked_cluster(request, testbed_dir):
    cluster = WalLinkedCluster.create(provide(request.param), testbed_dir / f"wal-linked-{request.param}")
    yield cluster
    cluster.destroy()


@pytest.fixture
def live(linked_cluster):
    """The cluster, running and out of backup mode, with a fresh table ``t``."""
    if linked_cluster.pid is None:
        linked_cluster.start()
    assert (linked_cluster.data_dir / "pg_wal").is_symlink()
    linked_cluster.sql("DROP TABLE IF EXISTS t")
    linked_cluster.sql("CREATE TABLE t (id int PRIMARY KEY)")
    yield linked_cluster
    if linked_cluster.pid is None:
        linked_cluster.start()
    linked_cluster.end_backup_if_any()


def connect(socket_dir, port, user="postgres", dbname="postgres"):
    conn = psycopg2.connect(host=socket_dir, port=port, user=user, dbname=dbname, connect_timeout=5)
    conn.autocommit = True
    return conn


def insert(cluster, count, table="t"):
    """Commit ``count`` more rows, one transaction per 100."""
    first = cluster.value(f"SELECT coalesce(max(id), 0) + 1 FROM {table}")
    for start in range(first, first + count, 100):
        cluster.sql(f"INSERT INTO {table} SELECT generate_series(%s, %s)", (start, min(start + 99, first + count - 1)))
    return count


def stop_and_archive(cluster):
    """Stop the backup; return the last WAL segment it needs, once archived."""
    stop_wal_file = cluster.walfile(cluster.stop_backup())
    cluster.wait_archived(stop_wal_file)
    return stop_wal_file


def restorable(cluster, text):
    return restorable_label(text) if cluster.api == "extension" else text


def plain_backup_keeping_links(cluster, backup_dir):
    """start, `cp -a` of the data directory (pg_wal stays a link to the live WAL), stop.

    Returns the number of rows committed meanwhile.
    """
    data = backup_dir / "data"
    backup_dir.mkdir()
    cluster.start_backup(f"isolation {uuid.uuid4()}")
    rows = insert(cluster, 500)
    subprocess.run(["cp", "-a", str(cluster.data_dir), str(data)], check=True)
    for name in ("postmaster.pid", "postmaster.opts"):
        (data / name).unlink()
    rows += insert(cluster, 500)
    stop_and_archive(cluster)
    assert (data / "pg_wal").is_symlink(), "the dangerous layout: the copy's pg_wal links to the live WAL"
    (data / LABEL_FILE).write_text(restorable(cluster, (data / LABEL_FILE).read_text()))
    return rows


def old_tar_of_data(data_dir, staging, output):
    """GNU tar of the data directory as the collection used to run it: pg_wal and pg_tblspc/<oid> stay links."""
    return ["tar", "-C", str(data_dir), "-cf", str(output), "--anchored",
            *(f"--exclude=./{name}" for name in (LABEL_FILE, "postmaster.pid", "postmaster.opts", "pg_wal/*")),
            "--no-anchored", ".", "-C", str(staging), LABEL_FILE]


def crash_and_restart(cluster):
    """cluster.crash(), then start once the killed postmaster is reaped.

    Until then its PID still answers kill(pid, 0), which PostgreSQL takes for a
    running postmaster ("lock file already exists"); the init process here reaps
    orphans only every few seconds.
    """
    postmaster = cluster.pid
    cluster.crash()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{postmaster}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    cluster.start()


def old_tar_backup(cluster, backup_dir, staging):
    """base.tar the old way (pg_wal and pg_tblspc/<oid> links kept) with a restorable label; stops the
    backup. Returns (start WAL file, stop WAL file)."""
    label = cluster.backup_label()
    (staging / LABEL_FILE).write_text(restorable(cluster, label))
    proc = subprocess.run(old_tar_of_data(cluster.data_dir, staging, backup_dir / "base.tar"),
                          capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return parse_backup_label(label)["start_wal_file"], stop_and_archive(cluster)


def listing(path):
    return sorted(p.name for p in path.iterdir())


def wal_files(cluster):
    """name -> (inode, size, mtime) of the live WAL directory's files, but the segment being written."""
    current = cluster.value("SELECT pg_walfile_name(pg_current_wal_lsn())")
    wal = live_wal(cluster)
    return {p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
            for p in wal.iterdir() if p.is_file() and p.name != current}


def tree_digest(path):
    """relative path -> sha256 of every file under ``path``."""
    digests = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as handle:
                digests[os.path.relpath(full, path)] = hashlib.sha256(handle.read()).hexdigest()
    return digests


def failed_archivings(cluster):
    return cluster.value("SELECT failed_count FROM pg_stat_archiver")


def test_check_leaves_the_live_wal_archive_and_rows_alone(live, scratch):
    rows = insert(live, 1000)
    backup_dir = scratch / "backup"
    rows += plain_backup_keeping_links(live, backup_dir)
    rows += insert(live, 1000)
    live.sql("CHECKPOINT")
    wal_before = listing(live_wal(live))
    archive_before = listing(live.archive_dir)
    failed_before = failed_archivings(live)

    result = verify_restore(str(backup_dir), str(live.data_dir), wal_archive_dir=str(live.archive_dir),
                            timeout=120, connect=connect)
    assert result["ok"] is True, result
    assert listing(live_wal(live)) == wal_before, "the check wrote into or removed from the live WAL directory"
    foreign_status = [n for n in listing(live_wal(live) / "archive_status") if not n.startswith("00000001")]
    assert not foreign_status, foreign_status
    new_in_archive = sorted(set(listing(live.archive_dir)) - set(archive_before))
    assert all(TIMELINE_1.match(name) for name in new_in_archive), new_in_archive
    assert failed_archivings(live) == failed_before

    # Rows the live server commits after the check must survive its crash too.
    rows += insert(live, 1000)
    crash_and_restart(live)
    assert live.value("SELECT count(*) FROM t") == rows
    assert result["check_ran"] is True


def test_tar_copy_linking_the_live_tablespace_leaves_it_alone(live, scratch):
    name = f"ts_{uuid.uuid4().hex[:8]}"
    location = live.create_tablespace(name)
    try:
        live.sql(f"CREATE TABLE in_ts (id int PRIMARY KEY) TABLESPACE {name}")
        insert(live, 1000, "in_ts")
        oid = str(live.value("SELECT oid FROM pg_tablespace WHERE spcname = %s", (name,)))
        backup_dir = scratch / "backup"
        backup_dir.mkdir()
        staging = scratch / "staging"
        staging.mkdir()
        live.start_backup(f"isolation {uuid.uuid4()}")
        insert(live, 1000, "in_ts")
        proc = subprocess.run(["tar", "-C", str(location), "-cf", str(backup_dir / f"{oid}.tar"), "."],
                              capture_output=True, text=True, check=False)
        assert proc.returncode in (0, 1), proc.stderr
        old_tar_backup(live, backup_dir, staging)
        members = subprocess.run(["tar", "-tvf", str(backup_dir / "base.tar")], capture_output=True, text=True,
                                 check=True).stdout
        assert f"./pg_tblspc/{oid} -> {location}" in members, "base.tar links the live tablespace"
        assert "./pg_wal -> " in members, "base.tar carries the pg_wal link"
        # Rows after the stop: the live tablespace's pages then differ from what the copy would write.
        insert(live, 1000, "in_ts")
        live.sql("CHECKPOINT")
        tablespace_before = tree_digest(location)
        wal_before = listing(live_wal(live))

        result = verify_restore(str(backup_dir), str(live.data_dir), wal_archive_dir=str(live.archive_dir),
                                timeout=120, connect=connect)
        assert result["ok"] is True, result
        assert tree_digest(location) == tablespace_before, "the check wrote into the live tablespace"
        assert listing(live_wal(live)) == wal_before, "the check wrote into or removed from the live WAL directory"
    finally:
        live.sql("DROP TABLE IF EXISTS in_ts")
        live.sql(f"DROP TABLESPACE IF EXISTS {name}")


def test_wal_of_the_backup_goes_beside_the_live_wal_not_into_it(live, scratch):
    """A tar backup carrying its own WAL (pg_wal.tar, as include_wal makes it), checked without the archive."""
    rows = insert(live, 1000)
    backup_dir = scratch / "backup"
    backup_dir.mkdir()
    staging = scratch / "staging"
    staging.mkdir()
    live.start_backup(f"isolation {uuid.uuid4()}")
    rows += insert(live, 1000)
    start_wal_file, stop_wal_file = old_tar_backup(live, backup_dir, staging)
    # Segment names of one timeline compare as text.
    segments = [n for n in listing(live.archive_dir) if len(n) == 24 and start_wal_file <= n <= stop_wal_file]
    subprocess.run(["tar", "-C", str(live.archive_dir), "-cf", str(backup_dir / "pg_wal.tar"), *segments], check=True)
    rows += insert(live, 1000)
    live.sql("CHECKPOINT")
    before = wal_files(live)

    result = verify_restore(str(backup_dir), str(live.data_dir), wal_archive_dir=None, timeout=120, connect=connect)
    assert result["ok"] is True and result["check_ran"] is True, result
    assert wal_files(live) == before, "the check wrote into the live WAL directory"
    rows += insert(live, 1000)
    crash_and_restart(live)
    assert live.value("SELECT count(*) FROM t") == rows


def test_tablespace_without_a_copy_refuses_to_start(live, scratch):
    """A plain copy whose pg_tblspc link still names the live tablespace, and no copy of it."""
    name = f"ts_{uuid.uuid4().hex[:8]}"
    location = live.create_tablespace(name)
    try:
        live.sql(f"ALTER TABLE t SET TABLESPACE {name}")
        backup_dir = scratch / "backup"
        plain_backup_keeping_links(live, backup_dir)
        insert(live, 1000)
        live.sql("CHECKPOINT")
        tablespace_before = tree_digest(location)

        with pytest.raises(BackupError) as caught:
            verify_restore(str(backup_dir), str(live.data_dir), wal_archive_dir=str(live.archive_dir),
                           timeout=120, connect=connect)
        assert "could not run" in caught.value.msg and "no copy" in caught.value.msg, str(caught.value)
        assert caught.value.facts["check_ran"] is False
        assert tree_digest(location) == tablespace_before, "the check wrote into the live tablespace"
    finally:
        live.sql("DROP TABLE IF EXISTS t")
        live.sql(f"DROP TABLESPACE IF EXISTS {name}")


def test_scratch_out_of_the_servers_reach_means_the_check_could_not_run(live, scratch):
    backup_dir = scratch / "backup"
    plain_backup_keeping_links(live, backup_dir)
    closed = scratch / "closed"
    closed.mkdir(mode=0o700)   # root's, like a destination under /root
    wal_before = listing(live_wal(live))

    with pytest.raises(BackupError) as caught:
        verify_restore(str(backup_dir), str(live.data_dir), wal_archive_dir=str(live.archive_dir),
                       work_parent=str(closed), timeout=60, connect=connect)
    message = str(caught.value)
    assert "could not run" in message and "says nothing about the backup" in message, message
    assert "not restorable" not in message, message
    assert caught.value.facts["check_ran"] is False
    assert listing(closed) == [], "the scratch directory is removed"
    assert listing(live_wal(live)) == wal_before
