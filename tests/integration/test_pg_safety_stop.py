"""The safety stop on real servers, on every major selected (14 native, 15+ extension).

Every watchdog a test leaves is found through its state record and killed
by PID in teardown.
"""

import time
import uuid

import psycopg2

from runner import connection, run_tasks, task
from watchdogs import record, wait_for, watchdog_running

LEASE = 3


def test_watchdog_stops_an_expired_backup_and_everyone_hears_of_it(pg, state_dir):
    label = "lease 'expires'; %s" % uuid.uuid4()
    conn = dict(connection(pg), state_dir=str(state_dir))
    started, = run_tasks([task("pg_start_backup", label=label, fast=True, max_duration=LEASE,
                               controller_host="ctl.example", job_id="4711", **conn)])
    # ansible-playbook and the module have exited: the watchdog lives on its own.
    assert started["changed"] and not started.get("failed"), started
    written = started["state_record"]
    assert written["outcome"] == "running" and written["lease"] == LEASE and written["job_id"] == "4711"
    assert written["controller_host"] == "ctl.example" and written["watchdog_pid"]
    rec = record(state_dir, label)
    # On a loaded machine the playbook may outlast the lease: then the watchdog has already acted.
    assert rec["outcome"] in ("running", "expired-stopped")
    assert rec["outcome"] != "running" or (watchdog_running(rec) and pg.in_backup())
    waited = wait_for(lambda: not pg.in_backup(), LEASE + 15, explain=lambda: record(state_dir, label))
    seconds = time.time() - rec["started_epoch"]
    assert seconds < LEASE + 5, "stopped %.1f s after the start, lease %d s" % (seconds, LEASE)
    wait_for(lambda: record(state_dir, label)["outcome"] != "running", 10)
    rec = record(state_dir, label)
    assert rec["outcome"] == "expired-stopped" and rec["stop_lsn"], rec
    wait_for(lambda: not watchdog_running(rec), 5)
    print("pg%d: left backup mode %.2f s after the start (lease %d s, waited %.2f s)"
          % (pg.major, seconds, LEASE, waited))

    stop, info, next_start, next_stop, again = run_tasks([
        task("pg_stop_backup", label=label, **conn),
        task("pg_backup_info", **conn),
        task("pg_start_backup", label="next " + label, fast=True, **conn),
        task("pg_stop_backup", label="next " + label, **conn),
        task("pg_start_backup", label="third " + label, fast=True, **conn),
    ])
    assert stop["failed"] and stop["safety_stopped"] and "safety stop" in stop["msg"], stop
    assert "not usable" in stop["msg"] and stop["stop_lsn"] == rec["stop_lsn"]
    reported = [r for r in info["state_records"] if r["label"] == label]
    assert reported and reported[0]["effective_outcome"] == "expired-stopped" and reported[0]["what_to_do"]
    assert next_start["changed"] and [f["label"] for f in next_start["earlier_failures"]] == [label]
    assert any(label in w and "expired-stopped" in w for w in next_start["warnings"]), next_start["warnings"]
    assert not next_stop.get("failed") and record(state_dir, "next " + label)["outcome"] == "stopped"
    assert again["earlier_failures"] == [], "an earlier failure is reported by one start only"
    pg.stop_backup()


def test_normal_stop_ends_the_watchdog(pg, state_dir):
    label = "normal-%s" % uuid.uuid4()
    conn = dict(connection(pg), state_dir=str(state_dir))
    started, stopped = run_tasks([
        task("pg_start_backup", label=label, fast=True, max_duration=600, **conn),
        task("pg_stop_backup", label=label, **conn),
    ])
    assert started["changed"] and stopped["changed"] and stopped["watchdog_ended"], stopped
    rec = record(state_dir, label)
    assert rec["outcome"] == "stopped" and rec["stop_lsn"] == stopped["stop_lsn"]
    wait_for(lambda: not watchdog_running(rec), 5)


def test_watchdog_leaves_another_label_alone(pg, state_dir):
    label = "mine-%s" % uuid.uuid4()
    conn = dict(connection(pg), state_dir=str(state_dir))
    # Long enough for the playbook to end and the label to change hands on a loaded machine.
    started, = run_tasks([task("pg_start_backup", label=label, fast=True, max_duration=LEASE + 7, **conn)])
    assert started["changed"]
    # Outside the collection: our backup ends and someone else's begins before the lease expires.
    pg.stop_backup()
    pg.start_backup("someone else's")
    wait_for(lambda: record(state_dir, label)["outcome"] != "running", LEASE + 7 + 15)
    rec = record(state_dir, label)
    assert rec["outcome"] == "expired-other-label" and rec["other_label"] == "someone else's"
    assert "LABEL: someone else's" in pg.backup_label(), "the watchdog must not stop another label"
    pg.stop_backup()


def test_password_reaches_the_watchdog_through_a_pipe_only(pg, state_dir):
    label = "secret-%s" % uuid.uuid4()
    password = "pw-" + uuid.uuid4().hex
    conn = dict(connection(pg), state_dir=str(state_dir), login_password=password)
    started, = run_tasks([task("pg_start_backup", label=label, fast=True, max_duration=600, **conn)])
    assert started["changed"]
    rec = record(state_dir, label)
    pid = rec["watchdog_pid"]
    for name in ("cmdline", "environ"):
        assert password.encode() not in open(f"/proc/{pid}/{name}", "rb").read(), name
    assert password not in open(rec["_path"]).read()
    assert password not in started["_output"]
    run_tasks([task("pg_stop_backup", label=label, **conn)])


def test_guarded_stop_statement_stops_only_its_label(pg):
    """The SQL the watchdog and the stop use, alone: no label match, no stop."""
    from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_api
    pg.start_backup("theirs")
    conn = psycopg2.connect(**pg.conninfo(pg.backup_db))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(backup_api.GUARDED_STOP_SQL[pg.api], backup_api.guarded_stop_args("mine"))
            assert cur.fetchone()[0] is None and pg.in_backup()
            cur.execute(backup_api.READ_LABEL_SQL)
            assert cur.fetchone()[0] == "theirs"
            cur.execute(backup_api.GUARDED_STOP_SQL[pg.api], backup_api.guarded_stop_args("theirs"))
            assert cur.fetchone()[0] and not pg.in_backup()
            cur.execute(backup_api.GUARDED_STOP_SQL[pg.api], backup_api.guarded_stop_args("theirs"))
            assert cur.fetchone()[0] is None, "nothing in progress: nothing stopped, no error"
    finally:
        conn.close()
