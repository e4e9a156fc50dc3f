# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Which exclusive backup API a database offers, its SQL, and the one guarded stop.

PostgreSQL 14 and earlier have it built in ('native'). 15 removed it; the
pg_exclusive_backup extension brings it back, but only in the database where
it is installed ('extension'). Anything else is 'none'.

pg_stop_backup and the safety stop's watchdog both stop through guarded_stop
under stop_lock, within a time limit: the extension's stop waits for the WAL
archive, without end while archiving fails. Standard library only: the
watchdog process runs this file's source outside Ansible (see safety_stop/watchdog.py), so the statements run
through a ``value(sql, args)`` callable each caller brings.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from contextlib import contextmanager

NATIVE = "native"
EXTENSION = "extension"
NONE = "none"

EXTENSION_NAME = "pg_exclusive_backup"
FIRST_WITHOUT_NATIVE = 150000
# pg_stop_backup(exclusive, wait_for_archive) and pg_walfile_name() exist from 10 on.
OLDEST_SUPPORTED = 100000

START_FUNCTION = {
    NATIVE: "pg_catalog.pg_start_backup(text, boolean, boolean)",
    EXTENSION: "pg_catalog.pg_start_backup(text, boolean)",
}
STOP_FUNCTION = {
    NATIVE: "pg_catalog.pg_stop_backup(boolean, boolean)",
    EXTENSION: "pg_catalog.pg_stop_backup()",
}
# backup_label is read through SQL so that a remote least-privileged user can
# check labels; a relative path stays inside the data directory.
READ_FILE_FUNCTION = "pg_catalog.pg_read_file(text, bigint, bigint, boolean)"

START_SQL = {
    NATIVE: "SELECT pg_catalog.pg_start_backup(%s, %s, true)::text",
    EXTENSION: "SELECT pg_catalog.pg_start_backup(%s, %s)::text",
}
# The native stop is told not to wait: wal/archiving.py waits for both APIs.
STOP_SQL = {
    NATIVE: "SELECT lsn::text FROM pg_catalog.pg_stop_backup(true, false)",
    EXTENSION: "SELECT pg_catalog.pg_stop_backup()::text",
}
CREATE_EXTENSION_SQL = "CREATE EXTENSION IF NOT EXISTS pg_exclusive_backup"


def choose_api(version_num, extension_installed, database):
    """(api, reason): the API usable in ``database``; reason is None unless api is 'none'."""
    if version_num < OLDEST_SUPPORTED:
        return NONE, "PostgreSQL %s is older than 10, which this collection does not support." % version_num
    if version_num < FIRST_WITHOUT_NATIVE:
        return NATIVE, None
    if extension_installed:
        return EXTENSION, None
    return NONE, ("PostgreSQL 15 and later have no exclusive backup API of their own, and the %s "
                  "extension is not installed in database '%s'." % (EXTENSION_NAME, database))


def extension_hint(database):
    return ("Install the extension in a database dedicated to backups (it removes pg_backup_start/"
            "pg_backup_stop from the database it is created in, which tools such as pgBackRest use): "
            "CREATE DATABASE backupctl; then in backupctl: CREATE EXTENSION %s; and set login_db: backupctl. "
            "Or set create_extension: true to create it in '%s'." % (EXTENSION_NAME, database))


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def grant_statement(functions, role):
    """The GRANT a superuser runs so that ``role`` may call ``functions``."""
    return "GRANT EXECUTE ON FUNCTION %s TO %s;" % (", ".join(functions), quote_ident(role))


def is_concurrent_start_error(message):
    """True for the error a start gets when another exclusive backup holds the server.

    PostgreSQL 14: 'a backup is already in progress'; the extension:
    'exclusive backup is already in progress'.
    """
    return "already in progress" in (message or "")


# The label of the backup in progress, straight from backup_label (LABEL: is never the first line).
LABEL_IN_PROGRESS = ("pg_catalog.substring(pg_catalog.pg_read_file('backup_label', 0, 1048576, true),"
                     " '\\nLABEL: ([^\\n]*)')")
READ_LABEL_SQL = "SELECT " + LABEL_IN_PROGRESS
# Check the backup and stop it in one statement, which reads backup_label once.
# The stop runs only when the label matches and, when a start LSN is given, the
# backup started there: a backup that ended (a restart, another client's stop)
# and was followed by another one under the same label is not this backup.
# NULL means nothing was stopped. The native stop returns a set, so it sits in
# a subquery, which PostgreSQL evaluates only when the branch is taken.
_GUARDED_STOP = (
    "SELECT CASE WHEN f.label = %%(label)s AND (%%(start_lsn)s::text IS NULL"
    " OR f.start_lsn::pg_catalog.pg_lsn = %%(start_lsn)s::pg_catalog.pg_lsn) THEN %s END"
    " FROM (SELECT pg_catalog.substring(t, '\\nLABEL: ([^\\n]*)') AS label,"
    " pg_catalog.substring(t, '^START WAL LOCATION: ([0-9A-Fa-f]+/[0-9A-Fa-f]+)') AS start_lsn"
    " FROM pg_catalog.pg_read_file('backup_label', 0, 1048576, true) AS t) AS f")
