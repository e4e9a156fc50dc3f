"""pg_stop_backup through ansible-playbook against real servers."""

import uuid

from playbook import connection, run_tasks, task


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
    # The server's own arithmetic agrees with wal.py's.
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


def test_archive_timeout_stops_and_names_the_missing_segment(pg):
    label = "timeout-%s" % uuid.uuid4()
    pg.start_backup(label)
    pg.break_archiving()
    conn = connection(pg)
    stopped, = run_tasks([task("pg_stop_backup", label=label, archive_timeout=3, **conn)])
    assert stopped["failed"] and stopped["changed"] is True
    assert not pg.in_backup(), "the backup is stopped even though its WAL is not archived"
    assert stopped["stop_wal_file"] in stopped["missing_wal_files"]
    assert stopped["stop_wal_file"] in stopped["msg"]
    assert stopped["last_failed_wal"] and stopped["last_failed_wal"] in stopped["msg"]
    assert stopped["archived"] is False


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
