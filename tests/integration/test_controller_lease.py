"""The safety stop follows the controller: real servers, a real ansible-playbook, real signals.

The role runs in a background ansible-playbook (role_process.RoleProcess) on
14 (native API) and 15 (extension) with a short heartbeat_timeout, so a case
takes seconds; the fleet tests (test_fleet_lease.py) run the same events over
SSH with the defaults. The copy is the command method running ``sleep``: it
stands for a copy planned to take far longer than the test, and its process
is found by the PGX_LABEL its environment carries, to see it end.
"""

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from playbook import connection, run_tasks, task
from role_process import RoleProcess
from testbed.fixtures import SELECTED, handed_out, prefer
from watchdogs import end_watchdogs, live_processes, record, wait_for, watchdog_running

TIMEOUT = 6
# Renewal every TIMEOUT/4 s, watchdog wake-up at the exact end: the backup ends TIMEOUT s after the last
# renewal, so at most TIMEOUT + TIMEOUT/4 after a kill; the rest is the margin of a loaded machine.
LEFT_WITHIN = TIMEOUT + TIMEOUT / 4 + 6


@pytest.fixture(params=prefer((14, 15), SELECTED), ids=lambda m: f"pg{m}")
def lease_pg(request, clusters):
    yield from handed_out(clusters(request.param))


@pytest.fixture
def runs(scratch):
    started = []
    state_dir = scratch / "state"

    def start(cluster, name="run", **role_vars):
        role_vars.setdefault("exclusive_backup_dest", str(scratch / "backups"))
        role_vars.setdefault("exclusive_backup_state_dir", str(state_dir))
        role_vars.setdefault("exclusive_backup_verify_archiving", "passive")
        started.append(RoleProcess(cluster, scratch, name, **role_vars))
        return started[-1]

    start.state_dir = state_dir
    yield start
    for run in started:
        run.cleanup()
        for pid in leftovers(run):
            os.kill(pid, signal.SIGKILL)
    end_watchdogs(state_dir)


def leftovers(run):
    """Processes forked from the run's ansible-playbook still there: orphaned workers, the lease keeper.

    They carry ansible-playbook's command line, which names the run's own play.yml.
    """
    play = str(run.dir / "play.yml").encode()
    return [pid for pid, argv in live_processes("cmdline") if play in argv]


def new_label(kind, cluster):
    return "lease-%s-pg%d-%s" % (kind, cluster.major, uuid.uuid4().hex[:8])


def processes_with_label(label):
    """PIDs of the processes whose environment carries PGX_LABEL=<label>: the copy command and its shell."""
    wanted = ("PGX_LABEL=%s" % label).encode()
    return [pid for pid, environ in live_processes("environ") if wanted in environ]


def lease_file(rec):
    return Path(rec["_path"][:-len(".json")] + ".lease")


def kill_controller(run, how):
    """SIGKILL or SIGTERM to ansible-playbook alone: its workers, the module and the copy are not signalled."""
    os.kill(run.proc.pid, {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}[how])


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_dead_controller_ends_the_backup_and_its_copy(lease_pg, runs, how):
    pg = lease_pg
    label = new_label(how, pg)
    run = runs(pg, exclusive_backup_label=label, exclusive_backup_heartbeat_timeout=TIMEOUT,
               exclusive_backup_method="command", exclusive_backup_command="sleep 3600")
    wait_for(lambda: processes_with_label(label), 60, run.proc.poll)
    rec = record(runs.state_dir, label)
    assert rec["heartbeat_timeout"] == TIMEOUT and not rec["lease"], rec
    assert watchdog_running(rec)
    # Alive, the controller renews: the lease file is touched while the copy runs.
    first = lease_file(rec).stat().st_mtime
    wait_for(lambda: lease_file(rec).stat().st_mtime > first, TIMEOUT)
    killed_at = time.time()
    kill_controller(run, how)
    run.proc.wait(30)
    assert pg.in_backup(), "the kill itself stops nothing"

    left = killed_at + wait_for(lambda: not pg.in_backup(), LEFT_WITHIN, interval=0.2)
    copy_ended = killed_at + wait_for(lambda: not processes_with_label(label), 20, interval=0.2)
    # The watchdog records its outcome right after its stop statement.
    wait_for(lambda: record(runs.state_dir, label)["outcome"] != "running", 10)
    done = record(runs.state_dir, label)
    assert done["outcome"] == "expired-stopped" and done["expired_by"] == "heartbeat", done
    assert not lease_file(rec).exists(), "the watchdog ends the lease with the backup"
    assert not watchdog_running(done)
    wait_for(lambda: not leftovers(run), 10, lambda: leftovers(run))
    # The server is unharmed: it takes writes and a new backup.
    pg.sql("CREATE TABLE IF NOT EXISTS after_kill (id int)")
    print(f"\nMEASURED pg{pg.major} {how} of ansible-playbook (heartbeat_timeout {TIMEOUT} s): backup mode left "
          f"{left - killed_at:.1f} s after the kill, copy ended {copy_ended - killed_at:.1f} s after it")

    info, nxt, stop = run_tasks([
        task("pg_backup_info", state_dir=str(runs.state_dir), **connection(pg)),
        task("pg_start_backup", label=label + "-next", fast=True, state_dir=str(runs.state_dir), **connection(pg)),
        task("pg_stop_backup", label=label + "-next", state_dir=str(runs.state_dir), **connection(pg)),
    ])
    dead = [r for r in info["state_records"] if r["label"] == label][0]
    assert dead["effective_outcome"] == "expired-stopped" and dead["expired_by"] == "heartbeat"
    assert "stopped renewing" in dead["what_to_do"] and dead["lease_renewed_at"], dead
    assert [f["label"] for f in nxt["earlier_failures"]] == [label]
    assert stop["changed"] and not pg.in_backup()


