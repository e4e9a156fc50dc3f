import errno
import json
import os
import pwd
import tarfile

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_record
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import verify_restore as rc
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import EMPTY_DIRS
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import Restore
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.layout import (
    links_out_of, real_directory, relink_tablespaces, rewrite_tablespace_map, tablespaces_without_copy)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.recovery_target import quote, restore_command_for

ME = pwd.getpwuid(os.geteuid()).pw_name
LABEL = ("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n"
         "BACKUP METHOD: pg_start_backup\nBACKUP FROM: primary\nSTART TIME: 2026-11-21 10:56:35 UTC\n"
         "LABEL: drill\nSTART TIMELINE: 1\n")


def settings(text):
    return dict(line.split(" = ", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_restore_command_only_reads_the_archive():
    assert restore_command_for("/srv/wal archive/") == "cp '/srv/wal archive'/%f %p"
    assert restore_command_for("/a/it's 100%") == "cp '/a/it'\"'\"'s 100%%'/%f %p"


def test_restore_command_without_archive_reads_nothing():
    assert restore_command_for(None) == "false"


def test_quote():
    assert quote("it's") == "'it''s'"


def test_rewrite_tablespace_map():
    text = "16384 /old/a\n16385 /old/b\n"
    assert rewrite_tablespace_map(text, {"16385": "/new/b"}) == "16384 /old/a\n16385 /new/b\n"


def test_tablespaces_without_copy():
    text = "16384 /live/a\n16385 /live/b\n"
    assert tablespaces_without_copy(text, {"16385": "/w/t/16385"}) == [{"oid": 16384, "name": None, "location": "/live/a", "path": "/live/a"}]
    assert tablespaces_without_copy(text, {"16384": "/w/a", "16385": "/w/b"}) == []


@pytest.fixture
def live_wal(tmp_path):
    """A directory standing for the live server's WAL, with a segment in it."""
    wal = tmp_path / "live-wal"
    wal.mkdir()
    (wal / "000000010000000000000003").write_text("live segment")
    return wal


def test_real_directory_replaces_the_pg_wal_link_without_touching_its_target(tmp_path, live_wal):
    pg_wal = tmp_path / "data" / "pg_wal"
    pg_wal.parent.mkdir()
    pg_wal.symlink_to(live_wal)
    real_directory(str(pg_wal))
    assert pg_wal.is_dir() and not pg_wal.is_symlink() and list(pg_wal.iterdir()) == []
    assert (live_wal / "000000010000000000000003").read_text() == "live segment"


def test_real_directory_replaces_a_file_and_a_dangling_link_and_creates_a_missing_one(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("file", "dangling", "missing"):
        real_directory(str(tmp_path / name))
        assert (tmp_path / name).is_dir() and not (tmp_path / name).is_symlink()


def test_real_directory_keeps_a_real_one_with_the_backups_wal(tmp_path):
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    (pg_wal / "000000010000000000000002").write_text("included WAL")
    real_directory(str(pg_wal))
    assert (pg_wal / "000000010000000000000002").read_text() == "included WAL"


def test_relink_tablespaces_points_every_link_into_the_copy(tmp_path):
    data = tmp_path / "work" / "data"
    (data / "pg_tblspc").mkdir(parents=True)
    (data / "pg_tblspc" / "16384").symlink_to(tmp_path / "live-ts")
    (data / "pg_tblspc" / "16390").mkdir()   # in place
    copies = {"16384": str(tmp_path / "work" / "ts" / "16384"), "16385": str(tmp_path / "work" / "ts" / "16385")}
    relink_tablespaces(str(data), copies)
    assert os.readlink(str(data / "pg_tblspc" / "16384")) == copies["16384"]
    assert os.readlink(str(data / "pg_tblspc" / "16385")) == copies["16385"]
    assert (data / "pg_tblspc" / "16390").is_dir() and not (data / "pg_tblspc" / "16390").is_symlink()


def test_a_link_without_a_copy_means_the_check_could_not_run(tmp_path):
    data = tmp_path / "data"
    (data / "pg_tblspc").mkdir(parents=True)
    (data / "pg_tblspc" / "16384").symlink_to("/srv/live-ts")
    with pytest.raises(BackupError) as caught:
        relink_tablespaces(str(data), {})
    error = rc.as_check_error(caught.value)
    assert "could not run" in error.msg and "16384 (/srv/live-ts)" in error.msg
    assert error.facts == {"check_ran": False}


def test_links_out_of(tmp_path):
    work = tmp_path / "work"
    (work / "data" / "sub").mkdir(parents=True)
    (work / "ts").mkdir()
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (work / "data" / "in").symlink_to(work / "ts")
    (work / "data" / "sub" / "relative_in").symlink_to(os.path.join("..", "..", "ts"))
    (work / "data" / "out").symlink_to(outside)
    (work / "data" / "sub" / "relative_out").symlink_to(os.path.join("..", "..", "..", "outside", "deep"))
    assert links_out_of(str(work / "data"), str(work)) == ["data/out", "data/sub/relative_out"]


# -- the drill is the engine ---------------------------------------------------------------

def plain_backup(tmp_path, live_wal):
    """A plain backup as a copy of the live layout: its links still in it, a tablespace copied."""
    backup = tmp_path / "backup"
    data = backup / "data"
    (data / "pg_tblspc").mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (data / "backup_label").write_text(LABEL)
    (data / "pg_wal").symlink_to(live_wal)
    (data / "pg_replslot").symlink_to(live_wal)
    (data / "pg_tblspc" / "16384").symlink_to(tmp_path / "live-ts")
    (backup / "tablespaces" / "16384").mkdir(parents=True)
    (backup / "tablespaces" / "16384" / "PG_15_1").write_text("pages")
    (data / "tablespace_map").write_text("16384 %s\n" % (tmp_path / "live-ts"))
    (data / "postgresql.conf").write_text("include 'live.conf'\n")
    (data / "postgresql.auto.conf").write_text("archive_command = 'cp %p /srv/archive/%f'\n")
    return backup


def lay_out_drill(backup, work, record=None):
    """The engine as the drill runs it, up to the start."""
    work.mkdir()
    params = rc.drill_params(str(backup), record or {}, str(work), ME, ME, None, "/srv/wal archive", 5999,
                             "/tmp/pgx-sock-x", 60)
    params["start"] = False
    return Restore(params, connect=None), params


def test_the_drill_leaves_no_way_out_of_its_scratch_directory(tmp_path, live_wal):
    backup = plain_backup(tmp_path, live_wal)
    work = tmp_path / "work"
    engine, _params = lay_out_drill(backup, work)
    result = engine.run()
    data = work / "data"
    for name in EMPTY_DIRS:
        assert (data / name).is_dir() and not (data / name).is_symlink(), name
    assert os.listdir(str(live_wal)) == ["000000010000000000000003"]
    ts = str(work / "tablespaces" / "16384")
    assert os.readlink(str(data / "pg_tblspc" / "16384")) == ts and result["tablespaces"] == {"16384": ts}
    assert (data / "tablespace_map").read_text() == "16384 %s\n" % ts
    assert links_out_of(str(data), str(work)) == []
    # The 15+ label fix, in the copy.
    assert "BACKUP METHOD: streamed" in (data / "backup_label").read_text() and result["label_fixed"] is True
    assert (data / "recovery.signal").exists()
    # The server reads only the configuration written for it; the live one is set aside, untouched.
    assert (work / "live-config" / "postgresql.auto.conf").read_text().startswith("archive_command")
    assert (work / "live-config" / "postgresql.conf").read_text() == "include 'live.conf'\n"
    assert (data / "postgresql.auto.conf").read_text() == ""
    assert (work / "pg_hba.conf").read_text() == "local all all trust\n"
    assert settings((data / "postgresql.conf").read_text()) == {
        "restore_command": "'cp ''/srv/wal archive''/%f %p'",
        "archive_mode": "'off'",
        "archive_command": "''",
        "recovery_target": "'immediate'",
        "recovery_target_action": "'promote'",
        "cluster_name": "'pgexclusive-verify-restore'",
        "fsync": "'off'",
        "hot_standby": "'off'",
        "listen_addresses": "''",
        "logging_collector": "'off'",
        "max_connections": "'10'",
        "port": "'5999'",
        "shared_buffers": "'16MB'",
        "ssl": "'off'",
        "unix_socket_directories": "'/tmp/pgx-sock-x'",
        "hba_file": quote(str(work / "pg_hba.conf")),
        "ident_file": quote(str(work / "pg_ident.conf")),
    }


def test_the_drill_refuses_a_configuration_linked_out_of_the_copy(tmp_path, live_wal):
    """postgresql.conf a link to /etc: a restore follows no link out of its target but pg_wal's and pg_tblspc's."""
    backup = plain_backup(tmp_path, live_wal)
    live_conf = tmp_path / "etc-postgresql.conf"
    live_conf.write_text("include 'live.conf'\n")
    (backup / "data" / "postgresql.conf").unlink()
    (backup / "data" / "postgresql.conf").symlink_to(live_conf)
    engine, _params = lay_out_drill(backup, tmp_path / "work")
    with pytest.raises(BackupError, match="holds data/postgresql.conf, which the restore refuses: a symbolic link to"):
        engine.run()
    assert not os.path.lexists(str(tmp_path / "work" / "data" / "postgresql.conf"))
    assert live_conf.read_text() == "include 'live.conf'\n"


def test_the_drill_refuses_a_tablespace_map_entry_without_a_copy(tmp_path, live_wal):
    backup = plain_backup(tmp_path, live_wal)
    (backup / "data" / "pg_tblspc" / "16384").unlink()
    for name in os.listdir(str(backup / "tablespaces" / "16384")):
        os.unlink(str(backup / "tablespaces" / "16384" / name))
    os.rmdir(str(backup / "tablespaces" / "16384"))
    engine, _params = lay_out_drill(backup, tmp_path / "work")
    with pytest.raises(BackupError) as caught:
        engine.run()
    error = rc.as_check_error(caught.value)
    assert "no copy of tablespace 16384" in error.msg and error.facts == {"check_ran": False}
    assert engine.step == "check_targets", "refused before anything is laid out"


def test_the_drill_refuses_any_other_link_out(tmp_path, live_wal):
    backup = plain_backup(tmp_path, live_wal)
    (backup / "data" / "log").symlink_to(tmp_path)
    engine, _params = lay_out_drill(backup, tmp_path / "work")
    with pytest.raises(BackupError) as caught:
        engine.run()
    error = rc.as_check_error(caught.value)
    assert "could not run" in error.msg and "data/log" in error.msg
    assert error.facts == {"check_ran": False}


def test_the_drill_extracts_the_backups_wal_beside_the_live_wal(tmp_path, live_wal):
    """base.tar of an older backup holds pg_wal as a link to the live WAL; pg_wal.tar must not go through it."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "PG_VERSION").write_text("14\n")
    (source / "backup_label").write_text(LABEL)
    (source / "pg_wal").symlink_to(live_wal)
    segment = tmp_path / "000000010000000000000003"
    segment.write_text("archived segment")
    backup = tmp_path / "backup"
    backup.mkdir()
    with tarfile.open(str(backup / "base.tar"), "w") as tar:
        tar.add(str(source), arcname=".")
    with tarfile.open(str(backup / "pg_wal.tar"), "w") as tar:
        tar.add(str(segment), arcname=segment.name)
    work = tmp_path / "work"
    engine, _params = lay_out_drill(backup, work)
    result = engine.run()
    assert result["tablespaces"] == {} and result["label_fixed"] is False
    assert (live_wal / "000000010000000000000003").read_text() == "live segment"
    pg_wal = work / "data" / "pg_wal"
    assert not pg_wal.is_symlink() and (pg_wal / segment.name).read_text() == "archived segment"


def test_the_drill_names_wal_missing_from_the_archive_before_starting(tmp_path, live_wal):
    backup = plain_backup(tmp_path, live_wal)
    record = {"start_wal_file": "000000010000000000000002", "stop_wal_file": "000000010000000000000002",
              "start_lsn": "0/2000028"}
    engine, _params = lay_out_drill(backup, tmp_path / "work", record)
    with pytest.raises(BackupError) as caught:
        engine.run()
    error = rc.as_check_error(caught.value)
    assert error.msg.startswith("The restore check could not run: The WAL segment 000000010000000000000002")


def test_missing_pg_ctl_means_the_check_could_not_run(tmp_path):
    with pytest.raises(BackupError) as caught:
        rc.verify_restore(str(tmp_path / "backup"), str(tmp_path), bindir=str(tmp_path / "bin"))
    assert caught.value.facts == {"check_ran": False}
    assert str(caught.value).startswith("The restore check could not run: there is no pg_ctl in ")
    assert "says nothing about the backup itself" in str(caught.value)


def test_a_socket_or_port_the_host_refuses_is_not_the_backups_fault(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("LOG:  starting PostgreSQL 15\nFATAL:  Unix-domain socket path \"/a/very/long/.s.PGSQL.5999\" "
                   "is too long (maximum 107 bytes)\n")
    engine_error = BackupError("The restored server stopped during recovery.", "Read the log above.")
    error = rc.recovery_error(engine_error, str(log), 60)
    assert error.facts == {"check_ran": False} and "This says nothing about the backup itself" in error.msg
    assert "is too long" in error.msg
    log.write_text("FATAL:  could not locate a valid checkpoint record\n")
    error = rc.recovery_error(engine_error, str(log), 60)
    assert error.facts == {"check_ran": True}
    assert error.msg == "The restored copy did not reach consistency: The restored server stopped during recovery."
    assert error.hint.endswith(rc.NOT_RESTORABLE)
    timed_out = rc.recovery_error(BackupError("slow", "hint", timed_out=True), str(log), 60)
    assert timed_out.msg.startswith("The restored copy did not finish recovery in 60s.")
    assert timed_out.facts == {"check_ran": True}


# -- the user's checks ---------------------------------------------------------------

def test_a_check_without_expect_passes_on_any_row():
    check = {"name": "rows", "sql": "SELECT 1"}
    assert rc.judge(check, row=(0,)) == {"name": "rows", "ok": True, "returned": "0"}
    assert rc.judge(check, row=(None,)) == {"name": "rows", "ok": True, "returned": None}
    assert rc.judge(check, row=None) == {"name": "rows", "ok": False, "returned": None}


def test_a_check_with_expect_compares_the_first_column_as_text():
    check = {"name": "count", "sql": "SELECT count(*) FROM t", "expect": 1000}
    assert rc.judge(check, row=(1000, "x"))["ok"] is True
    assert rc.judge(check, row=(999,)) == {"name": "count", "ok": False, "returned": "999"}
    assert rc.judge(dict(check, expect="1000"), row=(1000,))["ok"] is True
    assert rc.judge(dict(check, expect=True), row=(True,))["ok"] is True
    assert rc.judge(dict(check, expect="true"), row=(True,))["ok"] is True
    assert rc.judge(dict(check, expect="t"), row=(True,))["ok"] is False


def test_a_check_that_errors_keeps_the_error():
    result = rc.judge({"name": "x", "sql": "SELECT nope"}, error='column "nope" does not exist')
    assert result == {"name": "x", "ok": False, "returned": None, "error": 'column "nope" does not exist'}


def test_the_failure_names_the_check_its_sql_and_what_it_returned():
    checks = [{"name": "count", "sql": "SELECT count(*) FROM t ", "expect": 1000, "db": "shop"},
              {"name": "other", "sql": "SELECT 1", "db": "postgres"}]
    results = [rc.judge(checks[0], row=(999,)), rc.judge(checks[1], row=(1,))]
    error = rc.failed_check_error(checks, results)
    assert error.msg == ("The restored copy failed the check 'count': its SQL (SELECT count(*) FROM t) on database "
                         "shop returned '999', expected '1000'.")
    assert error.facts == {"check_ran": True}
    results = [rc.judge(checks[0], error="relation \"t\" does not exist"), rc.judge(checks[1], row=None)]
    error = rc.failed_check_error(checks, results)
    assert "failed: relation \"t\" does not exist (1 more failed: other)." in error.msg
    assert "returned no row" in rc.failed_check_error(checks[1:], results[1:]).msg


def test_checks_are_validated_before_anything_runs():
    rc.validate_checks([{"name": "a", "sql": "SELECT 1"}, {"name": "b", "sql": "SELECT 2"}])
    for bad, text in (([{"name": "a", "sql": "SELECT 1"}, {"name": "a", "sql": "SELECT 2"}], "Two checks"),
                      ([{"name": " ", "sql": "SELECT 1"}], "no name"),
                      ([{"name": "a", "sql": ""}], "no SQL")):
        with pytest.raises(BackupError) as caught:
            rc.validate_checks(bad)
        assert text in caught.value.msg


class FakeCursor(object):
    def __init__(self, conn):
        self.conn, self.description, self.row = conn, None, None

    def execute(self, sql, args=None):
        self.conn.statements.append((sql, args))
        if sql.startswith("SET"):
            return
        if "boom" in sql:
            raise RuntimeError("syntax error at or near \"boom\"")
        self.description = [("col",)]
        self.row = (42,) if "42" in sql else None

    def fetchone(self):
        return self.row


class FakeConnection(object):
    def __init__(self, log, user, dbname):
        self.statements, self.user, self.dbname, self.closed = log, user, dbname, False

    def cursor(self):
        return FakeCursor(self)

    def close(self):
        self.closed = True


def test_run_checks_runs_every_check_as_the_owner_in_its_database():
    log, opened = [], []

    def connect(socket_dir, port, user, dbname):
        if dbname == "gone":
            raise RuntimeError('database "gone" does not exist')
        opened.append(FakeConnection(log, user, dbname))
        return opened[-1]

    checks = [{"name": "answer", "sql": "SELECT 42", "expect": "42", "db": "shop"},
              {"name": "broken", "sql": "SELECT boom", "db": "postgres"},
              {"name": "nowhere", "sql": "SELECT 42", "db": "gone"},
              {"name": "empty", "sql": "SELECT 1 WHERE false", "db": "postgres"}]
    results = rc.run_checks(connect, "/tmp/s", 5999, "postgres", checks, 30)
    assert [r["ok"] for r in results] == [True, False, False, False]
    assert results[0]["returned"] == "42"
    assert results[1]["error"] == 'syntax error at or near "boom"'
    assert results[2]["error"] == 'database "gone" does not exist'
    assert [(c.user, c.dbname, c.closed) for c in opened] == [
        ("postgres", "shop", True), ("postgres", "postgres", True), ("postgres", "postgres", True)]
    assert ("SET statement_timeout = %s", ("30000",)) in log


# -- the history ---------------------------------------------------------------

def write_record(backup_dir, **facts):
    backup_dir.mkdir(parents=True, exist_ok=True)
    record = dict({"format": 1, "label": "b", "status": "complete", "data_directory": "/pg"}, **facts)
    (backup_dir / "backup.json").write_text(json.dumps(record))
    return record


def test_a_read_only_backup_keeps_the_drills_result_with_a_warning(tmp_path, monkeypatch):
    backup_dir = tmp_path / "b"
    write_record(backup_dir)

    def read_only(*_args):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(backup_record, "atomic_write", read_only)
    kept = rc.keep_history(str(backup_dir), {"ok": True}, True)
    assert kept["history_written"] is False
    assert kept["warnings"] == ["The drill's result could not be added to backup.json in %s: Read-only file system. "
                                "%s" % (backup_dir, backup_record.not_appended("", OSError()).hint)]
    assert rc.keep_history(str(backup_dir), {"ok": True}, False) == {"history_written": False}


def test_drill_backup_takes_a_named_backup_or_the_newest_complete_one(tmp_path):
    dest = tmp_path / "dest"
    write_record(dest / "old", start_lsn="0/2000028", finished_at="2026-11-22T10:00:00Z", system_identifier="1")
    write_record(dest / "new", start_lsn="0/4000028", finished_at="2026-11-21T10:00:00Z", system_identifier="1")
    write_record(dest / "failed", status="failed", start_lsn="0/6000028", system_identifier="1")
    backup_dir, record, recorded = rc.drill_backup({"dest": str(dest)})
    assert backup_dir == str(dest / "new") and recorded is True
    backup_dir, record, recorded = rc.drill_backup({"backup_dir": str(dest / "failed")})
    assert record["status"] == "failed" and recorded is True
    # The backup role's own check: no backup.json yet.
    assert rc.drill_backup({"backup_dir": str(tmp_path / "x"), "record": {"label": "x"}}) == (
        str(tmp_path / "x"), {"label": "x"}, False)
    assert rc.drill_backup({"backup_dir": str(tmp_path / "x")}) == (str(tmp_path / "x"), {}, False)


def test_the_task_records_a_failed_drill_and_keeps_the_status(tmp_path, monkeypatch):
    backup_dir = tmp_path / "b"
    write_record(backup_dir)

    def failing(*_args, **_kwargs):
        raise BackupError("The restored copy failed the check 'count'", "hint", check_ran=True,
                          checks=[{"name": "count", "ok": False, "returned": "1"}])
    monkeypatch.setattr(rc, "verify_restore", failing)
    params = {"backup_dir": str(backup_dir), "checks": [{"name": "count", "sql": "SELECT 1", "expect": 2}]}
    with pytest.raises(BackupError) as caught:
        rc.verify_restore_task(params, False)
    assert caught.value.facts["history_written"] is True and caught.value.facts["ok"] is False
    saved = json.loads((backup_dir / "backup.json").read_text())
    assert saved["status"] == "complete"
    assert [(e["ok"], e["check_ran"], e["checks"], e["error"]) for e in saved["checks"]] == [
        (False, True, [{"name": "count", "ok": False, "returned": "1"}], "The restored copy failed the check 'count'")]
