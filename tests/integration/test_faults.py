"""The fault suite: the role and the modules on real servers when things go wrong.

Majors: the kills run on 14 (native API) and 15 (extension), because they
prove the watchdog, whose stop statement differs per API; archiving that
breaks during the copy runs on every major, because the stop waits for the
archive differently per API (the extension's in the server); every other fault
runs on 15 only: it exercises the collection's handling (role, copy, archive
wait, state records), which is the same on every major, and 15 is the first
major that needs the extension. Leases are a few seconds and the copy is
`sleep`, so the suite stays within a few minutes. Measured numbers are printed
(pytest -s) and go into docs/reliability.md.
"""

import json
import re
import signal
import subprocess
import time
import uuid

import pytest

from restore_proof import Writer, check_rows_against_stop, restore_backup, restored_ids
from runner import connection, run_role, run_tasks, task
from test_controller_lease import check_the_next_run_reports
from watchdogs import record, wait_for, watchdog_running

LEASE = 8
PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"


def label_for(kind, cluster):
    return "fault-%s-pg%d-%s" % (kind, cluster.major, uuid.uuid4().hex[:8])


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_controller_killed_mid_copy(api_pg, runs, signum):
    pg = api_pg
    label = label_for(signal.Signals(signum).name, pg)
    run = runs(pg, exclusive_backup_label=label, exclusive_backup_max_duration=LEASE,
               exclusive_backup_method="command", exclusive_backup_command="sleep 120")
    wait_for(lambda: pg.in_backup() and record(runs.state_dir, label) is not None, 60)
    rec = record(runs.state_dir, label)
    assert watchdog_running(rec), rec
    time.sleep(1)   # well inside the copy
    killed_at = time.time()
    run.signal_group(signum)
    run.wait(60)
    assert run.rc != 0 and run.result is None, "the play must not have reached its always section"
    assert pg.in_backup(), "nothing else may stop the backup before the lease"
    wait_for(lambda: not pg.in_backup(), LEASE + 10)
    left = time.time()
    assert left - rec["started_epoch"] < LEASE + 3
    wait_for(lambda: record(runs.state_dir, label)["outcome"] != "running", 10)
    assert record(runs.state_dir, label)["outcome"] == "expired-stopped"
    print("\nMEASURED pg%d %s: left backup mode %.1f s after the kill, %.1f s after the start (lease %d s)"
          % (pg.major, signal.Signals(signum).name, left - killed_at, left - rec["started_epoch"], LEASE))

    dead, nxt = check_the_next_run_reports(pg, runs.state_dir, label)
    assert "safety stop ended it" in dead["what_to_do"]
    assert any("ended as expired-stopped" in w for w in nxt["warnings"])


def test_copy_into_a_read_only_destination_fails_and_stops(one_pg, runs, scratch):
    pg = one_pg
    dest = scratch / "ro"
    dest.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(dest)], check=True)
    try:
        run = runs(pg, exclusive_backup_dest=str(dest), exclusive_backup_max_duration=60).wait()
    finally:
        subprocess.run(["umount", str(dest)], check=True)
    assert run.rc != 0
    assert "Read-only file system" in run.output, run.output[-3000:]
    assert not pg.in_backup()
    print("\nMEASURED read-only dest: failed in %.1f s; %s" % (run.seconds, _failure_line(run.output)))


def test_copy_into_a_full_destination_fails_stops_and_records_failed(one_pg, runs, scratch):
    """The disk fills during the copy. An uncompressed copy that cannot fit is refused by the preflight
    (test_newcomer.py); a compressed one that may not fit is only warned about, and starts."""
    pg = one_pg
    dest = scratch / "full"
    dest.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(dest)], check=True)
    try:
        label = label_for("full", pg)
        run = runs(pg, exclusive_backup_dest=str(dest), exclusive_backup_label=label, exclusive_backup_compression="gzip",
                   exclusive_backup_max_duration=60).wait()
        record_file = dest / label / "backup.json"
        saved = json.loads(record_file.read_text()) if record_file.exists() else None
    finally:
        subprocess.run(["umount", str(dest)], check=True)
    assert run.rc != 0
    assert f"The destination {dest} may be too small" in run.output, run.output[-3000:]
    assert "No space left on device" in run.output or "Wrote only" in run.output, run.output[-3000:]
    assert not pg.in_backup()
    assert run.result["status"] == "failed"
    assert saved is None or saved["status"] == "failed", "a full disk must never leave a complete record"
    assert record(runs.state_dir, label)["outcome"] == "stopped"
    print("\nMEASURED full dest: failed in %.1f s, backup.json %s; %s"
          % (run.seconds, saved and saved["status"], _failure_line(run.output)))


