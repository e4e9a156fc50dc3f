# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""verify_restore: the restore drill. The restore engine run into a throwaway directory, the user's checks, gone.

One engine, not two: the drill is restore.Restore with the options that keep
a server started on the copy inside its scratch directory, then the user's SQL
checks, then the server stopped through the engine's handle on it (its own
child: fast, immediate, then SIGKILL of that child only) and the scratch
directory removed, whatever happened. The copy's postmaster.pid is written by
the server's OS user, and never chooses a PID to signal. The backup role's restore check is this drill with no
checks. Each drill's result is added to the backup's backup.json (its
``checks`` history) when the backup has one; the role's own check, which runs
before backup.json is written, hands its result to the record instead.

Nothing the drill runs writes outside its scratch directory, because a drill
runs beside a live server and must not touch what it does not own: not the
live data directory, not the target of its pg_wal link, not a tablespace, not the WAL archive. So, before the server
starts, the engine makes the copy's pg_wal (and the other directories a backup
leaves empty) a real directory of its own, never a link; points every
pg_tblspc/<oid> link and tablespace_map line at the copy's own tablespace
directory under the scratch directory (``tablespaces_under``); refuses any
other link out of the scratch directory (``confine_to``); and replaces the
copy's postgresql.conf by a minimal one and empties postgresql.auto.conf
(``minimal_config``), so nothing of the live configuration (include files,
ALTER SYSTEM settings, archive and cleanup commands) applies. restore_command
only reads the archive.

The throwaway server runs as the owner of the live data directory, on a free
local port, on a Unix socket in a short private directory of its own, with no
TCP listener, recovery_target = 'immediate' and recovery_target_action =
'promote'. Its WAL comes from the backup's own pg_wal/ (include_wal) and/or
the WAL archive.

Errors carry ``check_ran``: false when no server was started on the copy, so
the outcome says nothing about whether the backup restores.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import os
import pwd
import shutil
import tempfile
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import (
    append_check, check_entry, read_record)
from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import connect_socket
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import Restore, choose_backup
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.server import (
    free_port, log_tail, owner_can, postmaster_pid, read_log)

NOT_RESTORABLE = "The backup is not restorable as it is: keep it aside and take a new one."
# What the throwaway server's log says when this host, not the backup, kept it from starting.
ENVIRONMENT_FAILURES = (
    "Unix-domain socket path",
    "could not create any Unix-domain sockets",
    "could not create Unix-domain socket",
    "could not bind",
    "could not create lock file",
    "Address already in use",
    "could not create shared memory segment",
    "could not map anonymous shared memory",
)


def bindir_of_running_server(data_directory):
    """The directory of the running postmaster's binary (its pg_ctl sits beside it)."""
    try:
        return os.path.dirname(os.readlink("/proc/%d/exe" % postmaster_pid(data_directory)))
    except (IOError, OSError, TypeError):
        raise cannot_run("which PostgreSQL binaries run %s cannot be told" % data_directory,
                         "Set exclusive_backup_bindir to the directory holding pg_ctl and postgres.")


def drill_settings(port, socket_dir):
    """What the throwaway server is told beyond the recovery settings; nothing of the live configuration.

    No TCP listener, a socket in a private directory. hot_standby is off: with
    it, recovery refuses (14+: pauses) when max_connections and the other
    limits are below the live server's, and no one connects before the
    promotion anyway. fsync is off: the copy is thrown away.
    """
    return {
        "port": port,
        "listen_addresses": "",
        "unix_socket_directories": socket_dir,
        "logging_collector": False,
        "ssl": False,
        "cluster_name": "pgexclusive-verify-restore",
        "max_connections": 10,
        "shared_buffers": "16MB",
        "hot_standby": False,
        "fsync": False,
    }


def drill_params(backup_dir, record, work, owner_name, login_user, bindir, wal_archive_dir, port, socket_dir, timeout):
    """The restore engine's parameters for a drill into ``work``: the server runs as ``owner_name``."""
    return dict(
        backup_dir=backup_dir, record=record, verify=False, data_directory=os.path.join(work, "data"),
        tablespaces_under=os.path.join(work, "tablespaces"), confine_to=work, minimal_config=work,
        owner=owner_name, login_user=login_user, target="immediate", target_action="promote",
        wal_archive_dir=wal_archive_dir, settings=drill_settings(port, socket_dir), bindir=bindir,
        log_file=os.path.join(work, "server.log"), timeout=timeout)


