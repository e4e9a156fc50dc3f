"""playbooks/backup.yml against a fleet over SSH: database hosts in network namespaces, a repository host.

The fleet (tests/fleet) has three database hosts, PostgreSQL 14, 15 and 18,
each with its own sshd, address and WAL archive, and a repository host. Ansible
logs in as an unprivileged user with a key, becomes root with sudo, and runs
three hosts at once (forks 3). The database hosts' root sends the copies to
the repository with a key of its own. A backup counts only when the copy in
the repository restored, with every row committed before the stop.
"""

import json
import re
import sys
from contextlib import ExitStack

import pytest

from restore_proof import Writer, add_rows_after, check_restored_rows, create_table, restore_backup
from runner import REPO, ansible_env, run_dir, start_playbook

from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import verify_copy

# One fleet per session: with pytest-xdist (--dist loadgroup) these tests share one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet")]
FORKS = 3

WRAPPER = """\
- ansible.builtin.import_playbook: {backup_yml}

# Collects what each database host's run left, the failed hosts' too.
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: {python}
  tasks:
    - ansible.builtin.copy:
        dest: "{results}/{{{{ item }}}}.json"
        content: >-
          {{{{ {{'result': hostvars[item].exclusive_backup_result | default(none),
               'copy': hostvars[item].__exclusive_backup_copy | default(none)}} | to_json }}}}
        mode: "0600"
      loop: "{{{{ groups['postgresql'] }}}}"
"""


class FleetRun:
    def __init__(self, rc, output, results, seconds):
        self.rc, self.output, self.results, self.seconds = rc, output, results, seconds

    def recap(self, host):
        """The host's counters from the PLAY RECAP, e.g. {'ok': 30, 'failed': 0, ...}."""
        for line in self.output.splitlines():
            match = re.match(r"^%s\s+:\s+(.*)$" % re.escape(host), line)
            if match:
                return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}
        raise AssertionError(f"{host} is not in the recap:\n{self.output[-3000:]}")

    def summary(self):
        """exclusive_backup_results by host, as the run's summary (set_stats, CUSTOM STATS) shows them."""
        stats = self.output[self.output.index("CUSTOM STATS"):].split("RUN:", 1)[1].lstrip()
        return json.JSONDecoder().raw_decode(stats)[0]["exclusive_backup_results"]


def start_backup(fleet, workdir, host_vars=None, hosts=None, **role_vars):
    """playbooks/backup.yml over SSH with become and FORKS forks, running (a runner.Run); ``results`` is the
    directory where the run leaves each host's exclusive_backup_result (see ``collected``). ``hosts``, when
    given, is the playbook's exclusive_backup_hosts (default: every database host).

    The role's variables are the group's, ``host_vars`` per host over them. The
    run's own play.yml is in its own directory, named in ansible-playbook's
    command line: the processes forked from the run can be told by it.
    """
    directory = run_dir(workdir)
    results = directory / "results"
    results.mkdir()
    inventory = fleet.write_inventory(directory / "inventory.json", host_vars=host_vars, **role_vars)
    playbook = directory / "play.yml"
    playbook.write_text(WRAPPER.format(backup_yml=REPO / "playbooks" / "backup.yml", python=sys.executable,
                                       results=results))
    # Host keys are checked (the fleet's known_hosts); the summary shows set_stats' per-host results.
    env = ansible_env(ANSIBLE_HOST_KEY_CHECKING="1", ANSIBLE_PIPELINING="0", ANSIBLE_SHOW_CUSTOM_STATS="1")
    args = ["-f", FORKS] + (["-e", f"exclusive_backup_hosts={hosts}"] if hosts else [])
    run = start_playbook(playbook, inventory, directory, args=args, env=env)
    run.results = results
    return run


def collected(results):
    return {path.stem: json.loads(path.read_text()) for path in results.glob("*.json")}


