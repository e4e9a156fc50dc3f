# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Connecting to PostgreSQL with community.postgresql's option names.

Every statement goes through Session, which parameterises it, records it for
the modules' ``queries`` return value, and turns driver errors into
BackupError messages that say what to do.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

try:
    import psycopg2
except ImportError:
    psycopg2 = None
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()
else:
    PSYCOPG2_IMPORT_ERROR = None

SSL_MODES = ("allow", "disable", "prefer", "require", "verify-ca", "verify-full")
INSUFFICIENT_PRIVILEGE = "42501"


def connection_argument_spec():
    return dict(
        login_user=dict(type="str", default="postgres", aliases=["login"]),
        login_password=dict(type="str", default="", no_log=True),
        login_host=dict(type="str", default="", aliases=["host"]),
        login_unix_socket=dict(type="str", default="", aliases=["unix_socket"]),
        login_port=dict(type="int", default=5432, aliases=["port"]),
        login_db=dict(type="str", default="postgres", aliases=["db"]),
        ssl_mode=dict(type="str", default="prefer", choices=list(SSL_MODES)),
        ca_cert=dict(type="str", aliases=["ssl_rootcert"]),
        ssl_cert=dict(type="path"),
        ssl_key=dict(type="path"),
        connect_params=dict(type="dict", default={}),
        connect_timeout=dict(type="int", default=10),
    )


def ensure_driver(module):
    if psycopg2 is None:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)


def libpq_params(params):
    """psycopg2.connect() keyword arguments from the module's connection options."""
    kwargs = {
        "user": params["login_user"],
        "port": params["login_port"],
        "dbname": params["login_db"],
        "sslmode": params["ssl_mode"],
        "connect_timeout": params["connect_timeout"],
        "application_name": "pgexclusive.backup",
    }
    # libpq takes a socket directory as host; an empty host means its default socket.
    host = params["login_host"] or params["login_unix_socket"]
    if host:
        kwargs["host"] = host
    if params["login_password"]:
        kwargs["password"] = params["login_password"]
    for option, keyword in (("ca_cert", "sslrootcert"), ("ssl_cert", "sslcert"), ("ssl_key", "sslkey")):
        if params.get(option):
            kwargs[keyword] = params[option]
    kwargs.update(params.get("connect_params") or {})
    return kwargs


def describe_target(params):
    """'user postgres on database backupctl at /run/postgresql:5432' for messages."""
    host = params["login_host"] or params["login_unix_socket"] or "the default Unix socket"
    return "user %s on database %s at %s:%s" % (params["login_user"], params["login_db"], host, params["login_port"])


def connection_failure(message, params):
    """BackupError for a failed connection, by what libpq said; never carries the password."""
    if params.get("login_password"):
        message = message.replace(params["login_password"], "********")
    message = message.strip()
    target = describe_target(params)
    lowered = message.lower()
    if 'database "%s" does not exist' % params["login_db"] in message:
        hint = ("Set login_db to an existing database: on PostgreSQL 15 and later, the one where the "
                "pg_exclusive_backup extension is installed.")
    elif "password authentication failed" in lowered or "no password supplied" in lowered \
            or ("role" in lowered and "does not exist" in lowered) or "pg_hba.conf" in lowered \
            or "authentication failed" in lowered:
        hint = ("Check login_user and login_password, and that pg_hba.conf admits this user "
                "from this host to this database.")
    elif "connection refused" in lowered or "no such file or directory" in lowered \
            or "could not translate host name" in lowered or "timeout expired" in lowered:
        hint = ("Check that the server is running and listening there: login_host, login_port and "
                "login_unix_socket must match listen_addresses, port and unix_socket_directories. "
                "pg_backup_info with data_directory reports a stopped server's state from its files.")
    else:
        hint = "Check the connection options (login_*, ssl_*, connect_params)."
    return BackupError("Could not connect to PostgreSQL as %s: %s" % (target, message), hint,
                       connection_error=message)


class DatabaseError(BackupError):
    """A statement failed; sqlstate and primary let callers recognise the cause."""

    def __init__(self, msg, hint, sqlstate, primary):
        super(DatabaseError, self).__init__(msg, hint, sqlstate=sqlstate)
        self.sqlstate = sqlstate
        self.primary = primary


def connect_socket(socket_dir, port, user="postgres", dbname="postgres"):
    """An autocommit connection through a Unix socket, e.g. to a throwaway server the module started itself."""
    conn = psycopg2.connect(host=socket_dir, port=port, user=user, dbname=dbname, connect_timeout=5)
    conn.autocommit = True
    return conn


def with_queries(session, run):
    """``run()``'s result with the statements ``session`` sent as ``queries``, on a BackupError too; closes it.

    The one place a module's ``queries`` are attached: even a failure shows
    what reached the server before it.
    """
    try:
        result = run()
    except BackupError as exc:
        exc.facts.setdefault("queries", session.queries)
        raise
    finally:
        session.close()
    result["queries"] = session.queries
    return result


class Session(object):
    """One autocommit connection; each statement is recorded once, as it was sent."""

    def __init__(self, params):
        self.params = params
        self.queries = []
        try:
            self._conn = psycopg2.connect(**libpq_params(params))
        except psycopg2.Error as exc:
            raise connection_failure(str(exc), params)
        self._conn.autocommit = True
        self.user = params["login_user"]

    def _record(self, statement):
        if isinstance(statement, bytes):
            statement = statement.decode("utf-8", "replace")
        if statement not in self.queries:
            self.queries.append(statement)

    def rows(self, sql, args=None):
        cursor = self._conn.cursor()
        try:
            cursor.execute(sql, args)
            return cursor.fetchall() if cursor.description else []
        except psycopg2.Error as exc:
            raise self._failure(exc)
        finally:
            self._record(cursor.query or cursor.mogrify(sql, args))
            cursor.close()

    def row(self, sql, args=None):
        rows = self.rows(sql, args)
        return rows[0] if rows else None

    def value(self, sql, args=None):
        return self.row(sql, args)[0]

    def would_run(self, sql, args=None):
        """Record a statement check mode does not run."""
        cursor = self._conn.cursor()
        try:
            self._record(cursor.mogrify(sql, args))
        finally:
            cursor.close()

    def close(self):
        self._conn.close()

    def _failure(self, exc):
        diag = getattr(exc, "diag", None)
        primary = (diag.message_primary if diag is not None else None) or str(exc).strip()
        sqlstate = getattr(exc, "pgcode", None)
        if sqlstate is None:
            # No SQLSTATE: the connection itself broke (server stopped, crashed, network).
            return DatabaseError(
                "The connection to PostgreSQL broke: %s" % str(exc).strip(),
                "Check that the server is still running (pg_backup_info reports its state).",
                None, primary)
        if sqlstate == INSUFFICIENT_PRIVILEGE:
            return DatabaseError(
                "PostgreSQL refused %s: %s" % (self.user, primary),
                "Connect as a superuser, or have one grant the privilege named above to %s." % self.user,
                sqlstate, primary)
        detail = " (%s)" % diag.message_hint if diag is not None and diag.message_hint else ""
        return DatabaseError("PostgreSQL reported an error [%s]: %s%s" % (sqlstate, primary, detail),
                             "See the server log for the context.", sqlstate, primary)
