"""The fixture extension behaves as DESIGN.md and the extension's README document.

Runs on every major that needs it (15, 16, 18). Each statement opens its own
connection, so every start and stop here also proves that a backup started in
one session is stopped from another, as Ansible tasks do.
"""

import threading
import uuid

import psycopg2
import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import parse_backup_label


@pytest.fixture
def xdb(ext_pg, db):
    ext_pg.sql("CREATE EXTENSION pg_exclusive_backup", dbname=db)
    return db


def call(pg, db, query, params=None, user="postgres"):
    return pg.value(query, params, dbname=db, user=user)


def error_of(pg, db, query, params=None, user="postgres"):
    with pytest.raises(psycopg2.Error) as info:
        pg.sql(query, params, dbname=db, user=user)
    return info.value


def test_start_in_progress_start_time_stop(ext_pg, xdb):
    assert call(ext_pg, xdb, "SELECT pg_is_in_backup()") is False
    assert call(ext_pg, xdb, "SELECT pg_backup_start_time()") is None

    start_lsn = call(ext_pg, xdb, "SELECT pg_start_backup('fixture start', true)::text")
    assert call(ext_pg, xdb, "SELECT pg_is_in_backup()") is True
    started = call(ext_pg, xdb, "SELECT pg_backup_start_time()")
    assert started is not None
    assert call(ext_pg, xdb, "SELECT now() - %s < interval '1 minute'", (started,))
    label = parse_backup_label(ext_pg.backup_label())
    assert label["label"] == "fixture start"
    assert label["method"] == "pg_start_backup"
    assert label["backup_from"] == "primary"
    assert call(ext_pg, xdb, "SELECT %s::pg_lsn = %s::pg_lsn", (label["start_lsn"], start_lsn))

    stop_lsn = call(ext_pg, xdb, "SELECT pg_stop_backup()::text")
    assert call(ext_pg, xdb, "SELECT %s::pg_lsn > %s::pg_lsn", (stop_lsn, start_lsn))
    assert not ext_pg.in_backup()
    assert not (ext_pg.data_dir / "tablespace_map").exists()
    assert call(ext_pg, xdb, "SELECT pg_is_in_backup()") is False
    assert call(ext_pg, xdb, "SELECT pg_backup_start_time()") is None

    offset = int(label["start_lsn"].split("/")[1], 16) % (16 * 1024 * 1024)
    history = f"{label['start_wal_file']}.{offset:08X}.backup"
    ext_pg.wait_archived(history)
    stopped = parse_backup_label((ext_pg.archive_dir / history).read_text())
    assert stopped["label"] == "fixture start"
    assert call(ext_pg, xdb, "SELECT %s::pg_lsn = %s::pg_lsn", (stopped["stop_lsn"], stop_lsn))


def test_second_start_fails_and_leaves_first_backup(ext_pg, xdb):
    call(ext_pg, xdb, "SELECT pg_start_backup('first', true)")
    err = error_of(ext_pg, xdb, "SELECT pg_start_backup('second', true)")
    assert "exclusive backup is already in progress" in str(err)
    assert parse_backup_label(ext_pg.backup_label())["label"] == "first"


def test_stop_without_start_fails(ext_pg, xdb):
    err = error_of(ext_pg, xdb, "SELECT pg_stop_backup()")
    assert "exclusive backup not in progress" in str(err)


def test_stop_takes_no_argument(ext_pg, xdb):
    call(ext_pg, xdb, "SELECT pg_start_backup('no argument', true)")
    err = error_of(ext_pg, xdb, "SELECT pg_stop_backup(true)")
    assert isinstance(err, psycopg2.errors.UndefinedFunction)
    assert ext_pg.in_backup(), "a failed call must not stop the backup"


def test_start_and_stop_refuse_during_recovery(ext_pg, scratch):
    standby = ext_pg.make_standby(scratch / "standby")
    try:
        assert standby.value("SELECT pg_is_in_recovery()")
        for query in ("SELECT pg_start_backup('on standby')", "SELECT pg_stop_backup()"):
            err = error_of(standby, ext_pg.backup_db, query)
            assert "recovery is in progress" in str(err)
        assert not standby.in_backup()
    finally:
        standby.destroy()