def run_backup(fleet, workdir, host_vars=None, hosts=None, **role_vars):
    run = start_backup(fleet, workdir, host_vars, hosts, **role_vars).wait(600)
    return FleetRun(run.rc, run.output, collected(run.results), run.seconds)


def prepare_table(cluster):
    db = cluster.create_database()
    create_table(cluster, db)
    return db


def backup_with_writers(fleet, workdir, hosts, **kwargs):
    """Run the backup while a writer commits rows on every host; returns the run, the writers and databases."""
    dbs = {h.name: prepare_table(h.cluster) for h in hosts}
    writers = {h.name: Writer(h.cluster, dbs[h.name]) for h in hosts}
    with ExitStack() as running:
        for writer in writers.values():
            running.enter_context(writer)
        run = run_backup(fleet, workdir, **kwargs)
    for h in hosts:
        assert writers[h.name].error is None, writers[h.name].error
        add_rows_after(h.cluster, dbs[h.name])
    return run, writers, dbs


def restore_from_repository(fleet_host, backup, scratch, restore):
    """The repository's copy laid out in scratch (restore_proof.materialize), started by the test bed's restore."""
    return restore_backup(fleet_host.cluster, backup, scratch / f"restore-{fleet_host.name}", restore)[0]


def check_restored(fleet_host, record, restored, writer, db):
    check_restored_rows(restored, db, writer, record["stop_lsn"], what=fleet_host.name)


def check_complete_in_repository(fleet, fleet_host, run, outputs):
    """The host's backup is complete, in the repository, with the record last; returns the repository's record."""
    result = run.results[fleet_host.name]["result"]
    assert result["status"] == "complete", (fleet_host.name, result, run.output[-4000:])
    assert not fleet_host.cluster.in_backup(), f"{fleet_host.name} is still in backup mode"
    backup = fleet.repository_dir / result["label"]
    record = json.loads((backup / "backup.json").read_text())
    local = json.loads((fleet_host.dest / result["label"] / "backup.json").read_text())
    assert record == local, "the repository's backup.json is the record written on the database host"
    assert record["status"] == "complete" and record["label"] == result["label"]
    assert record["repository"] == f"{fleet.repository()}/{result['label']}" == result["repository"]
    assert record["api"] == fleet_host.cluster.api
    assert sorted(p.name for p in backup.iterdir()) == sorted(outputs + ["backup.json", "backup_manifest"])
    # Nothing of the copy on the database host: dest holds the record and the manifest read back from the
    # repository (and include_wal's WAL), sent along.
    assert sorted(p.name for p in (fleet_host.dest / result["label"]).iterdir()) == sorted(
        ["backup.json", "backup_manifest"] + [name for name in outputs if name == "pg_wal"])
    assert result["manifest"]["read_back_from"] == record["repository"]
    assert verify_copy(str(backup))["files"] == result["manifest"]["files"], "the manifest proves the repository's copy"
    return backup, record


def timings(run, records):
    """One line for the test's output: the run's wall time and each host's time in backup mode."""
    modes = ", ".join(f"{name} {record['duration']:.1f} s" for name, record in sorted(records.items()))
    return f"wall {run.seconds:.1f} s; in backup mode: {modes}"


def test_tar_gzip_streams_into_the_repository_and_every_host_restores(fleet, fleet_hosts, scratch, restore):
    run, writers, dbs = backup_with_writers(
        fleet, scratch, fleet_hosts, exclusive_backup_compression="gzip", exclusive_backup_parallel=2,
        **fleet.repository_vars())
    assert run.rc == 0, run.output[-6000:]
    assert "transfer mechanism failed" not in run.output, "Ansible fell back from sftp"
    records = {}
    for fleet_host in fleet_hosts:
        assert run.recap(fleet_host.name)["failed"] == 0
        backup, records[fleet_host.name] = check_complete_in_repository(fleet, fleet_host, run, ["base.tar.gz"])
        assert run.results[fleet_host.name]["copy"]["bytes"] == (backup / "base.tar.gz").stat().st_size
        restored = restore_from_repository(fleet_host, backup, scratch, restore)
        check_restored(fleet_host, records[fleet_host.name], restored, writers[fleet_host.name], dbs[fleet_host.name])
    print(f"\nfleet tar+gzip over SSH, {len(fleet_hosts)} hosts: {timings(run, records)}")


