"""pg_stop_backup through ansible-playbook against real servers."""

import time
import uuid

import psycopg2

from runner import connection, run_tasks, task
from watchdogs import end_watchdogs, record, wait_for, watchdog_running


def test_stop_waits_until_wal_and_history_file_are_archived(pg):
    label = "stop-%s" % uuid.uuid4()
    conn = connection(pg)
    started, stopped, again = run_tasks([
        task("pg_start_backup", label=label, fast=True, **conn),
        task("pg_stop_backup", label=label, archive_timeout=60, **conn),
        task("pg_stop_backup", label=label, **conn),
    ])
    assert stopped["changed"] is True and stopped["archived"] is True, stopped.get("msg")
    assert stopped["label"] == label and not pg.in_backup()
    # The server's own arithmetic agrees with wal/arithmetic.py's.
    assert stopped["stop_wal_file"] == pg.walfile(stopped["stop_lsn"])
    assert stopped["backup_history_file"] == "%s.%08X.backup" % (
        started["start_wal_file"], int(started["start_lsn"].split("/")[1], 16) % (16 * 1024 * 1024))
    # Archived means in the archive, now: no waiting by the test.
    assert (pg.archive_dir / stopped["stop_wal_file"]).is_file()
    history = (pg.archive_dir / stopped["backup_history_file"]).read_text()
    assert "LABEL: %s\n" % label in history and "STOP WAL LOCATION: %s" % stopped["stop_lsn"] in history
    assert stopped["duration"] >= 0
    assert again["changed"] is False and not again.get("failed") and again["stop_lsn"] is None


def test_stop_guarded_by_label_and_force(pg):
    theirs = "theirs-%s" % uuid.uuid4()
    mine = "mine-%s" % uuid.uuid4()
    pg.start_backup(theirs)
    conn = connection(pg)
    unguarded, wrong_label, info, forced, nothing_left = run_tasks([
        task("pg_stop_backup", **conn),
        task("pg_stop_backup", label=mine, **conn),
        task("pg_backup_info", **conn),
        task("pg_stop_backup", label=mine, force=True, archive_timeout=60, **conn),
        task("pg_stop_backup", label=mine, **conn),
    ])
    assert unguarded["failed"] and "force: true" in unguarded["msg"]
    assert wrong_label["failed"] and wrong_label["changed"] is False
    assert theirs in wrong_label["msg"] and mine in wrong_label["msg"] and "Nothing was stopped" in wrong_label["msg"]
    assert info["in_backup"] is True and info["backup"]["label"] == theirs, "a guarded stop must stop nothing"
    assert forced["changed"] is True and forced["forced"] is True and forced["label"] == theirs
    assert forced["archived"] is True
    assert any(theirs in warning for warning in forced["warnings"])
    assert nothing_left["changed"] is False and not nothing_left.get("failed")
    assert not pg.in_backup()


WAITING = "SELECT pid FROM pg_stat_activity WHERE wait_event = 'BackupWaitWalArchive'"


def test_archive_timeout_stops_and_names_the_missing_segment(pg):
    """The extension's stop waits in the server: archive_timeout bounds that statement, and the wait after it."""
    label = "timeout-%s" % uuid.uuid4()
    pg.start_backup(label)
    pg.break_archiving()
    conn = connection(pg)
    began = time.monotonic()
    stopped, = run_tasks([task("pg_stop_backup", label=label, archive_timeout=3, **conn)])
    took = time.monotonic() - began
    assert stopped["failed"] and stopped["changed"] is True
    assert not pg.in_backup(), "the backup is stopped even though its WAL is not archived"
    assert not pg.sql(WAITING), "no stop is left waiting for the archive"
    assert stopped["archive_wait_cut"] is (pg.api == "extension")
    # The stop LSN of a cut stop comes from its history file: the same one the server computes.
    assert stopped["stop_lsn"] and stopped["stop_wal_file"] == pg.walfile(stopped["stop_lsn"])
    assert stopped["stop_wal_file"] in stopped["missing_wal_files"]
    assert stopped["stop_wal_file"] in stopped["msg"] and "within 3 seconds" in stopped["msg"]
    assert stopped["last_failed_wal"] and stopped["last_failed_wal"] in stopped["msg"]
    assert stopped["archived"] is False
    # ansible-playbook's own start and end take a few seconds on top of the 3.
    assert took < 3 + 15, took


def test_wait_for_archive_false_with_a_waiting_extension_is_bounded_too(ext_pg):
    label = "nowait-broken-%s" % uuid.uuid4()
    ext_pg.start_backup(label)
    ext_pg.break_archiving()
    stopped, = run_tasks([task("pg_stop_backup", label=label, wait_for_archive=False, archive_timeout=2,
                               **connection(ext_pg))])
    assert not stopped.get("failed") and stopped["changed"] is True, stopped.get("msg")
    assert stopped["archive_wait_cut"] is True and stopped["archived"] is False and stopped["stop_lsn"]
    assert any("wait_for_archive is false" in warning for warning in stopped["warnings"])
    assert not ext_pg.in_backup() and not ext_pg.sql(WAITING)


