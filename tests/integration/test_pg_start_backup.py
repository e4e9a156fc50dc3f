"""pg_start_backup through ansible-playbook against real servers."""

import sys
import time
import uuid

from runner import connection, run_tasks, start_tasks, task


def test_start_is_idempotent_per_label_and_refuses_another(pg):
    label = "nightly 'quoted'; DROP TABLE x; -- %s" % uuid.uuid4()
    conn = connection(pg)
    empty, multiline, too_long, first, again, other = run_tasks([
        task("pg_start_backup", label="", **conn),
        task("pg_start_backup", label="two\nlines", **conn),
        task("pg_start_backup", label="é" * 513, **conn),
        task("pg_start_backup", label=label, fast=True, **conn),
        task("pg_start_backup", label=label, **conn),
        task("pg_start_backup", label="someone else", **conn),
    ])
    assert empty["failed"] and "empty" in empty["msg"]
    assert multiline["failed"] and "line break" in multiline["msg"]
    assert too_long["failed"] and "1026 bytes" in too_long["msg"]

    assert not first.get("failed"), first["msg"]
    assert first["changed"] is True
    text = pg.backup_label()
    assert first["backup_label"] == text
    assert "LABEL: %s\n" % label in text, "the label is stored literally"
    assert first["api"] == pg.api
    assert "START WAL LOCATION: %s (file %s)" % (first["start_lsn"], first["start_wal_file"]) in text
    assert "CHECKPOINT LOCATION: %s" % first["checkpoint_lsn"] in text
    assert first["timeline"] == 1 and first["start_time"] in text
    assert first["tablespace_map"] == []
    assert any("pg_start_backup(" in q for q in first["queries"])

    assert not again.get("failed") and again["changed"] is False
    assert again["start_lsn"] == first["start_lsn"] and again["backup_label"] == text
    assert not any("pg_start_backup(" in q for q in again["queries"])

    assert other["failed"] and other["changed"] is False
    assert label in other["msg"] and first["start_time"] in other["msg"]
    assert pg.backup_label() == text, "the refused start must leave the running backup alone"


def test_check_mode_changes_nothing(pg):
    label = "check-%s" % uuid.uuid4()
    conn = connection(pg)
    checked_start, info_after_check, started, checked_stop, info_after_stop_check = run_tasks([
        dict(task("pg_start_backup", label=label, fast=True, **conn), check_mode=True),
        task("pg_backup_info", **conn),
        task("pg_start_backup", label=label, fast=True, **conn),
        dict(task("pg_stop_backup", label=label, **conn), check_mode=True),
        task("pg_backup_info", **conn),
    ])
    assert checked_start["changed"] is True and not checked_start.get("failed")
    assert checked_start["start_lsn"] is None
    assert any("pg_start_backup(" in q and label in q for q in checked_start["queries"])
    assert info_after_check["in_backup"] is False
    assert started["changed"] is True
    assert checked_stop["changed"] is True and checked_stop["stop_lsn"] is None
    assert any("pg_stop_backup(" in q for q in checked_stop["queries"])
    assert info_after_stop_check["in_backup"] is True
    assert info_after_stop_check["backup"]["label"] == label
    assert pg.in_backup()


def test_two_starts_racing_from_two_processes_one_wins(pg):
    labels = ["race-a-%s" % uuid.uuid4(), "race-b-%s" % uuid.uuid4()]
    conn = connection(pg)
    # Both playbooks sleep until the same instant, so both starts hit the server together.
    go = time.time() + 5
    barrier = {"ansible.builtin.command": {"argv": [sys.executable, "-c",
                                                    "import time; time.sleep(max(0, %f - time.time()))" % go]}}
    runs = [start_tasks([barrier, task("pg_start_backup", label=label, fast=True, **conn)]) for label in labels]
    results = [run.wait().result[1] for run in runs]

    winners = [r for r in results if not r.get("failed")]
    losers = [r for r in results if r.get("failed")]
    assert len(winners) == 1 and len(losers) == 1, results
    winner, loser = winners[0], losers[0]
    assert winner["changed"] is True
    assert loser["changed"] is False
    assert "Another exclusive backup is in progress" in loser["msg"]
    assert not any("pg_stop_backup" in q for q in loser["queries"]), "the loser must stop nothing"
    assert pg.in_backup() and "LABEL: %s\n" % winner["label"] in pg.backup_label()