def test_rsync_to_the_repository_one_host_at_a_time_and_every_host_restores(fleet, fleet_hosts, scratch,
                                                                            restore):
    # include_wal: the WAL goes to the repository with the record, in <label>/pg_wal/.
    archives = {h.name: {"exclusive_backup_wal_archive_dir": str(h.cluster.archive_dir)} for h in fleet_hosts}
    run, writers, dbs = backup_with_writers(
        fleet, scratch, fleet_hosts, host_vars=archives, exclusive_backup_method="rsync",
        exclusive_backup_copy_throttle=1, exclusive_backup_include_wal=True, **fleet.repository_vars())
    assert run.rc == 0, run.output[-6000:]
    records = {}
    for fleet_host in fleet_hosts:
        backup, records[fleet_host.name] = check_complete_in_repository(fleet, fleet_host, run, ["data", "pg_wal"])
        assert (backup / "data" / "backup_label").exists()
        assert (backup / "pg_wal" / records[fleet_host.name]["stop_wal_file"]).exists()
        restored = restore_from_repository(fleet_host, backup, scratch, restore)
        check_restored(fleet_host, records[fleet_host.name], restored, writers[fleet_host.name], dbs[fleet_host.name])
    copies = sorted((c["started_at"], c["started_at"] + c["duration"])
                    for c in (run.results[h.name]["copy"] for h in fleet_hosts))
    assert all(end <= next_start for (_s, end), (next_start, _e) in zip(copies, copies[1:])), \
        f"with exclusive_backup_copy_throttle 1 the copies overlap: {copies}"
    print(f"\nfleet rsync over SSH, throttle 1, {len(fleet_hosts)} hosts: {timings(run, records)}")


def test_one_host_failing_leaves_the_others_complete_and_names_it(fleet, fleet_hosts, scratch, restore):
    failing = fleet_hosts[1]
    # Its repository path cannot be created: the copy fails after the start, on that host only.
    broken = {failing.name: {"exclusive_backup_repository": fleet.repository().split(":")[0]
                             + ":/proc/pgx-fleet-cannot-write-here"}}
    run, writers, dbs = backup_with_writers(
        fleet, scratch, fleet_hosts, host_vars=broken, exclusive_backup_compression="zstd",
        **fleet.repository_vars())
    assert run.rc != 0, "a failed host fails the run"
    assert run.recap(failing.name)["failed"] == 1, run.output[-4000:]
    assert run.summary()[failing.name]["status"] == "failed"
    assert [name for name, r in run.summary().items() if r["status"] != "complete"] == [failing.name]

    result = run.results[failing.name]["result"]
    assert result["status"] == "failed" and "ssh exited with 1" in result["error"], result
    assert result["stopped"], "the failed host's backup was stopped"
    assert not failing.cluster.in_backup(), "the failed host is out of backup mode"
    local = json.loads((failing.dest / result["label"] / "backup.json").read_text())
    assert local["status"] == "failed" and local["stop_lsn"] and "cannot-write-here" in local["error"]
    assert not (fleet.repository_dir / result["label"]).exists(), "no copy of the failed host in the repository"

    for fleet_host in fleet_hosts:
        if fleet_host is failing:
            continue
        assert run.recap(fleet_host.name)["failed"] == 0
        backup, record = check_complete_in_repository(fleet, fleet_host, run, ["base.tar.zst"])
        restored = restore_from_repository(fleet_host, backup, scratch, restore)
        check_restored(fleet_host, record, restored, writers[fleet_host.name], dbs[fleet_host.name])
