"""The Debian layout: a cluster made by pg_createcluster, its configuration in /etc/postgresql/15/<name>/.

One live cluster for the module (tests/testbed/debian.py): Debian's
postgresql-15, archiving from a conf.d file as docs/restore.md's Debian section
shows it, the fixture extension in backupctl, and root mapped to docs/installing.md's
least-privilege login (Debian's local connections are peer). The role backs it
up as root, as README.md's Quick start does; rows are committed before and after a noted
time; the backup is then restored to that time into a new plain directory and
into a new Debian cluster. Each test asserts the exact rows, that the restored
configuration points at nothing of the source cluster, and that the live
cluster is untouched: its data, its /etc files byte for byte, still running.
"""

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from restore_helpers import insert, make_dir, socket_dir, stop_restored
from runner import REPO, ROLE_ENV, ansible_env, localhost_inventory, run_dir, run_playbook, run_role
from testbed import free_port
from testbed.debian import DebianCluster, query_as_postgres, run_root
from testbed.provision import DEBIAN_BIN

# One worker takes the module: its live cluster and backup are made once.
pytestmark = pytest.mark.xdist_group("debian")

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


def names_source(line, h):
    """True when a configuration line names the live cluster: its /etc directory, data, pid file, socket, name,
    or its archive (which only restore_command may read from)."""
    c = h.cluster
    traces = [str(c.conf_dir), str(c.data_dir), str(c.pid_file), str(c.socket_dir), c.cluster]
    if not line.startswith("restore_command"):
        traces.append(str(c.archive_dir))
    return any(trace in line for trace in traces)


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


def restore_play(h, tmp_path, **variables):
    """playbooks/restore.yml as root on localhost with ``variables``: the run, and the restore's vars."""
    variables = dict(restore_hosts="localhost", restore_backup_dir=str(h.backup_dir), restore_target="time",
                     restore_target_time=h.mid_time, restore_wal_archive_dir=str(h.cluster.archive_dir),
                     restore_timeout=180, **variables)
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(variables))
    return run_playbook(REPO / "playbooks" / "restore.yml", localhost_inventory(tmp_path / "inventory.yml"),
                        run_dir(tmp_path, "restore"), args=("-e", f"@{vars_file}"), env=ansible_env(**ROLE_ENV))


SETTINGS_SQL = ("SELECT name, setting FROM pg_settings WHERE name IN ('config_file', 'hba_file', 'ident_file', "
                "'data_directory', 'external_pid_file', 'cluster_name', 'archive_mode', 'archive_command', 'port')")