def test_wait_for_archive_false_warns(pg):
    label = "nowait-%s" % uuid.uuid4()
    conn = connection(pg)
    started, stopped = run_tasks([
        task("pg_start_backup", label=label, fast=True, **conn),
        task("pg_stop_backup", label=label, wait_for_archive=False, **conn),
    ])
    assert stopped["changed"] is True and stopped["archived"] is False
    warning = " ".join(stopped["warnings"])
    assert "wait_for_archive is false" in warning
    assert started["start_wal_file"] in warning and stopped["stop_wal_file"] in warning
    assert not any("pg_stat_archiver" in q for q in stopped["queries"])


def test_backup_ended_by_another_client_fails_the_stop_and_ends_the_watchdog(pg, scratch):
    """Defect: the stop found nothing in progress, returned ok, and the run recorded 'complete'."""
    label = "ended-%s" % uuid.uuid4()
    state_dir = str(scratch / "state")
    conn = connection(pg)
    started, = run_tasks([task("pg_start_backup", label=label, fast=True, max_duration=600,
                               state_dir=state_dir, **conn)])
    rec = record(state_dir, label)
    assert watchdog_running(rec)
    try:
        pg.stop_backup()   # another client, outside the collection
        stopped, info = run_tasks([
            task("pg_stop_backup", label=label, start_lsn=started["start_lsn"], state_dir=state_dir, **conn),
            task("pg_backup_info", state_dir=state_dir, **conn),
        ])
        assert stopped["failed"] and stopped["ended_without_stop"], stopped
        assert "ended without this stop" in stopped["msg"] and "not usable" in stopped["msg"]
        assert stopped["watchdog_ended"] is True
        wait_for(lambda: not watchdog_running(rec), 10)
        assert record(state_dir, label)["outcome"] == "ended-without-stop"
        mine = [r for r in info["state_records"] if r["label"] == label][0]
        assert mine["effective_outcome"] == "ended-without-stop" and "not usable" in mine["what_to_do"]
        assert not pg.in_backup()
    finally:
        end_watchdogs(state_dir)


def test_same_label_started_again_by_someone_else_is_not_this_runs_backup(pg, scratch):
    """A restart ended this run's backup and another client started one under the same label:
    the stop must stop nothing, because the start LSN differs."""
    label = "again-%s" % uuid.uuid4()
    state_dir = str(scratch / "state")
    conn = connection(pg)
    started, = run_tasks([task("pg_start_backup", label=label, fast=True, state_dir=state_dir, **conn)])
    pg.restart() if pg.api == "native" else pg.stop_backup()
    pg.sql("CREATE TABLE IF NOT EXISTS pgx_advance (i int); INSERT INTO pgx_advance VALUES (1)")
    pg.sql("SELECT pg_switch_wal()")
    pg.start_backup(label)
    second_start = pg.value("SELECT pg_catalog.substring(pg_read_file('backup_label'), "
                            "'^START WAL LOCATION: ([0-9A-F/]+)')")
    assert second_start != started["start_lsn"]
    stopped, = run_tasks([task("pg_stop_backup", label=label, start_lsn=started["start_lsn"],
                               state_dir=state_dir, **conn)])
    assert stopped["failed"] and stopped["ended_without_stop"], stopped
    assert started["start_lsn"] in stopped["msg"] and second_start in stopped["msg"]
    assert pg.in_backup(), "the other client's backup must be left alone"
    assert record(state_dir, label)["outcome"] == "ended-without-stop"


def test_guarded_stop_statement_checks_the_start_lsn(pg):
    from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_api
    start = pg.start_backup("lsn-guard")
    conn = psycopg2.connect(**pg.conninfo(pg.backup_db))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(backup_api.GUARDED_STOP_SQL[pg.api], backup_api.guarded_stop_args("lsn-guard", "0/1"))
            assert cur.fetchone()[0] is None and pg.in_backup()
            # Zero-padded, as newer releases print LSNs: compared as LSNs, not as text.
            high, low = start.split("/")
            cur.execute(backup_api.GUARDED_STOP_SQL[pg.api],
                        backup_api.guarded_stop_args("lsn-guard", "%s/%08X" % (high, int(low, 16))))
            assert cur.fetchone()[0] and not pg.in_backup()
    finally:
        conn.close()


def test_check_mode_shows_the_bounded_stop_and_stops_nothing(pg):
    label = "check-%s" % uuid.uuid4()
    pg.start_backup(label)
    would, = run_tasks([task("pg_stop_backup", label=label, archive_timeout=7, **connection(pg))], check=True)
    assert would["changed"] is True and not would.get("failed") and pg.in_backup()
    assert any("set_config('statement_timeout', '7000ms', false)" in q for q in would["queries"]), would["queries"]
    assert any("pg_stop_backup" in q for q in would["queries"])