def test_execute_revoked_from_public(ext_pg, xdb):
    role = "nobody_" + uuid.uuid4().hex[:8]
    ext_pg.sql(f"CREATE ROLE {role} LOGIN")
    try:
        for query in ("SELECT pg_start_backup('not allowed')", "SELECT pg_stop_backup()"):
            err = error_of(ext_pg, xdb, query, user=role)
            assert isinstance(err, psycopg2.errors.InsufficientPrivilege), err
        assert not ext_pg.in_backup()
        ext_pg.sql(f"GRANT EXECUTE ON FUNCTION pg_start_backup(text, boolean) TO {role}", dbname=xdb)
        ext_pg.sql(f"GRANT EXECUTE ON FUNCTION pg_stop_backup() TO {role}", dbname=xdb)
        call(ext_pg, xdb, "SELECT pg_start_backup('granted', true)", user=role)
        call(ext_pg, xdb, "SELECT pg_stop_backup()", user=role)
    finally:
        ext_pg.sql(f"DROP OWNED BY {role}", dbname=xdb)
        ext_pg.sql(f"DROP ROLE {role}")


def test_create_extension_drops_non_exclusive_functions_for_good(ext_pg, db):
    exists = "SELECT to_regprocedure(%s) IS NOT NULL"
    names = ("pg_backup_start(text,boolean)", "pg_backup_stop(boolean)")
    for name in names:
        assert call(ext_pg, db, exists, (name,))
    ext_pg.sql("CREATE EXTENSION pg_exclusive_backup", dbname=db)
    ext_pg.sql("DROP EXTENSION pg_exclusive_backup", dbname=db)
    for name in names:
        assert not call(ext_pg, db, exists, (name,)), f"{name} must stay dropped in {db}"
        assert call(ext_pg, "postgres", exists, (name,)), f"{name} must survive in other databases"


def test_functions_live_in_pg_catalog(ext_pg, xdb):
    rows = ext_pg.sql(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid "
        "JOIN pg_extension e ON e.oid = d.refobjid WHERE e.extname = 'pg_exclusive_backup' "
        "AND p.pronamespace = 'pg_catalog'::regnamespace ORDER BY 1", dbname=xdb)
    assert [r[0] for r in rows] == [
        "pg_backup_start_time()", "pg_is_in_backup()", "pg_start_backup(text,boolean)", "pg_stop_backup()"]


def test_tablespace_map_written_when_a_tablespace_exists(ext_pg, xdb):
    name = "ts_" + uuid.uuid4().hex[:8]
    location = ext_pg.create_tablespace(name)
    try:
        oid = call(ext_pg, xdb, "SELECT oid FROM pg_tablespace WHERE spcname = %s", (name,))
        call(ext_pg, xdb, "SELECT pg_start_backup('with tablespace', true)")
        tablespace_map = (ext_pg.data_dir / "tablespace_map").read_text()
        assert f"{oid} {location}\n" in tablespace_map
        call(ext_pg, xdb, "SELECT pg_stop_backup()")
        assert not (ext_pg.data_dir / "tablespace_map").exists()
    finally:
        ext_pg.end_backup_if_any()
        ext_pg.sql(f"DROP TABLESPACE {name}")