GUARDED_STOP_SQL = {
    NATIVE: _GUARDED_STOP % "(SELECT lsn::text FROM pg_catalog.pg_stop_backup(true, false))",
    EXTENSION: _GUARDED_STOP % "pg_catalog.pg_stop_backup()::text",
}


def guarded_stop_args(label, start_lsn=None):
    return {"label": label, "start_lsn": start_lsn}


# Whether this very backup (label and start LSN, as the guarded stop checks them) is still in progress:
# true, or NULL when no backup or another one is.
THIS_BACKUP_IN_PROGRESS_SQL = _GUARDED_STOP % "true"

# The extension's pg_stop_backup() waits for the WAL archive after ending the backup, without end
# while archiving fails; so every stop runs under a statement_timeout, and a cancelled stop is
# then judged by backup_label. The limit is never below one second: the stop itself needs a moment.
TIMEOUT_SETTING_SQL = "SELECT pg_catalog.current_setting('statement_timeout')"
SET_TIMEOUT_SQL = "SELECT pg_catalog.set_config('statement_timeout', %s, false)"
MIN_STOP_LIMIT_MS = 1000
QUERY_CANCELED = "57014"


class StopCutShort(Exception):
    """The stop statement ran out of time; ``ended``: this backup had ended by then (the archive wait was cut)."""

    def __init__(self, ended, seconds):
        super(StopCutShort, self).__init__(
            "the stop statement did not return within %s seconds; the backup had %s" % (
                seconds, "ended, and its stop was waiting for the WAL archive" if ended else "not ended"))
        self.ended = ended
        self.seconds = seconds


def stop_limit_ms(seconds):
    return max(MIN_STOP_LIMIT_MS, int(seconds * 1000))


def _sqlstate(exc):
    """SQLSTATE of a statement error: connection.py's DatabaseError says sqlstate, psycopg2 pgcode."""
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


# Every stop of this collection (the module's and the watchdog's) holds this
# advisory lock from reading the label to recording the outcome, so a stop
# never acts on a label another stop has just ended. Session-level: a client
# that dies releases it. The key spells 'pgxbk'.
STOP_LOCK_KEY = 0x7067786B62
LOCK_SQL = "SELECT pg_catalog.pg_advisory_lock(%s)"
UNLOCK_SQL = "SELECT pg_catalog.pg_advisory_unlock(%s)"


def guarded_stop(value, api, label, start_lsn, seconds, errors):
    """Stop the backup in progress only if it is this one; its stop LSN, or None when nothing was stopped.

    ``value(sql, args)`` runs one statement and returns its single value;
    ``errors``: what a failed statement raises. The stop statement gets
    ``seconds`` (statement_timeout); when they run out, StopCutShort says
    whether this backup had ended by then: the caller read it in progress
    under the stop lock just before, so what ended it was this statement.
    """
    args = guarded_stop_args(label, start_lsn)
    previous = value(TIMEOUT_SETTING_SQL, None)
    value(SET_TIMEOUT_SQL, ("%dms" % stop_limit_ms(seconds),))
    try:
        return value(GUARDED_STOP_SQL[api], args)
    except errors as exc:
        if _sqlstate(exc) != QUERY_CANCELED:
            raise
    finally:
        value(SET_TIMEOUT_SQL, (previous,))
    raise StopCutShort(value(THIS_BACKUP_IN_PROGRESS_SQL, args) is not True, seconds)


def would_stop(would_run, api, label, start_lsn, seconds):
    """Record, in check mode, the statements guarded_stop sends."""
    would_run(SET_TIMEOUT_SQL, ("%dms" % stop_limit_ms(seconds),))
    would_run(GUARDED_STOP_SQL[api], guarded_stop_args(label, start_lsn))


# A stop whose only task is to end the backup (the watchdog's, a failed start's undo) gives the archive this long.
ENDING_LIMIT = 10


def end_this_backup(value, api, label, start_lsn, errors):
    """Stop this backup when only its end matters: (ended, stop LSN or None when the archive wait was cut).

    StopCutShort when it had not even ended within ENDING_LIMIT seconds.
    """
    try:
        stop_lsn = guarded_stop(value, api, label, start_lsn, ENDING_LIMIT, errors)
    except StopCutShort as cut:
        if not cut.ended:
            raise
        return True, None
    return stop_lsn is not None, stop_lsn


def label_in_progress(value):
    """The label of the backup in progress, or None."""
    return value(READ_LABEL_SQL, None)


@contextmanager
def stop_lock(value, connection_errors):
    """Hold the stop lock; ``connection_errors``: what a broken connection raises (it released the lock)."""
    value(LOCK_SQL, (STOP_LOCK_KEY,))
    try:
        yield
    finally:
        try:
            value(UNLOCK_SQL, (STOP_LOCK_KEY,))
        except connection_errors:
            pass