def test_server_stopped_immediately_during_the_backup_then_cleared(one_pg, runs, scratch):
    pg = one_pg
    label = label_for("crash", pg)
    run = runs(pg, exclusive_backup_label=label, exclusive_backup_max_duration=4,
               exclusive_backup_method="command", exclusive_backup_command="sleep 6")
    wait_for(lambda: pg.in_backup() and record(runs.state_dir, label) is not None, 60)
    pg.stop(mode="immediate")
    run.wait(120)
    assert run.rc != 0 and run.result["status"] == "failed"
    assert (pg.data_dir / "backup_label").exists(), "an immediate stop leaves backup_label behind"
    wait_for(lambda: record(runs.state_dir, label)["outcome"] != "running", 30)
    assert record(runs.state_dir, label)["outcome"] == "expired-unreachable"

    state = str(runs.state_dir)
    # apply: the refusals fail inside the included tasks, which must not end the play.
    clear = {"include_role": {"name": "pgexclusive.backup.exclusive_backup", "tasks_from": "clear_crashed_backup",
                              "apply": {"ignore_errors": True}}}
    common = dict(exclusive_backup_data_directory=str(pg.data_dir), exclusive_backup_state_dir=state,
                  exclusive_backup_login_unix_socket=str(pg.socket_dir), exclusive_backup_login_port=pg.port)
    info, unconfirmed, wrong = run_tasks([
        task("pg_backup_info", data_directory=str(pg.data_dir), state_dir=state, **connection(pg)),
        dict(clear, vars=common),
        dict(clear, vars=dict(common, exclusive_backup_clear_confirm="not-the-label")),
    ])
    assert info["server_running"] is False and info["in_backup"] is True
    assert info["backup"]["state_record"]["label"] == label
    assert "This collection started it" in info["advice"] and "expired-unreachable" in info["advice"]
    assert "needs explicit confirmation" in unconfirmed["_output"] and label in unconfirmed["_output"]
    assert (pg.data_dir / "backup_label").exists(), "without confirmation nothing changes"
    standby_signal = pg.data_dir / "standby.signal"
    standby_signal.touch()
    try:
        as_standby, = run_tasks([dict(clear, vars=dict(common, exclusive_backup_clear_confirm=label))])
    finally:
        standby_signal.unlink()
    assert "Never remove backup_label there" in as_standby["_output"]
    assert (pg.data_dir / "backup_label").exists()
    cleared, = run_tasks([dict(clear, vars=dict(common, exclusive_backup_clear_confirm=label))])
    assert not (pg.data_dir / "backup_label").exists()
    moved = list(pg.data_dir.glob("backup_label.pgexclusive-*"))
    assert len(moved) == 1 and f"LABEL: {label}" in moved[0].read_text(), "renamed, not deleted"
    pg.start()
    assert not pg.in_backup() and pg.value("SELECT 1") == 1
    moved[0].unlink()
    print("\nMEASURED immediate stop: run failed in %.1f s; cleared after explicit confirmation" % run.seconds)


def test_clear_refuses_a_running_server_and_a_foreign_label(one_pg, scratch):
    pg = one_pg
    pg.start_backup("foreign tool")
    running, = run_tasks([task("pg_clear_backup_label", data_directory=str(pg.data_dir), confirm="foreign tool",
                               state_dir=str(scratch / "state"))])
    assert running["failed"] and "is running" in running["msg"]
    pg.crash()
    foreign, = run_tasks([task("pg_clear_backup_label", data_directory=str(pg.data_dir), confirm="foreign tool",
                               state_dir=str(scratch / "state"))])
    assert foreign["failed"] and "did not start" in foreign["msg"] and (pg.data_dir / "backup_label").exists()
    pg.start()


def test_archive_failing_before_the_backup_refuses_it(one_pg, runs):
    """The archiver gives up for a minute after three failures in a row: the check says so then, long before
    its archive timeout, since no backup is waiting on it."""
    pg = one_pg
    pg.break_archiving()
    run = runs(pg, exclusive_backup_verify_archiving="active", exclusive_backup_archive_timeout=240).wait()
    assert run.rc != 0 and not pg.in_backup()
    assert "no backup was started" in run.output, run.output[-3000:]
    assert "times in a row on" in run.output and "now waits a minute before it tries again" in run.output, \
        run.output[-3000:]
    assert run.seconds < 60, f"refused after {run.seconds:.1f} s: the check waited for its timeout"
    print("\nMEASURED archive broken before: refused in %.1f s (archive_timeout 240); %s"
          % (run.seconds, _failure_line(run.output)))