def test_a_live_run_keeps_its_backup_through_a_copy_many_timeouts_long(lease_pg, runs):
    pg = lease_pg
    label = new_label("long", pg)
    run = runs(pg, exclusive_backup_label=label, exclusive_backup_heartbeat_timeout=4,
               exclusive_backup_method="command", exclusive_backup_command="sleep 15").wait(180)
    assert run.rc == 0, run.output[-4000:]
    assert run.result["status"] == "complete", run.result
    done = record(runs.state_dir, label)
    assert done["outcome"] == "stopped" and "expired_by" not in done, done
    assert not lease_file(done).exists()
    assert not pg.in_backup()


def test_the_keeper_ends_with_the_run(lease_pg, runs):
    pg = lease_pg
    label = new_label("keeper", pg)
    run = runs(pg, exclusive_backup_label=label, exclusive_backup_heartbeat_timeout=4,
               exclusive_backup_method="command", exclusive_backup_command="true").wait(180)
    assert run.rc == 0, run.output[-4000:]
    # Stopped, or the run over: the keeper ends within one renewal interval, as do the workers.
    wait_for(lambda: not leftovers(run), 10, lambda: leftovers(run))


def test_max_duration_ends_a_live_runs_copy_and_fails_it(lease_pg, runs, scratch):
    """The bound from the start holds against a live controller: the copy is ended, the run fails at once."""
    pg = lease_pg
    label = new_label("maxdur", pg)
    run = runs(pg, exclusive_backup_label=label, exclusive_backup_max_duration=4,
               exclusive_backup_method="command", exclusive_backup_command="sleep 3600").wait(120)
    assert run.rc != 0 and run.result["status"] == "failed", run.output[-4000:]
    assert "The copy was stopped: the backup's lease ended (its lease of 4 s (max_duration) ended" in run.output, \
        run.output[-4000:]
    assert "ended the backup (outcome expired-stopped)" in run.output
    done = record(runs.state_dir, label)
    assert done["outcome"] == "expired-stopped" and done["expired_by"] == "max_duration", done
    assert not processes_with_label(label) and not pg.in_backup()
    print(f"\nMEASURED pg{pg.major} max_duration 4 s against a 3600 s copy: the run failed after {run.seconds:.1f} s")


def test_modules_direct_heartbeat_ends_with_the_playbook_and_max_duration_holds(lease_pg, scratch):
    """The documented choice for module users: heartbeat_timeout follows their run; max_duration alone holds."""
    pg = lease_pg
    state_dir = str(scratch / "state")
    followed, held = new_label("followed", pg), new_label("held", pg)
    try:
        start, = run_tasks([task("pg_start_backup", label=followed, fast=True, heartbeat_timeout=4,
                                 state_dir=state_dir, **connection(pg))])
        assert start["changed"] and start["heartbeat"]["keeper_pid"], start
        ended = wait_for(lambda: not pg.in_backup(), 4 + 1 + 8, interval=0.2)
        # The watchdog records its outcome right after its stop statement.
        wait_for(lambda: record(state_dir, followed)["outcome"] != "running", 10)
        assert record(state_dir, followed)["expired_by"] == "heartbeat"

        start, = run_tasks([task("pg_start_backup", label=held, fast=True, max_duration=600,
                                 state_dir=state_dir, **connection(pg))])
        assert start["heartbeat"] is None
        time.sleep(6)
        assert pg.in_backup(), "max_duration alone holds the backup after the playbook ended"
        stop, = run_tasks([task("pg_stop_backup", label=held, state_dir=state_dir, **connection(pg))])
        assert stop["changed"] and record(state_dir, held)["outcome"] == "stopped"
    finally:
        end_watchdogs(state_dir)
    print(f"\nMEASURED pg{pg.major} module run with heartbeat_timeout 4 ended; backup mode left {ended:.1f} s later")


def test_heartbeat_timeout_below_the_minimum_is_refused(lease_pg, scratch):
    pg = lease_pg
    result, = run_tasks([task("pg_start_backup", label="too-short", heartbeat_timeout=2,
                              state_dir=str(scratch / "state"), **connection(pg))])
    assert result["failed"] and "heartbeat_timeout is 2" in result["msg"], result
    assert not pg.in_backup()
