# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""WAL archiving: is it healthy, has a file reached the archive, waiting for it, and pg_archive_check's check.

The collection's own waiting happens here: the native pg_stop_backup() is
called without waiting, and the extension's, which waits in the server until
the last segment is archived, runs under a time limit (backup_api.py); the
wait here then takes what is left of archive_timeout.

Before a backup starts, verify_archiving checks archiving passively (settings,
pg_stat_archiver) or actively: a restore point first, so the WAL switch that
follows always has something to switch away from (pg_switch_wal() on an idle
segment start is a no-op), then wait until the switched-out segment is archived.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import Session, connection_argument_spec, with_queries
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import archived_according_to

SETTINGS = ("archive_mode", "archive_command", "archive_library", "wal_level", "archive_timeout")

SETTINGS_QUERY = "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)"
ARCHIVER_QUERY = (
    "SELECT archived_count, last_archived_wal, last_archived_time, failed_count,"
    " last_failed_wal, last_failed_time, stats_reset FROM pg_catalog.pg_stat_archiver")
# PostgreSQL's archiver tries a segment this many times in a row, then sleeps a minute (pgarch.c).
ARCHIVER_RETRIES = 3
ARCHIVER_COLUMNS = ("archived_count", "last_archived_wal", "last_archived_time", "failed_count",
                    "last_failed_wal", "last_failed_time", "stats_reset")
# pg_wal/archive_status/*.done is only listed for superusers and pg_monitor;
# pg_stat_archiver alone decides for everybody else.
STATUS_DIR_QUERY = (
    "SELECT name FROM pg_catalog.pg_ls_archive_statusdir() WHERE name = ANY(%s)")
# The function exists from PostgreSQL 12 on.
STATUS_DIR_ALLOWED = (
    "SELECT CASE WHEN pg_catalog.to_regprocedure('pg_catalog.pg_ls_archive_statusdir()') IS NULL THEN false"
    " ELSE pg_catalog.has_function_privilege('pg_catalog.pg_ls_archive_statusdir()', 'EXECUTE') END")

POLL_SECONDS = 0.2

MODES = ("active", "passive")
RESTORE_POINT_SQL = "SELECT pg_catalog.pg_create_restore_point(%s)::text"
SWITCH_SQL = "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal())"
RESTORE_POINT_MAX = 63   # MAXFNAMELEN - 1


def archiving_health(settings, archiver):
    """(healthy, reason) from the archive settings and pg_stat_archiver.

    ``settings`` maps setting names to values (None when hidden from the
    user); ``archiver`` maps ARCHIVER_COLUMNS to values, times comparable.
    """
    if settings.get("wal_level") == "minimal":
        return False, "wal_level is minimal: WAL cannot be archived. Set wal_level = replica and restart."
    if settings.get("archive_mode") == "off":
        return False, ("archive_mode is off: no WAL reaches an archive, so no backup can be restored. "
                       "Set archive_mode = on and an archive_command, then restart.")
    command, library = settings.get("archive_command"), settings.get("archive_library")
    if command == "" and not library:
        return False, ("archive_mode is on but neither archive_command nor archive_library is set: "
                       "WAL piles up in pg_wal and never reaches an archive. Set one and reload.")
    failed_at, archived_at = archiver.get("last_failed_time"), archiver.get("last_archived_time")
    if failed_at is not None and (archived_at is None or failed_at > archived_at):
        return False, ("the archiver's last attempt failed: %s at %s, after the last success (%s). "
                       "Check archive_command and the server log."
                       % (archiver.get("last_failed_wal"), failed_at, archiver.get("last_archived_wal") or "none"))
    if archived_at is None:
        return True, "archiving is configured; nothing has been archived yet and nothing has failed"
    return True, "last archived %s at %s" % (archiver.get("last_archived_wal"), archived_at)


def not_yet_archived(wal_files, last_archived_wal, done_files=()):
    """The files of ``wal_files`` for which neither the archiver nor a .done says archived."""
    done = set(done_files)
    return [name for name in wal_files
            if name + ".done" not in done and not archived_according_to(last_archived_wal, name)]


def read_archiver(session):
    return dict(zip(ARCHIVER_COLUMNS, session.row(ARCHIVER_QUERY)))


def read_archive_settings(session):
    """Archive settings by name; None for those the user may not see or this version lacks."""
    found = dict(session.rows(SETTINGS_QUERY, (list(SETTINGS),)))
    return dict((name, found.get(name)) for name in SETTINGS)


def given_up(first, now):
    """The segment the archiver has failed on ARCHIVER_RETRIES times since ``first`` without archiving anything,
    or None: the archiver then sleeps a minute before it tries again, so a check before the start need not wait.

    ``first`` and ``now`` are read_archiver's states at the start of a wait and now.
    """
    failures = int(now["failed_count"] or 0) - int(first["failed_count"] or 0)
    archived = int(now["archived_count"] or 0) - int(first["archived_count"] or 0)
    if failures >= ARCHIVER_RETRIES and not archived and now["last_failed_wal"]:
        return now["last_failed_wal"]
    return None