def test_archive_failing_during_the_backup_names_the_missing_segment(one_pg, scratch):
    pg = one_pg
    label = label_for("archive", pg)
    conn = dict(connection(pg), state_dir=str(scratch / "state"))
    started, = run_tasks([task("pg_start_backup", label=label, fast=True, **conn)])
    pg.break_archiving()
    began = time.monotonic()
    stopped, = run_tasks([task("pg_stop_backup", label=label, archive_timeout=3, **conn)])
    assert stopped["failed"] and not pg.in_backup(), "the backup IS stopped"
    assert stopped["stop_wal_file"] in stopped["missing_wal_files"]
    assert stopped["stop_wal_file"] in stopped["msg"] and "did not reach the WAL archive" in stopped["msg"]
    print("\nMEASURED archive broken during: stop failed after %.1f s naming %s"
          % (time.monotonic() - began, stopped["missing_wal_files"]))


def test_two_runs_at_the_same_moment(one_pg, runs, scratch):
    pg = one_pg
    labels = [label_for("twin%d" % i, pg) for i in (1, 2)]
    both = [runs(pg, "twin%d" % i, exclusive_backup_label=label, exclusive_backup_max_duration=60,
                 exclusive_backup_method="command", exclusive_backup_command="sleep 6")
            for i, label in enumerate(labels)]
    for run in both:
        run.wait(180)
    winners = [run for run in both if run.rc == 0]
    losers = [run for run in both if run.rc != 0]
    assert len(winners) == 1 and len(losers) == 1, [(r.rc, r.output[-1500:]) for r in both]
    winner, loser = winners[0], losers[0]
    assert winner.result["status"] == "complete"
    assert "Another exclusive backup is in progress" in loser.output
    assert "started no backup and stopped none" in loser.output
    assert record(runs.state_dir, winner.result["label"])["outcome"] == "stopped"
    assert record(runs.state_dir, loser.result["label"]) is None, "the loser started nothing"
    assert not pg.in_backup()
    print("\nMEASURED two runs: one complete in %.1f s, the other failed cleanly in %.1f s; %s"
          % (winner.seconds, loser.seconds, _failure_line(loser.output)))


@pytest.fixture
def fault_db(one_pg):
    name = one_pg.create_database()
    yield name
    one_pg.drop_database(name)


def test_pgbench_throughout_restores_consistently(one_pg, fault_db, scratch, restore):
    pg, db = one_pg, fault_db
    env = {"PGHOST": str(pg.socket_dir), "PGPORT": str(pg.port), "PGUSER": "postgres", "PATH": "/usr/bin:/bin"}
    subprocess.run([PGBENCH, "-i", "-s", "1", "-q", db], env=env, check=True, capture_output=True)
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, phase text NOT NULL)", dbname=db)
    bench = subprocess.Popen([PGBENCH, "-c", "2", "-T", "40", "-n", db], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with Writer(pg, db) as writer:
            time.sleep(1)
            run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"),
                           exclusive_backup_state_dir=str(scratch / "state"))
    finally:
        bench.terminate()
        bench.communicate(30)
    assert run.rc == 0, run.output[-4000:]
    backup_dir = scratch / "backups" / run.result["label"]
    record_json = json.loads((backup_dir / "backup.json").read_text())
    restored, _seconds = restore_backup(pg, backup_dir, scratch / "restore", restore)
    must_in = check_rows_against_stop(writer, restored_ids(restored, db), record_json["stop_lsn"])[0]
    sums = restored.sql("SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM "
                        "pgbench_tellers), (SELECT sum(bbalance) FROM pgbench_branches), "
                        "(SELECT coalesce(sum(delta), 0) FROM pgbench_history), "
                        "(SELECT count(*) FROM pgbench_history)", dbname=db)[0]
    assert sums[0] == sums[1] == sums[2] == sums[3], "pgbench's balances disagree in the restored copy: %s" % (sums,)
    assert sums[4] > 0 and must_in > 0
    print("\nMEASURED pgbench: %d pgbench transactions and %d checked rows in the restored copy; balances agree"
          % (sums[4], must_in))


def _failure_line(output):
    """The last failure message of a run, for the measured table."""
    found = re.findall(r'"msg": "((?:[^"\\]|\\.)*)"', output)
    return found[-1][:400] if found else output.strip().splitlines()[-1][:400]


# -- archiving breaks during the copy: every stop is bounded ----------------------------------------

ARCHIVE_TIMEOUT = 10
# From the copy's start to the end of the run: the copy (1 s), the stop, the failure's record and report, on shared CPUs.
STOP_OVERHEAD = 20


