"""playbooks/restore.yml over SSH onto another host of the fleet, the backup fetched from the repository host.

Host A (the fleet's PostgreSQL 15 host) is backed up with the backup role to
the repository host (rsync, its WAL included) while a writer commits rows;
more rows are committed after the run. The restore role then runs on host B,
another database host (over SSH, with become), with restore_repository
naming the repository's destination: B's root fetches the backup from the
repository with rsync over ssh (the fleet's repository key), and restores it
into a new data directory with PostgreSQL 15's binaries. The fleet's hosts
share one filesystem, so B has those binaries; it does not have A's WAL
archive (restore_wal_archive_dir is not given): the WAL comes from the
backup.

The restored server (running in B's network namespace, reached here through
its Unix socket) holds exactly the rows committed before the backup's stop; A
runs on untouched, and nothing in the repository changed.
"""

import json
import os

import pytest

from restore_proof import Writer, add_rows_after, check_restored_rows
from runner import REPO, ansible_env, run_dir, run_playbook
from test_fleet import prepare_table, run_backup
from testbed import Cluster, free_port
from testbed.osuser import chown_postgres

from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.server import postmaster_pid

# One fleet per session: with pytest-xdist (--dist loadgroup) these tests share one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet")]


def repository_state(top):
    """Every path under the repository, and the bytes of every backup.json: what 'nothing changed' compares."""
    paths, records = [], {}
    for root, dirs, files in os.walk(top):
        for name in sorted(dirs + files):
            rel = os.path.relpath(os.path.join(root, name), top)
            paths.append(rel)
            if name == "backup.json":
                with open(os.path.join(root, name), "rb") as handle:
                    records[rel] = handle.read()
    return sorted(paths), records


def restore_vars(fleet, host, where, major_bindir, system_identifier):
    """The restore role's variables: the repository (from the backup role's), a new directory, a port of its own."""
    backup_side = fleet.repository_vars()
    sock = where / "sock"
    sock.mkdir(parents=True)
    chown_postgres(sock)
    port = free_port()
    return port, {
        "restore_hosts": host.name,
        "restore_repository": backup_side["exclusive_backup_repository"],
        "restore_ssh_key": backup_side["exclusive_backup_ssh_key"],
        "restore_ssh_options": backup_side["exclusive_backup_ssh_options"],
        "restore_system_identifier": system_identifier,
        "restore_data_directory": str(where / "data"),
        "restore_bindir": major_bindir,
        "restore_settings": {"port": str(port), "listen_addresses": "", "unix_socket_directories": str(sock),
                             "shared_buffers": "16MB"},
        "restore_timeout": 180,
    }


