"""The Molecule scenario fleet_ssh against the fleet test bed: playbooks/backup.yml over SSH, verified with testinfra.

The test builds (or reuses) the session's fleet, hands its inventory to the
scenario, and runs ``molecule test -s fleet_ssh`` with a HOME of its own while
a writer commits rows on every database host. Molecule's verifier checks the
hosts over SSH; this test then checks the live servers from here and restores
every host's copy from the repository.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from live_checks import in_backup_sql
from restore_proof import Writer, add_rows_after
from runner import REPO
from test_fleet import check_restored, prepare_table, restore_from_repository
from watchdogs import wait_for

# One fleet per session: with pytest-xdist (--dist loadgroup) the fleet's tests share one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet")]
MOLECULE = str(Path(sys.executable).with_name("molecule"))


class MoleculeHome:
    """A HOME for one Molecule run: its cache, Ansible's files and the SSH control sockets go there.

    Under /tmp with a short name: a control socket's path must fit in a Unix
    socket address (108 bytes), which a path under pytest's tmp_path does not.
    On exit the SSH connections Ansible and testinfra left open for reuse are
    closed through their sockets, and the directory is removed.
    """

    def __enter__(self):
        self.path = Path(tempfile.mkdtemp(prefix="pgx-mh-"))
        return self.path

    def __exit__(self, *exc):
        for socket in sorted((self.path / ".ansible" / "cp").glob("*")):
            subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "fleet-host"],
                           capture_output=True, timeout=30, check=False)
        shutil.rmtree(self.path, ignore_errors=True)


def started_from(home):
    """PIDs of the processes of a run with HOME ``home``: its own, and what it left behind.

    By the environment, or by the command line for an SSH master: ssh
    retitles itself ('ssh: <control socket> [mux]') over its environment.
    """
    marker = f"HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0") or \
                    str(home).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue   # ended meanwhile
    return found


def run_scenario(home, inventory, results):
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}", NO_COLOR="1", ANSIBLE_NOCOLOR="1",
               HOME=str(home), ANSIBLE_HOME=str(home / ".ansible"), XDG_CACHE_HOME=str(home / ".cache"),
               ANSIBLE_COLLECTIONS_PATH=os.environ["ANSIBLE_COLLECTIONS_PATH"],
               PGX_FLEET_INVENTORY=str(inventory), PGX_FLEET_RESULTS=str(results))
    started = time.monotonic()
    proc = subprocess.run([MOLECULE, "test", "-s", "fleet_ssh"], cwd=str(REPO), env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    return proc, time.monotonic() - started


def test_molecule_fleet_ssh_scenario_passes_and_every_copy_restores(fleet, fleet_hosts, scratch, restore):
    inventory = fleet.write_inventory(scratch / "fleet-inventory.json", **fleet.repository_vars())
    results = scratch / "results"
    results.mkdir()
    dbs = {h.name: prepare_table(h.cluster) for h in fleet_hosts}
    writers = {h.name: Writer(h.cluster, dbs[h.name]) for h in fleet_hosts}
    with ExitStack() as running:
        home = running.enter_context(MoleculeHome())
        for writer in writers.values():
            running.enter_context(writer)
        proc, seconds = run_scenario(home, inventory, results)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    # Nothing of the run goes on after it: no lease keeper forked from a worker, no SSH connection.
    wait_for(lambda: not started_from(home), 15, lambda: f"still running: {started_from(home)}")
    # The verifier ran its tests and all passed (Molecule also passes when it finds no tests).
    summary = re.findall(r"^=+ (.*) in [\d.]+s", output, re.MULTILINE)
    assert summary and re.fullmatch(r"\d+ passed", summary[-1]), output[-4000:]

    for fleet_host in fleet_hosts:
        assert writers[fleet_host.name].error is None, writers[fleet_host.name].error
        add_rows_after(fleet_host.cluster, dbs[fleet_host.name])
    for fleet_host in fleet_hosts:
        cluster = fleet_host.cluster
        assert not cluster.in_backup() and in_backup_sql(cluster) is False, f"{fleet_host.name} is in backup mode"
        label = json.loads((results / f"{fleet_host.name}.json").read_text())["label"]
        backup = fleet.repository_dir / label
        record = json.loads((backup / "backup.json").read_text())
        assert record["status"] == "complete" and record["api"] == cluster.api, record
        restored = restore_from_repository(fleet_host, backup, scratch, restore)
        check_restored(fleet_host, record, restored, writers[fleet_host.name], dbs[fleet_host.name])
    print(f"\nmolecule test -s fleet_ssh, {len(fleet_hosts)} hosts over SSH: {seconds:.1f} s; {summary[-1]}")
