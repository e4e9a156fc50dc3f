"""Faults of a fleet backup over SSH: the repository host drops off the network in the middle of the copy.

The repository's link is slowed (a token bucket on its veth) so that every
database host is still sending when the link goes down, as a pulled cable or
a dead switch port would take it: packets vanish, nothing is refused, so
nothing but ssh's own keepalive can notice. The run must then fail on its own,
in bounded time, with every server out of backup mode, every record saying
failed, nothing in the repository looking finished, and the servers writable.
"""

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from fleet import Fleet
from test_fleet import run_backup

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet")]
# Slow enough that no host finishes its copy before the link goes down (each sends tens of MB).
REPOSITORY_RATE = "8mbit"
# The user's ssh options win over the role's (ServerAliveInterval 15, ServerAliveCountMax 4: 75 s, pinned by
# tests/unit/plugins/module_utils/test_repository.py). Shorter ones here make ssh give up at the third silent
# interval, 15 s after the cut, and show that the options reach every ssh of the copy; the stop and the record
# follow in seconds.
KEEPALIVE = ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"]
FAIL_WITHIN = 60
# How much of every host's copy must have reached the repository before the link goes down.
SENT_BEFORE_CUT = 256 * 1024


@pytest.fixture(scope="module")
def fleet(testbed_dir):
    """A fleet of this module's own, in its own directory.

    It overrides the session fleet (tests/integration/conftest.py) for this module; fleet_hosts follows it.
    A fleet of its own keeps the sessions and partial copies a cut link leaves behind away from the other fleet tests.
    """
    built = Fleet.create(testbed_dir / "fleet-faults")
    yield built
    built.destroy()


@pytest.fixture
def repository_link(fleet):
    """The repository host's link, slowed for the test; up and unlimited again afterwards, whatever happened."""
    link = fleet.repo.host
    link.limit_rate(REPOSITORY_RATE)
    yield link
    link.link_up()
    link.limit_rate(None)


def add_bulk(cluster):
    """About 16 MB of rows, so that the copy lasts at the limited rate."""
    db = cluster.create_database()
    cluster.sql("CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 6) AS pad "
                "FROM generate_series(1, 70000) g", dbname=db)
    return db


def sent(path):
    """Bytes under ``path`` in the repository: a tar stream's file, or the files rsync has written so far."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return 0


def cut_mid_copy(fleet, link, labels, copy_path, started):
    """Wait until every host's copy has sent SENT_BEFORE_CUT bytes, then take the link down; returns when."""
    deadline = time.monotonic() + 180
    while True:
        progress = {name: sent(fleet.repository_dir / label / copy_path) for name, label in labels.items()}
        if all(size >= SENT_BEFORE_CUT for size in progress.values()):
            link.link_down()
            return time.monotonic(), progress
        if started.done():
            raise AssertionError(f"the run ended before every copy was under way: {progress}\n"
                                 f"{started.result()[0].output[-4000:]}")
        assert time.monotonic() < deadline, f"the copies did not get going: {progress}"
        time.sleep(0.2)


def backup_losing_the_repository(fleet, hosts, link, workdir, copy_path, **role_vars):
    """Run the backup, cut the repository's link mid-copy; returns the run, its labels and seconds from cut to end."""
    labels = {h.name: f"cut-{h.name}-{uuid.uuid4().hex[:8]}" for h in hosts}
    host_vars = {name: {"exclusive_backup_label": label} for name, label in labels.items()}
    with ThreadPoolExecutor(1) as pool:
        started = pool.submit(lambda: (run_backup(fleet, workdir, host_vars=host_vars, **role_vars),
                                       time.monotonic()))
        cut_at, progress = cut_mid_copy(fleet, link, labels, copy_path, started)
        run, ended_at = started.result()
    return run, labels, ended_at - cut_at, progress


def check_failed_cleanly(fleet, hosts, run, labels, bulk_dbs, method):
    assert run.rc != 0, "the run succeeded without its repository:\n" + run.output[-4000:]
    for fleet_host in hosts:
        name, label = fleet_host.name, labels[fleet_host.name]
        assert run.recap(name)["failed"] == 1, run.output[-4000:]
        result = run.summary()[name]
        assert result["status"] == "failed" and result["label"] == label, result
        repository = f"{fleet.repository()}/{label}"
        # tar names the file it streamed into; rsync exits 255 or 10 (its socket broke first).
        assert f"The copy to {repository}" in result["error"] and \
            f"failed: {'ssh' if method == 'tar' else 'rsync'} exited with " in result["error"], \
            f"{name}: the error does not name the repository: {result['error']}"
        assert "not responding" in result["error"], result["error"]
        assert "reaches the repository" in result["error"] and "take the backup again" in result["error"], \
            f"{name}: the error does not say what to do: {result['error']}"
        assert result["stopped"], f"{name}: the role did not stop the backup"
        assert f"The backup was stopped; {fleet_host.dest / label}/backup.json says failed." in run.output
        assert not fleet_host.cluster.in_backup(), f"{name} is still in backup mode"

        local = json.loads((fleet_host.dest / label / "backup.json").read_text())
        assert local["status"] == "failed" and local["stop_lsn"], local
        assert local["error"] == result["error"]
        # The copy in the repository is partial: nothing there may say otherwise.
        in_repository = fleet.repository_dir / label
        assert not (in_repository / "backup.json").exists(), f"{name}: the partial copy is marked complete"
        assert not list(in_repository.rglob("*backup.json*")), f"{name}: a record reached the partial copy"

        fleet_host.cluster.sql("INSERT INTO bulk VALUES (0, 'after the fault')", dbname=bulk_dbs[name])
        assert fleet_host.cluster.value("SELECT count(*) FROM bulk WHERE id = 0", dbname=bulk_dbs[name]) == 1


def report(method, run, seconds, progress):
    sent_kb = ", ".join(f"{name} {size // 1024} KB" for name, size in sorted(progress.items()))
    print(f"\nfleet {method}, repository link down mid-copy (sent before: {sent_kb}): "
          f"run failed {seconds:.1f} s after the cut, wall {run.seconds:.1f} s")


@pytest.mark.parametrize("method, copy_path", [("tar", "base.tar"), ("rsync", "data")])
def test_repository_link_down_mid_copy_fails_the_run_and_stops_every_backup(
        fleet, fleet_hosts, repository_link, scratch, method, copy_path):
    bulk_dbs = {h.name: add_bulk(h.cluster) for h in fleet_hosts}
    role_vars = fleet.repository_vars()
    role_vars["exclusive_backup_ssh_options"] = role_vars["exclusive_backup_ssh_options"] + KEEPALIVE
    run, labels, seconds, progress = backup_losing_the_repository(
        fleet, fleet_hosts, repository_link, scratch, copy_path, exclusive_backup_method=method, **role_vars)
    report(method, run, seconds, progress)
    check_failed_cleanly(fleet, fleet_hosts, run, labels, bulk_dbs, method)
    assert seconds < FAIL_WITHIN, f"the run took {seconds:.0f} s to fail after the repository's link went down"
    assert seconds >= 10, f"the run failed {seconds:.0f} s after the cut: before ssh's keepalive could notice it"
