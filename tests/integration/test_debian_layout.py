"""The Debian layout: a cluster made by pg_createcluster, its configuration in /etc/postgresql/15/<name>/.

One live cluster for the module (tests/testbed/debian.py): Debian's
postgresql-15, archiving from a conf.d file as README.md's Debian section
shows it, the fixture extension in backupctl, and root mapped to README.md's
least-privilege login (Debian's local connections are peer). The role backs it
up as root, as README.md says; rows are committed before and after a noted
time; the backup is then restored to that time into a new plain directory and
into a new Debian cluster. Each test asserts the exact rows, that the restored
configuration points at nothing of the source cluster, and that the live
cluster is untouched: its data, its /etc files byte for byte, still running.
"""

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pytest

from restore_helpers import insert, make_dir, socket_dir
from runner import run_role
from testbed import free_port
from testbed.debian import DebianCluster, as_os_user, run_root

BEFORE = set(range(1, 101))
BATCH1 = set(range(1001, 1101))
BATCH2 = set(range(2001, 2101))


class Live:
    """The live Debian cluster, its backup, and the time between the two batches."""


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def live(testbed_dir):
    root = make_dir(testbed_dir / "debian")
    cluster = DebianCluster.create(root=root / "live")
    h = Live()
    h.cluster, h.root = cluster, root
    try:
        login = "pgx_backup_deb"
        cluster.create_login(login)
        cluster.peer_map_root(login)
        h.db = cluster.create_database()
        cluster.sql("CREATE TABLE t (id int PRIMARY KEY, phase text NOT NULL)", dbname=h.db)
        insert(cluster, h.db, 1, 100, "before")
        h.etc_before = cluster.etc_files()
        run = run_role(cluster, make_dir(root / "play"), exclusive_backup_dest=str(root / "backups"),
                       exclusive_backup_login_user=login, exclusive_backup_include_wal=True,
                       exclusive_backup_wal_archive_dir=str(cluster.archive_dir), exclusive_backup_verify_restore=True)
        h.run = run
        assert run.rc == 0, run.output[-6000:]
        h.backup_dir = root / "backups" / run.result["label"]
        h.record = json.loads((h.backup_dir / "backup.json").read_text())
        insert(cluster, h.db, 1001, 1100, "batch 1")
        time.sleep(1.2)
        h.mid_time = cluster.value("SELECT clock_timestamp()::text")
        time.sleep(1.2)
        insert(cluster, h.db, 2001, 2100, "batch 2")
        last = cluster.value("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
        cluster.sql("SELECT pg_switch_wal()")
        cluster.wait_archived(last)
        h.pid, h.pid_file = cluster.pid, cluster.pid_file.read_bytes()
        yield h
    finally:
        cluster.destroy()


def assert_live_untouched(h):
    """The live cluster runs as before (same postmaster, its pid file), holds every row, and its /etc files are
    what they were before the backup, byte for byte."""
    c = h.cluster
    assert c.postmaster_pid() == h.pid and os.path.exists(f"/proc/{h.pid}")
    assert c.pid_file.read_bytes() == h.pid_file
    assert c.etc_files() == h.etc_before
    ids = {row[0] for row in c.sql("SELECT id FROM t", dbname=h.db)}
    assert ids == BEFORE | BATCH1 | BATCH2
    assert c.value("SELECT pg_is_in_recovery()") is False


def source_traces(h):
    """Strings that name the live cluster: a restored configuration holding any of them points at it."""
    c = h.cluster
    return [str(c.conf_dir), str(c.data_dir), str(c.pid_file), str(c.archive_dir), str(c.socket_dir), c.cluster]


def test_backup_carries_the_configuration_in_etc(live):
    """backup.json records the /etc files and config/ holds them byte for byte; the role's summary says so."""
    c, record = live.cluster, live.record
    assert record["status"] == "complete"
    captured = record["config_files"]
    assert captured["settings"] == {"config_file": str(c.conf_dir / "postgresql.conf"),
                                    "hba_file": str(c.conf_dir / "pg_hba.conf"),
                                    "ident_file": str(c.conf_dir / "pg_ident.conf")}
    paths = {entry["path"]: entry for entry in captured["files"]}
    archiving = next(name for name in live.etc_before if "/conf.d/" in name and "archiving" in name)
    assert set(paths) == {str(c.conf_dir / "postgresql.conf"), str(c.conf_dir / "pg_hba.conf"),
                          str(c.conf_dir / "pg_ident.conf"), archiving, str(c.conf_dir / "conf.d" / "zz-testbed.conf")}
    for path, entry in paths.items():
        stored = live.backup_dir / entry["stored"]
        assert stored.read_bytes() == live.etc_before[path]
        assert entry["sha256"] == _sha(stored) and entry["size"] == stored.stat().st_size
        assert stored.stat().st_mode & 0o077 == 0
    assert captured["dirs"] == [{"what": "include_dir", "path": str(c.conf_dir / "conf.d"),
                                 "named_by": str(c.conf_dir / "postgresql.conf")}]
    assert live.run.result["config_files"]["files"] == captured["files"]
    assert "Configuration from outside the data directory, copied into config/: " + str(c.conf_dir) in live.run.output
    # Debian's data directory holds no configuration of its own: only config/ makes the backup startable.
    assert not (c.data_dir / "postgresql.conf").exists()
    assert live.etc_before == c.etc_files()
