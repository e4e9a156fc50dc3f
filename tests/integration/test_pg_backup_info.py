"""pg_backup_info through ansible-playbook against real servers."""

import time
import uuid

from runner import connection, run_tasks, task


def test_info_reports_backup_tablespaces_archiving(pg):
    space = "ts_%s" % uuid.uuid4().hex[:8]
    location = pg.create_tablespace(space)
    label = "info-%s" % uuid.uuid4()
    conn = connection(pg)
    try:
        idle, started, busy = run_tasks([
            task("pg_backup_info", **conn),
            task("pg_start_backup", label=label, fast=True, **conn),
            task("pg_backup_info", data_directory=str(pg.data_dir), **conn),
        ])
        oid = pg.value("SELECT oid::bigint FROM pg_tablespace WHERE spcname = %s", (space,))
    finally:
        pg.end_backup_if_any()
        pg.sql("DROP TABLESPACE %s" % space)

    assert idle["server_running"] is True and idle["changed"] is False
    assert idle["server_version_num"] // 10000 == pg.major
    assert idle["in_recovery"] is False and idle["api"] == pg.api and idle["api_reason"] is None
    assert idle["in_backup"] is False and idle["backup"] is None
    assert idle["data_directory"] == str(pg.data_dir)
    archiving = idle["archiving"]
    assert archiving["archive_mode"] == "on" and archiving["wal_level"] == "replica"
    assert archiving["archive_command"] and archiving["healthy"] is True, archiving["reason"]
    assert isinstance(archiving["archived_count"], int)

    assert started["tablespace_map"] == [{"oid": oid, "name": None, "location": str(location), "path": str(location)}]
    assert {"oid": oid, "name": space, "location": str(location), "path": str(location)} in busy["tablespaces"]
    assert busy["in_backup"] is True
    backup = busy["backup"]
    assert backup["label"] == label and backup["method"] == "pg_start_backup"
    assert backup["start_lsn"] == started["start_lsn"] and backup["timeline"] == 1
    assert backup["backup_from"] == "primary" and 0 <= backup["age"] < 600
    assert busy["files"]["backup_label"] is True and busy["files"]["tablespace_map"] is True
    assert "in progress" in busy["advice"]


def test_info_archiving_unhealthy_after_failure(pg):
    pg.break_archiving()
    pg.sql("CREATE TABLE IF NOT EXISTS archiving_probe (i int)")
    pg.sql("INSERT INTO archiving_probe VALUES (1)")
    pg.sql("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 30
    while pg.value("SELECT last_failed_time IS NULL OR last_failed_time < last_archived_time FROM pg_stat_archiver"):
        assert time.monotonic() < deadline, "the archiver never failed"
        time.sleep(0.2)
    info, = run_tasks([task("pg_backup_info", **connection(pg))])
    assert info["archiving"]["healthy"] is False
    assert "failed" in info["archiving"]["reason"] and info["archiving"]["last_failed_wal"] in info["archiving"]["reason"]


def test_api_verdict_is_per_database(ext_pg, db):
    without, with_extension = run_tasks([
        task("pg_backup_info", **connection(ext_pg, dbname=db)),
        task("pg_backup_info", **connection(ext_pg)),
    ])
    assert without["api"] == "none" and db in without["api_reason"]
    assert with_extension["api"] == "extension" and with_extension["api_reason"] is None


def test_server_down_with_data_directory(pg):
    label = "crash-%s" % uuid.uuid4()
    pg.start_backup(label)
    pg.crash()
    conn = connection(pg)
    signal_file = pg.data_dir / "standby.signal"
    down, without_dir, _touch, as_standby, _remove = run_tasks([
        task("pg_backup_info", data_directory=str(pg.data_dir), **conn),
        task("pg_backup_info", **conn),
        # The same files seen as a standby's: the advice must turn around.
        {"ansible.builtin.file": {"path": str(signal_file), "state": "touch"}},
        task("pg_backup_info", data_directory=str(pg.data_dir), **conn),
        {"ansible.builtin.file": {"path": str(signal_file), "state": "absent"}},
    ])
    assert not signal_file.exists()
    assert down["server_running"] is False and down["connection_error"]
    assert down["api"] == "none" and down["server_version"] == str(pg.major)
    assert down["in_backup"] is True and down["backup"]["label"] == label
    assert down["files"]["backup_label"] is True
    assert down["files"]["needed_wal_files"] == [down["backup"]["start_wal_file"]]
    assert down["files"]["missing_wal_files"] == []
    assert "left backup_label behind" in down["advice"] and "should start" in down["advice"]
    assert 0 <= down["backup"]["age"] < 600
    assert without_dir["failed"] and "Could not connect" in without_dir["msg"]
    assert "data_directory" in without_dir["msg"]
    assert as_standby["files"]["signal_files"] == ["standby.signal"]
    assert "Never remove it" in as_standby["advice"] and "move backup_label" not in as_standby["advice"]


def test_connection_errors_say_what_to_do(pg):
    secret = "s3cret-%s" % uuid.uuid4().hex
    bad_db, bad_port = run_tasks([
        task("pg_backup_info", login_password=secret, **{**connection(pg), "login_db": "no_such_db"}),
        task("pg_backup_info", login_password=secret, **{**connection(pg), "login_port": 1}),
    ])
    assert bad_db["failed"] and 'database "no_such_db" does not exist' in bad_db["msg"]
    assert "Set login_db" in bad_db["msg"]
    assert bad_port["failed"] and "server is running" in bad_port["msg"]
    for result in (bad_db, bad_port):
        assert secret not in result["_output"] and secret not in str(result)