@pytest.fixture
def breakable_archiving(pg, scratch):
    """An archive_command that fails while a flag file exists; the test's copy command creates the flag.

    Returns the flag's path. The fixture's teardown (handed_out) resets archive_command.
    """
    flag = scratch / "archiving-broken"
    pg.sql("ALTER SYSTEM SET archive_command = %s",
           (f"test ! -f {flag} && test ! -f {pg.archive_dir}/%f && cp %p {pg.archive_dir}/%f.part"
            f" && mv {pg.archive_dir}/%f.part {pg.archive_dir}/%f",))
    pg.reload()
    pg.archiving_broken = True
    yield flag
    flag.unlink(missing_ok=True)


def missing_segments(error):
    """The WAL files an archive timeout names as missing (not those it names as last archived or failed)."""
    missing = error.split("did not reach the WAL archive", 1)[0]
    return set(re.findall(r"\b[0-9A-F]{24}(?:\.[0-9A-F]{8}\.backup)?\b", missing))


def test_archive_breaking_during_the_copy_ends_the_run_within_archive_timeout(pg, breakable_archiving, runs):
    """Defect: the extension's stop waited for the archive without end, and the next run blamed another client."""
    label = label_for("archive-wait", pg)
    run = runs(pg, exclusive_backup_label=label, exclusive_backup_archive_timeout=ARCHIVE_TIMEOUT,
               exclusive_backup_max_duration=120, exclusive_backup_method="command",
               exclusive_backup_command=f"touch {breakable_archiving} && sleep 1")
    run.wait(ARCHIVE_TIMEOUT + STOP_OVERHEAD + 90)
    # The copy command created the flag: the run's end, counted from the copy's start.
    after_copy = time.time() - breakable_archiving.stat().st_mtime
    print("\nMEASURED pg%d archive broken during the copy: the run failed %.1f s after the copy began, %.1f s in all "
          "(archive_timeout %d s); %s" % (pg.major, after_copy, run.seconds, ARCHIVE_TIMEOUT, _failure_line(run.output)))
    assert run.rc != 0 and after_copy < ARCHIVE_TIMEOUT + STOP_OVERHEAD, run.output[-3000:]
    assert not pg.in_backup() and not pg.sql("SELECT pid FROM pg_stat_activity WHERE wait_event = 'BackupWaitWalArchive'")
    saved = json.loads((runs.state_dir.parent / "backups" / label / "backup.json").read_text())
    assert saved["status"] == "failed" and "did not reach the WAL archive" in saved["error"], saved
    missing = missing_segments(saved["error"])
    assert missing, saved["error"]
    for name in missing:
        assert (pg.wal_dir / "archive_status" / f"{name}.ready").exists() and not (pg.archive_dir / name).exists()
    assert record(runs.state_dir, label)["outcome"] == "stopped", "the run's own stop ended it and said so"
    assert run.result["stopped"] is True and run.result["record_written"] is True, run.result
    assert "The backup was stopped; " in run.output, "a stop that ended the backup before its archive wait stopped it"

    breakable_archiving.unlink()
    for name in missing:
        pg.wait_archived(name)
    nxt = runs(pg, "next", exclusive_backup_archive_timeout=60).wait()
    assert nxt.rc == 0 and nxt.result["status"] == "complete", nxt.output[-3000:]
    assert "something other than" not in nxt.output and "another client" not in nxt.output, nxt.output[-3000:]
    assert f"An earlier backup '{label}'" not in nxt.output, "its own stop ended it: nothing ended badly"


def test_safety_stop_of_a_waiting_stop_is_bounded(one_ext_pg, state_dir):
    """The watchdog's stop ends the backup even while archiving fails, instead of waiting with it."""
    pg = one_ext_pg
    label = label_for("watchdog-wait", pg)
    conn = dict(connection(pg), state_dir=str(state_dir))
    run_tasks([task("pg_start_backup", label=label, fast=True, max_duration=3, **conn)])
    pg.break_archiving()
    began = time.monotonic()
    wait_for(lambda: record(state_dir, label)["outcome"] != "running", 3 + 10 + 20)
    ended = record(state_dir, label)
    print("\nMEASURED pg%d safety stop with archiving broken: recorded %s %.1f s after archiving broke (lease 3 s)"
          % (pg.major, ended["outcome"], time.monotonic() - began))
    assert ended["outcome"] == "expired-stopped" and ended.get("archive_wait_cut") is True, ended
    assert not pg.in_backup() and not pg.sql("SELECT pid FROM pg_stat_activity WHERE wait_event = 'BackupWaitWalArchive'")
