"""The safety stop follows the controller: real servers, a real ansible-playbook, real signals.

The role runs in a background ansible-playbook (the ``runs`` fixture, runner.start_role) on
14 (native API) and 15 (extension) with a short heartbeat_timeout, so a case
takes seconds; the fleet tests (test_fleet_lease.py) run the same events over
SSH with the defaults. The copy is the command method running ``sleep``: it
stands for a copy planned to take far longer than the test, and its process
is found by the PGX_LABEL its environment carries, to see it end.
"""

import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from runner import connection, run_tasks, task
from watchdogs import end_watchdogs, process_state, processes_with_label, record, wait_for, watchdog_running

TIMEOUT = 6
# Renewal every TIMEOUT/4 s, watchdog wake-up at the exact end: the backup ends TIMEOUT s after the last
# renewal, so at most TIMEOUT + TIMEOUT/4 after a kill; the rest is the margin of a loaded machine.
LEFT_WITHIN = TIMEOUT + TIMEOUT / 4 + 6


def check_the_next_run_reports(pg, state_dir, label):
    """After a run died and its safety stop ended its backup, the next run's info, start and stop see it:
    returns (the dead run's state record as pg_backup_info reports it, the start's result)."""
    info, nxt, stop = run_tasks([
        task("pg_backup_info", state_dir=str(state_dir), **connection(pg)),
        task("pg_start_backup", label=label + "-next", fast=True, state_dir=str(state_dir), **connection(pg)),
        task("pg_stop_backup", label=label + "-next", state_dir=str(state_dir), **connection(pg)),
    ])
    dead = [r for r in info["state_records"] if r["label"] == label][0]
    assert dead["effective_outcome"] == "expired-stopped", dead
    assert [f["label"] for f in nxt["earlier_failures"]] == [label]
    assert stop["changed"] and not pg.in_backup()
    return dead, nxt


def new_label(kind, cluster):
    return "lease-%s-pg%d-%s" % (kind, cluster.major, uuid.uuid4().hex[:8])


def lease_file(rec):
    return Path(rec["_path"][:-len(".json")] + ".lease")


# SIGKILL-unreaped: a wrapper that reaps late (a Popen not yet waited on, a busy supervisor). This test is
# ansible-playbook's parent and does not wait() for it until backup mode ended: the zombie keeps its PID and
# start time in /proc all along.
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGKILL-unreaped"])
def test_a_dead_controller_ends_the_backup_and_its_copy(api_pg, runs, how):
    pg = api_pg
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
    assert run.forked(), "the run's processes are found by its own play: the check after the kill can fail"
    killed_at = time.time()
    run.signal(getattr(signal, how.split("-")[0]))
    if how.endswith("unreaped"):
        wait_for(lambda: process_state(run.proc.pid) == "Z", 10)
    else:
        run.proc.wait(30)
    assert pg.in_backup(), "the kill itself stops nothing"

    left = killed_at + wait_for(lambda: not pg.in_backup(), LEFT_WITHIN, interval=0.2)
    if how.endswith("unreaped"):
        assert process_state(run.proc.pid) == "Z", "the controller stayed an unreaped zombie until backup mode ended"
        run.proc.wait(30)
    copy_ended = killed_at + wait_for(lambda: not processes_with_label(label), 20, interval=0.2)
    # The watchdog records its outcome right after its stop statement.
    wait_for(lambda: record(runs.state_dir, label)["outcome"] != "running", 10)
    done = record(runs.state_dir, label)
    assert done["outcome"] == "expired-stopped" and done["expired_by"] == "heartbeat", done
    assert not lease_file(rec).exists(), "the watchdog ends the lease with the backup"
    assert not watchdog_running(done)
    wait_for(lambda: not run.forked(), 10, run.forked)
    # The server is unharmed: it takes writes and a new backup.
    pg.sql("CREATE TABLE IF NOT EXISTS after_kill (id int)")
    print(f"\nMEASURED pg{pg.major} {how} of ansible-playbook (heartbeat_timeout {TIMEOUT} s): backup mode left "
          f"{left - killed_at:.1f} s after the kill, copy ended {copy_ended - killed_at:.1f} s after it")

    dead, _nxt = check_the_next_run_reports(pg, runs.state_dir, label)
    assert dead["expired_by"] == "heartbeat"
    assert "stopped renewing" in dead["what_to_do"] and dead["lease_renewed_at"], dead


def test_a_live_run_keeps_its_backup_through_a_copy_many_timeouts_long(api_pg, runs):
    pg = api_pg
    label = new_label("long", pg)
    run = runs(pg, exclusive_backup_label=label, exclusive_backup_heartbeat_timeout=4,
               exclusive_backup_method="command", exclusive_backup_command="sleep 15").wait(180)
    assert run.rc == 0, run.output[-4000:]
    assert run.result["status"] == "complete", run.result
    done = record(runs.state_dir, label)
    assert done["outcome"] == "stopped" and "expired_by" not in done, done
    assert not lease_file(done).exists()
    assert not pg.in_backup()


def test_the_keeper_ends_with_the_run(api_pg, runs):
    pg = api_pg
    label = new_label("keeper", pg)
    run = runs(pg, exclusive_backup_label=label, exclusive_backup_heartbeat_timeout=4,
               exclusive_backup_method="command", exclusive_backup_command="true").wait(180)
    assert run.rc == 0, run.output[-4000:]
    # Stopped, or the run over: the keeper ends within one renewal interval, as do the workers.
    wait_for(lambda: not run.forked(), 10, run.forked)


def test_max_duration_ends_a_live_runs_copy_and_fails_it(api_pg, runs, scratch):
    """The bound from the start holds against a live controller: the copy is ended, the run fails at once."""
    pg = api_pg
    label = new_label("maxdur", pg)
    run = runs(pg, exclusive_backup_label=label, exclusive_backup_max_duration=4,
               exclusive_backup_method="command", exclusive_backup_command="sleep 3600").wait(120)
    assert run.rc != 0 and run.result["status"] == "failed", run.output[-4000:]
    assert "The copy was stopped: the backup's lease ended (its lease of 4 s (max_duration) ended" in run.output, \
        run.output[-4000:]
    assert "ended the backup (outcome expired-stopped)" in run.output
    assert "already stopped by its safety stop" in run.output, run.output[-4000:]
    done = record(runs.state_dir, label)
    assert done["outcome"] == "expired-stopped" and done["expired_by"] == "max_duration", done
    assert not processes_with_label(label) and not pg.in_backup()
    saved = json.loads((scratch / "backups" / label / "backup.json").read_text())
    assert saved["status"] == "failed" and "safety stop" in saved["error"], saved
    print(f"\nMEASURED pg{pg.major} max_duration 4 s against a 3600 s copy: the run failed after {run.seconds:.1f} s")


def test_modules_direct_heartbeat_ends_with_the_playbook_and_max_duration_holds(api_pg, scratch):
    """The documented choice for module users: heartbeat_timeout follows their run; max_duration alone holds."""
    pg = api_pg
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


def test_heartbeat_timeout_below_the_minimum_is_refused(api_pg, scratch):
    pg = api_pg
    result, = run_tasks([task("pg_start_backup", label="too-short", heartbeat_timeout=2,
                              state_dir=str(scratch / "state"), **connection(pg))])
    assert result["failed"] and "heartbeat_timeout is 2" in result["msg"], result
    assert not pg.in_backup()