def active_lines(path):
    """The lines of a configuration file that PostgreSQL reads (not comments)."""
    return [line for line in Path(path).read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_restore_to_a_time_into_a_plain_directory(live, tmp_path):
    """The Debian backup restored beside the live cluster into a new directory: the server starts with a
    configuration derived from the one in /etc, holds exactly the rows before the time, and nothing of its
    configuration names the live cluster."""
    root = make_dir(live.root / "plain")
    data, sock, port = root / "data", socket_dir(root / "sock"), free_port()
    try:
        run = restore_play(live, tmp_path, restore_data_directory=str(data), restore_bindir=str(DEBIAN_BIN),
                           restore_settings={"port": str(port), "unix_socket_directories": str(sock),
                                             "listen_addresses": ""})
        assert run.rc == 0, run.output[-6000:]
        assert "promoted" in run.output
        rows = {r[0] for r in query_as_postgres(sock, port, "SELECT id FROM t", live.db)}
        assert rows == BEFORE | BATCH1
        settings = dict(query_as_postgres(sock, port, SETTINGS_SQL))
        assert settings == {"config_file": str(data / "postgresql.conf"), "hba_file": str(data / "pg_hba.conf"),
                            "ident_file": str(data / "pg_ident.conf"), "data_directory": str(data),
                            "external_pid_file": "", "cluster_name": "", "archive_mode": "off",
                            "archive_command": "(disabled)", "port": str(port)}
        sources = {r[0] for r in query_as_postgres(sock, port, "SELECT DISTINCT sourcefile FROM pg_file_settings")}
        assert sources == {str(data / "postgresql.conf"), str(data / "postgresql.auto.conf")}
        for name in ("postgresql.conf", "postgresql.auto.conf", "pg_hba.conf", "pg_ident.conf"):
            for line in active_lines(data / name):
                assert not names_source(line, live), (name, line)
        # pg_hba.conf and pg_ident.conf are the live cluster's, as backed up (root's map to the backup login too).
        assert (data / "pg_hba.conf").read_bytes() == live.etc_before[str(live.cluster.conf_dir / "pg_hba.conf")]
        # The archiving file of conf.d came along, inlined, with its archive_command commented out.
        conf = (data / "postgresql.conf").read_text()
        assert "begin of " + str(live.cluster.conf_dir / "conf.d") in conf
        assert "# pgexclusive.backup restore: archive_command" in conf
    finally:
        stop_restored(data, live.cluster.inst)
    assert_live_untouched(live)


def test_restore_to_a_time_into_a_debian_cluster(live, tmp_path):
    """The backup restored into a new cluster made by pg_createcluster: that cluster keeps its own
    configuration in /etc byte for byte, is started with pg_ctlcluster, reaches the time, and holds exactly
    the rows before it."""
    target = DebianCluster.create(root=live.root / "target", archiving=False, start=False)
    try:
        etc_before = target.etc_files()
        run = restore_play(live, tmp_path, restore_debian_cluster=target.cluster, restore_force=True)
        assert run.rc == 0, run.output[-6000:]
        assert f"restored into {target.data_dir}" in run.output and "promoted" in run.output
        pid = target.postmaster_pid()
        assert pid and os.path.exists(f"/proc/{pid}")
        status = run_root(["pg_lsclusters", "--no-header", target.major, target.name]).stdout.split()
        assert status[3] == "online", status
        rows = {r[0] for r in query_as_postgres(target.socket_dir, target.port, "SELECT id FROM t", live.db)}
        assert rows == BEFORE | BATCH1
        settings = dict(query_as_postgres(target.socket_dir, target.port, SETTINGS_SQL))
        assert settings["config_file"] == str(target.conf_dir / "postgresql.conf")
        assert settings["data_directory"] == str(target.data_dir)
        assert settings["cluster_name"] == target.cluster and settings["port"] == str(target.port)
        assert settings["archive_mode"] == "off"
        assert target.etc_files() == etc_before
        for line in active_lines(target.data_dir / "postgresql.auto.conf"):
            assert not names_source(line, live), line
        # pg_createcluster's own data directory was set aside, not deleted.
        aside = list(target.data_dir.parent.glob(target.name + ".pgx-aside-*"))
        assert len(aside) == 1 and (aside[0] / "PG_VERSION").exists()
    finally:
        target.destroy()
    assert_live_untouched(live)


def test_a_plain_restore_into_a_debian_clusters_data_directory_is_refused(live, tmp_path):
    """pg_ctlcluster would run such a directory with the configuration in /etc, not the restored one: the
    restore names the cluster to restore into instead, and changes nothing."""
    target = DebianCluster.create(root=live.root / "refused", archiving=False, start=False)
    try:
        before = sorted(os.listdir(target.data_dir))
        run = restore_play(live, tmp_path, restore_data_directory=str(target.data_dir), restore_force=True,
                           restore_bindir=str(DEBIAN_BIN))
        assert run.rc != 0
        assert f"is the Debian cluster {target.cluster}'s" in run.output
        assert f"debian_cluster: {target.cluster} (the role: restore_debian_cluster)" in run.output
        assert sorted(os.listdir(target.data_dir)) == before
        assert not list(target.data_dir.parent.glob(target.name + ".pgx-aside-*"))
    finally:
        target.destroy()
    assert_live_untouched(live)