def wait_until_archived(session, wal_files, timeout, deadline=None, fail_fast=False):
    """Poll until every file of ``wal_files`` is archived; return the archiver's last state.

    Raises BackupError naming what is missing and the archiver's last failure
    when ``timeout`` seconds pass first, or when ``deadline`` (time.monotonic(),
    of a wait that began earlier) passes: then the files are looked at once.
    With ``fail_fast`` (a check before any backup started, nothing to lose) it
    also raises as soon as the archiver has given up for now (given_up), with
    ``gave_up_on`` set.
    """
    may_list = session.value(STATUS_DIR_ALLOWED)
    if deadline is None:
        deadline = time.monotonic() + timeout
    first = None
    while True:
        archiver = read_archiver(session)
        first = first or archiver
        done = [row[0] for row in session.rows(STATUS_DIR_QUERY, ([n + ".done" for n in wal_files],))] if may_list else []
        missing = not_yet_archived(wal_files, archiver["last_archived_wal"], done)
        if not missing:
            return archiver
        failing = given_up(first, archiver) if fail_fast else None
        if failing:
            raise BackupError(
                "The archiver failed %d times in a row on %s (last at %s) and now waits a minute before it tries "
                "again." % (int(archiver["failed_count"]) - int(first["failed_count"]), failing,
                            archiver["last_failed_time"]),
                "Fix archive_command (see the server log).", missing_wal_files=missing, gave_up_on=failing,
                last_failed_wal=failing, last_failed_time=_text(archiver["last_failed_time"]),
                last_archived_wal=archiver["last_archived_wal"], archiver=_texts(archiver))
        if time.monotonic() >= deadline:
            raise BackupError(
                "The backup is stopped, but %s did not reach the WAL archive within %s seconds; "
                "the archiver last failed on %s at %s (last archived: %s)."
                % (" and ".join(missing), timeout, archiver["last_failed_wal"] or "nothing",
                   archiver["last_failed_time"] or "never", archiver["last_archived_wal"] or "nothing"),
                "The copy cannot be restored until these files are archived: fix archive_command "
                "(see the server log), then check that %s is in the archive." % missing[-1],
                missing_wal_files=missing,
                last_failed_wal=archiver["last_failed_wal"],
                last_failed_time=_text(archiver["last_failed_time"]),
                last_archived_wal=archiver["last_archived_wal"], archiver=_texts(archiver))
        time.sleep(POLL_SECONDS)


def _text(value):
    return None if value is None else str(value)


def _texts(archiver):
    return dict((k, _text(v)) for k, v in archiver.items())


def check_argument_spec():
    spec = connection_argument_spec()
    spec.update(
        mode=dict(type="str", choices=list(MODES), default="active"),
        label=dict(type="str", default="pgexclusive.backup"),
        timeout=dict(type="int", default=60),
    )
    return spec


def verify_archiving(params, check_mode):
    """pg_archive_check's task: check mode runs the passive check, which changes nothing."""
    session = Session(params)
    return with_queries(session, lambda: dict(
        check(session, "passive" if check_mode else params["mode"], params["label"], params["timeout"]),
        changed=params["mode"] == "active" and not check_mode))


def restore_point_name(label):
    """'pgx-verify <label>', cut to what pg_create_restore_point accepts."""
    name = "pgx-verify " + label
    encoded = name.encode("utf-8")[:RESTORE_POINT_MAX]
    return encoded.decode("utf-8", "ignore")


def check(session, mode, label, timeout):
    """Run the check; return facts; raise BackupError when archiving is not healthy."""
    if mode not in MODES:
        raise BackupError("Unknown archive verification mode %r." % mode, "Use active or passive (the role also knows skip).")
    settings = read_archive_settings(session)
    archiver = read_archiver(session)
    healthy, reason = archiving_health(settings, archiver)
    facts = {"mode": mode, "healthy": healthy, "reason": reason, "settings": settings, "archiver": _texts(archiver)}
    if not healthy:
        raise BackupError("WAL archiving is not healthy, so no backup was started: %s" % reason,
                          "Fix archiving first: a backup whose WAL is not archived cannot be restored.", **facts)
    if mode == "active":
        session.rows(RESTORE_POINT_SQL, (restore_point_name(label),))
        segment = session.value(SWITCH_SQL)
        try:
            wait_until_archived(session, [segment], timeout, fail_fast=True)
        except BackupError as exc:
            # What the archiver did during the wait, not what it had done before the switch.
            facts.update(archiver=exc.facts["archiver"], healthy=False, reason=exc.msg)
            if exc.facts.get("gave_up_on"):
                message = ("WAL archiving does not work, so no backup was started: after the switch to segment %s, "
                           "%s" % (segment, exc.msg[0].lower() + exc.msg[1:]))
            else:
                message = ("WAL archiving does not work, so no backup was started: segment %s was not archived "
                           "within %s seconds (the archiver's last failure: %s)."
                           % (segment, timeout, exc.facts.get("last_failed_wal") or "none"))
            raise BackupError(message, "Check archive_command and the server log; rerun when pg_stat_archiver "
                              "shows the segment archived.", switched_wal_file=segment, **facts)
        facts["switched_wal_file"] = segment
        facts["reason"] = "segment %s reached the archive" % segment
    return facts