def test_two_racing_starts_exactly_one_wins(ext_pg, xdb):
    barrier = threading.Barrier(2)
    outcomes = {}

    def start(label):
        conn = ext_pg.connect(xdb)
        try:
            barrier.wait()
            with conn.cursor() as cur:
                cur.execute("SELECT pg_start_backup(%s, true)", (label,))
            outcomes[label] = "started"
        except psycopg2.Error as exc:
            outcomes[label] = str(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=start, args=(label,)) for label in ("racer a", "racer b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [label for label, outcome in outcomes.items() if outcome == "started"]
    assert len(winners) == 1, outcomes
    loser = ({"racer a", "racer b"} - set(winners)).pop()
    assert "exclusive backup is already in progress" in outcomes[loser]
    assert parse_backup_label(ext_pg.backup_label())["label"] == winners[0]


# -- the stop waits for the archive, as the documented extension's does (DESIGN.md) ------------------

WAITING = "SELECT pid FROM pg_stat_activity WHERE wait_event = 'BackupWaitWalArchive'"


class Stop(threading.Thread):
    """SELECT pg_stop_backup() in a session of its own, in the background; ``error`` and ``notices`` once it ends."""

    def __init__(self, pg, db, setup=None):
        super().__init__(daemon=True)
        self.conn = pg.connect(db)
        self.pid = self.conn.get_backend_pid()
        self.setup, self.error, self.stop_lsn = setup, None, None

    def run(self):
        try:
            with self.conn.cursor() as cur:
                if self.setup:
                    cur.execute(self.setup)
                cur.execute("SELECT pg_stop_backup()::text")
                self.stop_lsn = cur.fetchone()[0]
        except psycopg2.Error as exc:
            self.error = exc
        finally:
            self.notices = list(self.conn.notices)
            self.conn.close()


def waiting_pids(pg):
    return {row[0] for row in pg.sql(WAITING)}


def history_file_of(label):
    offset = int(label["start_lsn"].split("/")[1], 16) % (16 * 1024 * 1024)
    return f"{label['start_wal_file']}.{offset:08X}.backup"


def test_stop_ends_the_backup_then_waits_for_the_archive_without_end(ext_pg, xdb):
    call(ext_pg, xdb, "SELECT pg_start_backup('waits', true)")
    label = parse_backup_label(ext_pg.backup_label())
    ext_pg.break_archiving()
    stop = Stop(ext_pg, xdb)
    stop.start()
    stop.join(4)
    assert stop.is_alive(), f"the stop returned while archiving fails: {stop.error or stop.stop_lsn}"
    assert stop.pid in waiting_pids(ext_pg), "the stop waits in BackupWaitWalArchive"
    # The backup has already ended: backup_label gone, out of backup mode for every session.
    assert not ext_pg.in_backup() and call(ext_pg, xdb, "SELECT pg_is_in_backup()") is False
    history = history_file_of(label)
    assert (ext_pg.wal_dir / history).is_file() and (ext_pg.wal_dir / "archive_status" / f"{history}.ready").is_file()
    assert not (ext_pg.archive_dir / history).exists()
    assert parse_backup_label((ext_pg.wal_dir / history).read_text())["label"] == "waits"
    assert call(ext_pg, xdb, "SELECT pg_cancel_backend(%s)", (stop.pid,))
    stop.join(10)
    assert not stop.is_alive() and isinstance(stop.error, psycopg2.errors.QueryCanceled), stop.error
    assert stop.pid not in waiting_pids(ext_pg)
    # The cancelled stop left nothing held: the next backup starts and, archiving repaired, stops at once.
    ext_pg.repair_archiving()
    call(ext_pg, xdb, "SELECT pg_start_backup('after the cancel', true)")
    assert call(ext_pg, xdb, "SELECT pg_stop_backup()::text")
    ext_pg.wait_archived(history)


def test_statement_timeout_ends_the_archive_wait(ext_pg, xdb):
    call(ext_pg, xdb, "SELECT pg_start_backup('timeout', true)")
    ext_pg.break_archiving()
    stop = Stop(ext_pg, xdb, setup="SET statement_timeout = '2s'")
    stop.start()
    stop.join(20)
    assert not stop.is_alive(), "statement_timeout must end the wait"
    assert isinstance(stop.error, psycopg2.errors.QueryCanceled) and "statement timeout" in str(stop.error)
    assert not ext_pg.in_backup() and not waiting_pids(ext_pg)


def test_stop_does_not_wait_for_a_working_archive(ext_pg, xdb):
    call(ext_pg, xdb, "SELECT pg_start_backup('archived', true)")
    label = parse_backup_label(ext_pg.backup_label())
    stop = Stop(ext_pg, xdb)
    stop.start()
    stop.join(30)
    assert not stop.is_alive() and stop.error is None and stop.stop_lsn
    # Returned only once both are in the archive: no waiting by the test.
    assert (ext_pg.archive_dir / history_file_of(label)).is_file()
    assert (ext_pg.archive_dir / ext_pg.walfile(stop.stop_lsn)).is_file()


def test_waiting_stop_notices_and_logs_still_waiting(one_ext_pg):
    """PostgreSQL's own wait: a notice after about 5 s, the warning in the server log after 60 s."""
    pg = one_ext_pg
    db = pg.backup_db
    call(pg, db, "SELECT pg_start_backup('still waiting', true)")
    pg.break_archiving()
    warning = "still waiting for all required WAL segments to be archived (60 seconds elapsed)"
    logged_before = pg.log_file.read_text().count(warning)
    stop = Stop(pg, db)
    stop.start()
    stop.join(66)
    try:
        assert stop.is_alive() and stop.pid in waiting_pids(pg)
        assert pg.log_file.read_text().count(warning) > logged_before, pg.log_tail()
    finally:
        pg.value("SELECT pg_cancel_backend(%s)", (stop.pid,))
        stop.join(10)
    assert any("waiting for required WAL segments to be archived" in notice for notice in stop.notices), stop.notices
