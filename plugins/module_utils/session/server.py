# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The connection a start or a stop works through, and what it reads from the server.

No session survives from one task to the next, so the state of a backup is
what the server keeps: backup_label in the data directory. It is read
through SQL (pg_read_file) so that labels can be checked from any host.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_api
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    LABEL_FILE, TABLESPACE_MAP, parse_backup_label, parse_tablespace_map)
from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import DatabaseError, Session, with_queries
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

FACTS_QUERY = (
    "SELECT current_setting('server_version_num')::int, current_setting('server_version'),"
    " pg_catalog.pg_is_in_recovery(), current_setting('wal_level'), current_setting('archive_mode'),"
    " pg_catalog.pg_size_bytes(current_setting('wal_segment_size')),"
    " EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = %s),"
    " current_user, current_database(),"
    " (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),"
    # State records are kept per cluster, named by its system identifier.
    " CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')"
    " THEN (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) END")
FACT_NAMES = ("version_num", "version", "in_recovery", "wal_level", "archive_mode", "wal_segment_size",
              "extension_installed", "user", "database", "superuser", "system_identifier")
MISSING_PRIVILEGES_QUERY = (
    "SELECT f FROM pg_catalog.unnest(%s::text[]) AS f WHERE NOT pg_catalog.has_function_privilege(f, 'EXECUTE')")
READ_FILES_QUERY = "SELECT pg_catalog.pg_read_file(%s, 0, %s, true), pg_catalog.pg_read_file(%s, 0, %s, true)"
READ_FILE_QUERY = "SELECT pg_catalog.pg_read_file(%s, 0, %s, true)"
READ_LIMIT = 1024 * 1024
SECONDS_SINCE_QUERY = "SELECT extract(epoch FROM pg_catalog.clock_timestamp() - %s::timestamptz)::float8"


class Server(object):
    """What one connection learns about the server and login_db, once per task."""

    def __init__(self, session):
        self.session = session
        for name, value in zip(FACT_NAMES, session.row(FACTS_QUERY, (backup_api.EXTENSION_NAME,))):
            setattr(self, name, value)
        self.api, self.api_reason = backup_api.choose_api(self.version_num, self.extension_installed, self.database)

    def require_primary(self, action):
        if self.in_recovery:
            raise BackupError(
                "The server is in recovery (a standby, or a copy being restored), so it cannot %s: "
                "exclusive backups run only on a primary." % action,
                "Point login_host/login_port at the primary.")

    def missing_privileges(self, functions):
        """The functions of ``functions`` this user may not execute."""
        if self.superuser:
            return []
        return [row[0] for row in self.session.rows(MISSING_PRIVILEGES_QUERY, (list(functions),))]

    def require_privileges(self, functions, action):
        missing = self.missing_privileges(functions)
        if missing:
            raise BackupError(
                "User %s may not execute %s in database %s, which it needs to %s."
                % (self.user, ", ".join(missing), self.database, action),
                "Connect to database %s as a superuser and run: %s"
                % (self.database, backup_api.grant_statement(missing, self.user)),
                grant=backup_api.grant_statement(missing, self.user))

    def read_backup(self):
        """The backup in progress as parsed backup_label fields plus the raw files, or None."""
        label_text, map_text = self.session.row(
            READ_FILES_QUERY, (LABEL_FILE, READ_LIMIT, TABLESPACE_MAP, READ_LIMIT))
        if label_text is None:
            return None
        backup = parse_backup_label(label_text)
        backup["backup_label"] = label_text
        backup["tablespace_map"] = parse_tablespace_map(map_text)
        return backup

    def read_wal_file(self, name):
        """The text of pg_wal/``name`` (a backup history file), or None when it is gone."""
        return self.session.value(READ_FILE_QUERY, ("pg_wal/" + name, READ_LIMIT))

    def seconds_since(self, start_time):
        """Age of a START TIME by the server's clock, which also knows log_timezone's abbreviations."""
        try:
            return round(self.session.value(SECONDS_SINCE_QUERY, (start_time,)), 3)
        except DatabaseError:
            return None


def open_server(params):
    return Server(Session(params))


def on_server(run):
    """Run ``run(server, params, check_mode)`` on a server opened for it, with the statements sent attached."""
    def wrapper(params, check_mode):
        server = open_server(params)
        return with_queries(server.session, lambda: run(server, params, check_mode))
    return wrapper


def stop_lock(session):
    """Hold the collection's advisory lock: the watchdog and other stops wait until the outcome is recorded."""
    return backup_api.stop_lock(session.value, DatabaseError)