def test_a_backup_in_the_repository_restores_onto_another_host(fleet, fleet_hosts, scratch):
    source = next(h for h in fleet_hosts if h.cluster.major == 15)
    target = next(h for h in fleet_hosts if h is not source)
    cluster = source.cluster
    db = prepare_table(cluster)
    with Writer(cluster, db) as writer:
        run = run_backup(fleet, scratch, hosts=source.name, exclusive_backup_method="rsync",
                         exclusive_backup_include_wal=True,
                         exclusive_backup_wal_archive_dir=str(cluster.archive_dir), **fleet.repository_vars())
    assert run.rc == 0, run.output[-6000:]
    assert writer.error is None, writer.error
    add_rows_after(cluster, db)
    label = run.results[source.name]["result"]["label"]
    record = json.loads((fleet.repository_dir / label / "backup.json").read_text())
    assert record["status"] == "complete" and os.path.isdir(fleet.repository_dir / label / "pg_wal")
    manifest = run.results[source.name]["result"]["manifest"]
    assert manifest["read_back_from"] == f"{fleet.repository()}/{label}", manifest
    assert (fleet.repository_dir / label / "backup_manifest").read_text().count('"Path"') == manifest["files"] > 900, \
        "the copy read back from the repository, its manifest sent there with the record"

    live_pid, live_rows = cluster.pid, cluster.value("SELECT count(*) FROM t", dbname=db)
    target_pid = target.cluster.pid
    repository_before = repository_state(fleet.repository_dir)
    where = scratch / f"restore-on-{target.name}"
    port, variables = restore_vars(fleet, target, where, str(cluster.inst.bindir), record["system_identifier"])
    directory = run_dir(scratch, "restore")
    inventory = fleet.write_inventory(directory / "inventory.json")
    (directory / "vars.json").write_text(json.dumps(variables))
    restored = Cluster(cluster.inst, where, port)
    try:
        restore = run_playbook(REPO / "playbooks" / "restore.yml", inventory, directory,
                               args=["-e", f"@{directory / 'vars.json'}"],
                               env=ansible_env(ANSIBLE_HOST_KEY_CHECKING="1", ANSIBLE_PIPELINING="0"))
        restored.pid = postmaster_pid(str(where / "data"))
        assert restore.rc == 0, restore.output[-6000:]
        assert f"{fleet.repository()}/{label} fetched into {where}/data.fetch/{label}" in restore.output, \
            "the newest complete backup of the cluster, fetched by the target host"
        assert f"Restoring {where}/data.fetch/{label} (label {label})" in restore.output
        assert "promoted" in restore.output

        assert "proved against its backup_manifest by pg_verifybackup" in restore.output, "the fetched copy was proved"
        must_in, must_out = check_restored_rows(restored, db, writer, record["stop_lsn"], what=target.name)
        assert restored.value("SELECT current_setting('archive_mode')") == "off"
    finally:
        restored.stop(mode="fast")
    assert not (where / "data.fetch").exists(), "what the fetch created is removed (restore_fetch_keep false)"
    assert_a_changed_repository_copy_is_refused(fleet, target, scratch, label, cluster, record, inventory)

    assert repository_state(fleet.repository_dir) == repository_before, "the repository changed"
    assert cluster.pid == live_pid and cluster.value("SELECT count(*) FROM t", dbname=db) == live_rows
    assert not cluster.in_backup() and not (cluster.data_dir / "backup_label").exists()
    assert not [n for n in os.listdir(cluster.archive_dir) if n.startswith("00000002")], \
        "a restored server wrote into the source's archive"
    assert target.cluster.pid == target_pid and target.cluster.value("SELECT 1") == 1, "the target's own server"
    print(f"\nbackup of {source.name} (PG{cluster.major}) in the repository, restored on {target.name} over SSH: "
          f"backup {run.seconds:.1f} s (its manifest read back from the repository in {manifest['duration']:.2f} s, "
          f"{manifest['files']} files, {manifest['bytes']} bytes), fetch and restore {restore.seconds:.1f} s; "
          f"rows committed during the backup: "
          f"{must_in} before the stop, {must_out} after it")


def assert_a_changed_repository_copy_is_refused(fleet, target, scratch, label, cluster, record, inventory):
    """A repository host that changes a relation file of the copy: the fetched copy fails its proof, nothing is laid out."""
    victim = fleet.repository_dir / label / "data" / "global" / "pg_control"
    original = victim.read_bytes()
    victim.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
    where = scratch / f"refused-on-{target.name}"
    try:
        _port, variables = restore_vars(fleet, target, where, str(cluster.inst.bindir), record["system_identifier"])
        directory = run_dir(scratch, "restore-changed")
        (directory / "vars.json").write_text(json.dumps(variables))
        refused = run_playbook(REPO / "playbooks" / "restore.yml", inventory, directory,
                               args=["-e", f"@{directory / 'vars.json'}"],
                               env=ansible_env(ANSIBLE_HOST_KEY_CHECKING="1", ANSIBLE_PIPELINING="0"))
    finally:
        victim.write_bytes(original)
    assert refused.rc != 0, refused.output[-4000:]
    assert "global/pg_control" in refused.output and (
        "does not match its backup_manifest" in refused.output or "checksum mismatch" in refused.output), \
        refused.output[-4000:]
    assert not (where / "data").exists(), "nothing laid out"