def test_user_without_execute_gets_the_grant_to_run(pg):
    role = "t_backup_%s" % uuid.uuid4().hex[:8]
    pg.sql('CREATE ROLE "%s" LOGIN' % role)
    try:
        conn = connection(pg, user=role)
        label = "least-privilege-%s" % uuid.uuid4()
        denied_start, denied_stop = run_tasks([
            task("pg_start_backup", label=label, fast=True, **conn),
            task("pg_stop_backup", label=label, **conn),
        ])
        assert denied_start["failed"] and not pg.in_backup()
        start_fn = "pg_catalog.pg_start_backup(text, boolean%s)" % (", boolean" if pg.api == "native" else "")
        read_fn = "pg_catalog.pg_read_file(text, bigint, bigint, boolean)"
        assert denied_start["grant"] == 'GRANT EXECUTE ON FUNCTION %s, %s TO "%s";' % (start_fn, read_fn, role)
        assert denied_start["grant"] in denied_start["msg"]
        assert denied_stop["failed"] and 'TO "%s";' % role in denied_stop["msg"]

        # The GRANTs the messages name are all a least-privileged role needs.
        pg.sql(denied_start["grant"], dbname=pg.backup_db)
        pg.sql(denied_stop["grant"], dbname=pg.backup_db)
        started, stopped = run_tasks([
            task("pg_start_backup", label=label, fast=True, **conn),
            task("pg_stop_backup", label=label, archive_timeout=60, **conn),
        ])
        assert started["changed"] is True and not started.get("failed"), started.get("msg")
        assert stopped["changed"] is True and stopped["archived"] is True, stopped.get("msg")
    finally:
        pg.end_backup_if_any()
        pg.sql('DROP OWNED BY "%s"' % role, dbname=pg.backup_db)
        pg.sql('DROP ROLE "%s"' % role)


def test_standby_is_refused(pg, scratch):
    standby = pg.make_standby(scratch / "standby")
    try:
        conn = connection(standby)
        start, stop, info = run_tasks([
            task("pg_start_backup", label="on-standby", **conn),
            task("pg_stop_backup", force=True, **conn),
            task("pg_backup_info", **conn),
        ])
    finally:
        standby.destroy()
    assert start["failed"] and "in recovery" in start["msg"] and "primary" in start["msg"]
    assert stop["failed"] and "in recovery" in stop["msg"]
    assert info["in_recovery"] is True and info["in_backup"] is False
    assert not pg.in_backup()


def test_wal_level_minimal_and_archive_mode_off(pg):
    label = "no-archive-%s" % uuid.uuid4()
    conn = connection(pg)
    try:
        pg.configure(archive_mode="off")
        pg.restart()
        info_off, started, stopped = run_tasks([
            task("pg_backup_info", **conn),
            task("pg_start_backup", label=label, fast=True, **conn),
            task("pg_stop_backup", label=label, **conn),
        ])
        pg.configure(wal_level="minimal", archive_mode="off", max_wal_senders=0)
        pg.restart()
        minimal_start, minimal_info = run_tasks([
            task("pg_start_backup", label=label, **conn),
            task("pg_backup_info", **conn),
        ])
    finally:
        pg.configure()
        pg.restart()
    assert info_off["archiving"]["healthy"] is False and "archive_mode is off" in info_off["archiving"]["reason"]
    assert started["changed"] is True
    assert stopped["changed"] is True and stopped["archived"] is False
    warning = " ".join(stopped["warnings"])
    assert "archive_mode is off" in warning
    assert started["start_wal_file"] in warning and stopped["stop_wal_file"] in warning
    assert minimal_start["failed"] and "wal_level is minimal" in minimal_start["msg"]
    assert minimal_info["archiving"]["healthy"] is False and "minimal" in minimal_info["archiving"]["reason"]


def test_extension_missing_in_login_db(ext_pg, db):
    label = "ext-%s" % uuid.uuid4()
    conn = connection(ext_pg, dbname=db)
    missing, stop_nothing, checked, created, stopped = run_tasks([
        task("pg_start_backup", label=label, **conn),
        task("pg_stop_backup", label=label, **conn),
        dict(task("pg_start_backup", label=label, create_extension=True, **conn), check_mode=True),
        task("pg_start_backup", label=label, fast=True, create_extension=True, **conn),
        task("pg_stop_backup", label=label, **conn),
    ])
    assert missing["failed"] and "not installed in database '%s'" % db in missing["msg"]
    assert "CREATE EXTENSION pg_exclusive_backup" in missing["msg"] and "create_extension: true" in missing["msg"]
    assert stop_nothing["changed"] is False and not stop_nothing.get("failed")
    assert checked["changed"] is True and "CREATE EXTENSION IF NOT EXISTS pg_exclusive_backup" in checked["queries"]
    assert created["changed"] is True and created["api"] == "extension", created.get("msg")
    assert "CREATE EXTENSION IF NOT EXISTS pg_exclusive_backup" in created["queries"], "check mode created it"
    assert stopped["archived"] is True
    assert ext_pg.value("SELECT count(*) FROM pg_extension WHERE extname = 'pg_exclusive_backup'", dbname=db) == 1