def cannot_run(reason, hint):
    """The check stopped before a server started on the copy, for a reason outside the backup."""
    return BackupError("The restore check could not run: %s. This says nothing about the backup itself." % reason,
                       hint, check_ran=False)


def not_restorable(msg, hint=NOT_RESTORABLE):
    return BackupError(msg, hint, check_ran=True)


def as_check_error(exc):
    """An engine error met before any server started: the check could not run."""
    if "check_ran" in exc.facts:
        return exc
    return BackupError("The restore check could not run: %s" % exc.msg, exc.hint, check_ran=False)


def environment_failure(log_text):
    """The line of the throwaway server's log that says this host kept it from starting, or None."""
    for line in log_text.splitlines():
        if any(marker in line for marker in ENVIRONMENT_FAILURES):
            return line.strip()
    return None


def recovery_error(exc, log, timeout):
    """The engine's failure once the throwaway server was started, as the drill reports it."""
    reason = environment_failure(read_log(log))
    if reason:
        return cannot_run("the throwaway server could not start on this host (%s)" % reason,
                          "Check the host: a socket directory under /tmp, shared memory, a free port.")
    if exc.facts.get("login_refused"):
        return cannot_run("the throwaway server refused the drill's login (%s)" % exc.msg,
                          "Set login_user to a role of the backed-up cluster that connects over its Unix socket.")
    if exc.facts.get("timed_out"):
        return BackupError("The restored copy did not finish recovery in %ss.%s" % (timeout, log_tail(log)),
                           "Raise the timeout, or check that the WAL up to the backup's stop is available.",
                           check_ran=True)
    return not_restorable("The restored copy did not reach consistency: %s" % exc.msg,
                          "%s %s" % (exc.hint, NOT_RESTORABLE) if exc.hint else NOT_RESTORABLE)


# -- the user's checks ---------------------------------------------------------------

def check_options():
    """The suboptions of one check (pg_verify_restore's ``checks``, the finalize step's verify_restore_checks)."""
    return dict(
        name=dict(type="str", required=True),
        sql=dict(type="str", required=True),
        expect=dict(type="raw"),
        db=dict(type="str", default="postgres"),
    )


def validate_checks(checks):
    """Refuse checks that cannot be told apart or run, before anything is copied; returns them."""
    seen = set()
    for check in checks:
        if not (check.get("name") or "").strip():
            raise BackupError("A check has no name.", "Give every check a name: the result and history use it.")
        if check["name"] in seen:
            raise BackupError("Two checks are named %r." % check["name"], "Give every check a name of its own.")
        seen.add(check["name"])
        if not (check.get("sql") or "").strip():
            raise BackupError("The check %r has no SQL." % check["name"], "Give it one query in sql.")
    return checks


def as_text(value):
    """A returned or expected value as text: booleans as PostgreSQL casts them (true/false), NULL as None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def judge(check, row=None, error=None):
    """The result of one check: ``row`` is the first row its query returned (None: no row); ``error`` its
    SQL error. Without ``expect`` a check passes when its query returns a row; with it, when the row's first
    column equals it as text."""
    result = {"name": check["name"], "ok": False, "returned": None}
    if error is not None:
        result["error"] = error
        return result
    if row is not None:
        result["returned"] = as_text(row[0]) if len(row) else None
    expect = check.get("expect")
    if row is None:
        result["ok"] = False
    elif expect is None:
        result["ok"] = True
    else:
        result["ok"] = result["returned"] == as_text(expect)
    return result


def failed_check_error(checks, results):
    """A BackupError naming the first failed check, its SQL, what it returned and what was expected."""
    failed = [r for r in results if not r["ok"]]
    first = failed[0]
    check = next(c for c in checks if c["name"] == first["name"])
    others = " (%d more failed: %s)" % (len(failed) - 1, ", ".join(r["name"] for r in failed[1:])) if failed[1:] else ""
    if "error" in first:
        what = "failed: %s" % first["error"]
    elif first["returned"] is None and check.get("expect") is None:
        what = "returned no row"
    else:
        what = "returned %s, expected %s" % (_shown(first["returned"]), _shown(as_text(check.get("expect"))))
    return BackupError(
        "The restored copy failed the check %r: its SQL (%s) on database %s %s%s." % (
            first["name"], check["sql"].strip(), check.get("db") or "postgres", what, others),
        "The backup restored and reached consistency, but its data is not what the check expects: see whether "
        "the data or the check changed (backup.json keeps each drill's result under checks).", check_ran=True)


def _shown(text):
    return "no row" if text is None else repr(text)


def run_checks(connect, socket_dir, port, user, checks, timeout):
    """Run each check on the restored server as ``user``, each in its own connection; returns their results.

    A check that errors (or whose database cannot be reached) fails with the
    SQL error; the others still run, so one drill reports all of them.
    """
    results = []
    for check in checks:
        try:
            conn = connect(socket_dir, port, user, check.get("db") or "postgres")
        except Exception as exc:   # psycopg2.OperationalError: e.g. the check's database does not exist
            results.append(judge(check, error=_sql_error(exc)))
            continue
        try:
            cur = conn.cursor()
            cur.execute("SET statement_timeout = %s", (str(int(timeout) * 1000),))
            cur.execute(check["sql"])
            results.append(judge(check, row=cur.fetchone() if cur.description else None))
        except Exception as exc:   # psycopg2.Error from the user's SQL
            results.append(judge(check, error=_sql_error(exc)))
        finally:
            conn.close()
    return results


def _sql_error(exc):
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    return (primary or str(exc)).strip()


def _databases(connect, socket_dir, port, user):
    try:
        conn = connect(socket_dir, port, user, "postgres")
        try:
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM pg_database")
            return cur.fetchone()[0]
        finally:
            conn.close()
    except Exception as exc:   # psycopg2.Error: the server went away after its promotion
        raise not_restorable("The restored copy stopped answering after its promotion: %s" % _sql_error(exc))


# -- the module ---------------------------------------------------------------

def _locate_pg_ctl(data_directory, bindir):
    try:
        owner = os.stat(data_directory)
    except OSError as exc:
        raise cannot_run("the live data directory cannot be read (%s)" % exc, "Check data_directory.")
    bindir = bindir or bindir_of_running_server(data_directory)
    pg_ctl = os.path.join(bindir, "pg_ctl")
    if not os.path.exists(pg_ctl):
        raise cannot_run("there is no pg_ctl in %s" % bindir, "Set exclusive_backup_bindir.")
    return owner, bindir, pg_ctl


def verify_restore_argument_spec():
    return dict(
        backup_dir=dict(type="path"),
        dest=dict(type="path"),
        system_identifier=dict(type="str"),
        data_directory=dict(type="path"),
        bindir=dict(type="path"),
        wal_archive_dir=dict(type="path"),
        work_dir=dict(type="path"),
        timeout=dict(type="int", default=300),
        keep=dict(type="bool", default=False),
        checks=dict(type="list", elements="dict", default=[], options=check_options()),
        login_user=dict(type="str"),
    )


def drill_backup(params):
    """(backup directory, its facts, whether backup.json holds them) for the drill.

    ``dest`` drills the newest complete backup there (restore.choose_backup);
    ``backup_dir`` that backup, complete or not. The backup role's own check
    runs before backup.json is written, and hands the facts it will hold as
    ``record``.
    """
    if params.get("record") is not None:
        return params["backup_dir"], params["record"], False
    backup_dir = params.get("backup_dir")
    if params.get("dest") or (backup_dir and read_record(backup_dir) is not None):
        backup_dir, record = choose_backup(backup_dir, params.get("dest"), params.get("system_identifier"),
                                           allow_incomplete=bool(backup_dir))
        return backup_dir, record, True
    if not backup_dir:
        raise BackupError("Give either backup_dir or dest, not both and not neither.",
                          "backup_dir drills that backup; dest drills the newest complete backup under it.")
    return backup_dir, {}, False


def verify_restore_task(params, check_mode):
    """pg_verify_restore's task: the drill, and its result added to the backup's history. Check mode starts nothing."""
    checks = validate_checks(params.get("checks") or [])
    backup_dir, record, recorded = drill_backup(params)
    data_directory = params.get("data_directory") or record.get("data_directory")
    if not data_directory:
        raise BackupError("The data directory of the backup's server is not known.",
                          "Set data_directory: its owner runs the throwaway server, its postmaster tells the binaries.")
    if check_mode:
        return dict(changed=False, ok=None, check_ran=False, backup_dir=backup_dir,
                    msg="Check mode: no restore started.")
    started_at = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    started = time.time()
    try:
        result = verify_restore(backup_dir, data_directory, params.get("bindir"), params.get("wal_archive_dir"),
                                params.get("work_dir"), params.get("timeout") or 300, params.get("keep"),
                                connect_socket, checks=checks, record=record, login_user=params.get("login_user"))
    except BackupError as exc:
        exc.facts.setdefault("ok", False)
        exc.facts.setdefault("backup_dir", backup_dir)
        entry = check_entry(started_at, False, round(time.time() - started, 3), exc.facts.get("checks") or [],
                            exc.msg, exc.facts.get("check_ran", False))
        exc.facts.update(history_entry=entry, **keep_history(backup_dir, entry, recorded))
        raise
    entry = check_entry(started_at, True, result["duration"], result["checks"])
    kept = keep_history(backup_dir, entry, recorded)
    return dict(result, backup_dir=backup_dir, history_entry=entry, changed=kept["history_written"], **kept)


def keep_history(backup_dir, entry, recorded):
    """Add ``entry`` to backup.json when the backup has one; a failure to do so is a warning, not the drill's."""
    if not recorded:
        return {"history_written": False}
    try:
        append_check(backup_dir, entry)
    except BackupError as exc:
        return {"history_written": False, "warnings": [str(exc)]}
    return {"history_written": True}


def verify_restore(backup_dir, data_directory, bindir=None, wal_archive_dir=None, work_parent=None,
                   timeout=300, keep=False, connect=None, checks=(), record=None, login_user=None):
    """Restore ``backup_dir`` into a scratch directory with the restore engine, start it, run ``checks``, report.

    ``connect(socket_dir, port, user, dbname)`` returns an autocommit DB-API
    connection (connection.connect_socket in the module). ``record`` is the
    backup's backup.json (or the facts it will hold); without it, the one in
    ``backup_dir`` if any. The checks connect as ``login_user``, by default the
    role named after the live data directory's owner (the one initdb makes).
    """
    started = time.time()
    owner, bindir, _pg_ctl = _locate_pg_ctl(data_directory, bindir)
    os_user = pwd.getpwuid(owner.st_uid).pw_name
    user = login_user or os_user
    parent = work_parent or os.path.dirname(backup_dir.rstrip("/"))
    try:
        work = tempfile.mkdtemp(prefix="pgx-verify-", dir=parent)
    except OSError as exc:
        raise cannot_run("no scratch directory in %s (%s)" % (parent, exc), "Set work_dir to a writable directory.")
    sock = engine = None
    result = {"ok": False, "work_dir": work}
    try:
        os.chmod(work, 0o700)
        os.chown(work, owner.st_uid, owner.st_gid)
        # Asked first, as the server's user, before copying anything: pg_ctl's own error would come
        # after a whole copy and read like a broken backup.
        if not owner_can(owner, ["-r", work, "-a", "-w", work, "-a", "-x", work]):
            raise cannot_run("the OS user %s cannot enter %s" % (os_user, work),
                             "Set work_dir (the role: exclusive_backup_verify_restore_work_dir) to a directory %s can "
                             "enter (every directory on the way open to it); the default is the parent of the "
                             "backup directory." % os_user)
        postgres = os.path.join(bindir, "postgres")
        if not owner_can(owner, ["-x", postgres]):
            raise cannot_run("the OS user %s cannot run %s" % (os_user, postgres), "Set exclusive_backup_bindir.")
        port = free_port()
        # A socket path is limited to 107 bytes: beside a backup with a long label it would not fit, so the
        # private socket directory is a short one of its own. Only its owner (and root) can reach it.
        sock = tempfile.mkdtemp(prefix="pgx-sock-")
        os.chown(sock, owner.st_uid, owner.st_gid)
        if record is None:
            record = read_record(backup_dir) or {}
        params = drill_params(backup_dir, record, work, os_user, user, bindir, wal_archive_dir, port, sock, timeout)
        engine = Restore(params, connect)
        try:
            restored = engine.run()
        except BackupError as exc:
            if engine.step != "recover":
                raise as_check_error(exc)
            raise recovery_error(exc, params["log_file"], timeout)
        except (IOError, OSError, shutil.Error) as exc:
            raise cannot_run("the scratch copy could not be laid out (%s)" % exc,
                             "Check the space and permissions of %s." % parent)
        results = run_checks(connect, sock, port, user, checks or [], timeout)
        if any(not r["ok"] for r in results):
            error = failed_check_error(checks, results)
            error.facts["checks"] = results
            raise error
        result.update(ok=True, check_ran=True, consistent=True, databases=_databases(connect, sock, port, user),
                      server_version=restored.get("server_version"), user=user, port=port, checks=results,
                      label=restored.get("label"), duration=round(time.time() - started, 3),
                      log=log_tail(params["log_file"], 15).strip().splitlines())
        return result
    finally:
        if engine is not None and engine.server is not None:
            engine.server.stop()
        if sock is not None:
            shutil.rmtree(sock, ignore_errors=True)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
