# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 6, recover: start the restored server (restore/server.py) and wait until it reaches its target.

Before anything is laid out (``list_wal``, run after prove), the WAL archive
is listed from the backup's start on (wal/restore_wal.py): a gap before the
target fails the restore naming the segment, unless allow_wal_gap accepts
ending there. The restored server is this module's child (``job.server``),
signalled only through that handle; the poll loop waits out only the
connection errors of a server still starting or not yet consistent, and
fails at once on any other.

``job.state`` is left for the report: the server's answer once it reached
its target, or, with target_action shutdown, the log line where it stopped.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import subprocess
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import psycopg2
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.prove import wal_in_backup
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.tools import Owner
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.layout import write_new
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.server import (
    acting_as, alive, listening, log_tail, postmaster_pid, read_log, start_postmaster)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.recovery_target import (
    end_of_wal, explain_recovery_failure, replay_end_in_log)
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.restore_wal import gap_error, listing, plan

# What the driver raises for a failed connection or statement (OSError: a socket the OS refuses); anything
# else is a bug and stays a traceback.
DRIVER_ERRORS = (psycopg2.Error, OSError) if psycopg2 is not None else (OSError,)

# libpq's words for a server that is up but will not let this role in; before consistency it says
# "the database system is starting up" / "not yet accepting connections" instead, which is waited out.
REFUSED_LOGIN = ("authentication failed", "no pg_hba.conf entry", "does not exist", "permission denied",
                 "password authentication", "no password supplied")


def refused_login(message):
    """True when a connection error says the server refuses this login, not that it is still starting."""
    text = (message or "").lower()
    return any(words in text for words in REFUSED_LOGIN)


def socket_refused(message):
    """True when the OS, not the server, refused the connection: EACCES on the socket or a directory above it."""
    return "permission denied" in (message or "").lower() and "FATAL" not in (message or "")


# libpq's words for a server on its way: starting, replaying before consistency, shutting down (the loop then
# sees it exit), or its socket not made yet. Only these are waited out.
STILL_STARTING = ("the database system is starting up", "not yet accepting connections",
                  "the database system is not accepting connections", "the database system is in recovery mode",
                  "the database system is shutting down", "no such file or directory", "connection refused",
                  "server closed the connection unexpectedly", "terminating connection due to",
                  "could not receive data from server", "sorry, too many clients already", "timeout expired")


def connection_outcome(message):
    """How the poll loop takes an error of the restored server: 'refused' (this login is not admitted), 'wait'
    (still starting or not yet consistent) or 'error' (anything else: it fails at once)."""
    if refused_login(message):
        return "refused"
    text = (message or "").lower()
    return "wait" if any(words in text for words in STILL_STARTING) else "error"


def login_role(params, owner_name):
    """The role the restore connects to the restored server as: login_user, else the OS user that owns the
    restored data directory. initdb names the bootstrap superuser after the OS user that ran it, and peer
    authentication admits that OS user as the role of its own name."""
    return params.get("login_user") or owner_name


def stopping_line(text):
    lines = [line for line in text.splitlines() if "recovery stopping" in line]
    return lines[-1].split("recovery stopping", 1)[1].strip() if lines else None


def list_wal(job):
    """Before anything is laid out: the archive from the backup's start on, and no gap before the target."""
    p = job.p
    found = plan(p, job.record, lambda: listing(p.get("wal_archive_dir"), wal_in_backup(job.backup_dir, job.record)))
    job.result["wal_gap_check"] = found
    if found.get("gap") and not found["allowed"]:
        raise gap_error(found, p, p.get("wal_archive_dir"))


def run(job):
    p, data, owner = job.p, job.data, job.owner
    if not p.get("start", True):
        return
    log = p.get("log_file") or data + ".restore.log"
    if os.path.lexists(log):
        os.unlink(log)
    write_new(log, "", 0o600)
    if os.geteuid() == 0:
        os.chown(log, owner.pw_uid, owner.pw_gid)
    job.result["log_file"] = log
    if job.debian:
        job.server = start_debian_cluster(job, log)
    else:
        postgres = os.path.join(os.path.dirname(job.pg_ctl), "postgres")
        try:
            job.server = start_postmaster(postgres, data, log, Owner(owner), os.path.dirname(data))
        except (OSError, subprocess.SubprocessError) as exc:
            raise BackupError("The restored server did not start: %s could not be run (%s).%s" % (postgres, exc, log_tail(log)),
                              "Read the log above: the settings (port, memory) or binaries of another major.")
    timeout = p.get("timeout") or 3600
    deadline = time.time() + timeout
    action = p.get("target_action") or "promote"
    while True:
        if job.debian:
            job.debian.copy_log(log)
        if not job.server.running():
            job.state = ended(log, action, job.result.get("wal_gap_check"))
            return
        state = server_state(job, data, owner)
        if state is not None:
            in_recovery, paused = state[0], state[1]
            if not in_recovery or (action == "pause" and paused):
                job.state = {"server": state}
                return
        if time.time() > deadline:
            raise BackupError("The restored server did not reach its recovery target in %ss.%s%s"
                              % (timeout, log_tail(log), "\nThe last connection attempt: %s" % job.last_error
                                 if job.last_error else ""),
                              "It is still running (PID %s) and replaying: raise timeout, or stop it with pg_ctl "
                              "-D %s stop and check that the WAL up to the target is available."
                              % (job.server.pid, data), timed_out=True)
        time.sleep(0.3)


class WatchedCluster(object):
    """A Debian cluster's postmaster, started by pg_ctlcluster: watched by the PID its postmaster.pid names, never
    signalled (the restore leaves it running, and stopping it is pg_ctlcluster's)."""

    # pg_ctlcluster returns once the server answers or stopped; a postmaster.pid still missing after this is gone.
    GRACE = 10

    def __init__(self, data):
        self.data = data
        self.started = time.time()
        self.pid = None

    def running(self):
        self.pid = self.pid or postmaster_pid(self.data)
        if self.pid is None:
            return time.time() < self.started + self.GRACE
        return alive(self.pid)


def start_debian_cluster(job, log):
    rc, out = job.debian.start(log)
    # pg_ctlcluster waits for a server that a shutdown target stops on its own.
    if rc != 0 and job.p.get("target_action") != "shutdown":
        raise BackupError("The restored server did not start: %s%s" % (out.strip(), log_tail(log)),
                          "Read the log above: the settings (port, memory) or binaries of another major.")
    return WatchedCluster(job.data)


def ended(log, action, wal_gap_check):
    """The log line where a shutdown at the target stopped; raises for a server that died on its way, saying
    where replay ended and why."""
    text = read_log(log)
    end = replay_end_in_log(text)
    if action == "shutdown" and "database system is shut down" in text and "recovery stopping" in text:
        return {"reached": stopping_line(text), "replay_end": end}
    facts = dict(replay_end=end, ended_at_lsn=end.get("lsn"), ended_at_time=end.get("last_commit"))
    explained = explain_recovery_failure(text, wal_gap_check)
    if explained:
        if "recovery ended before configured recovery target was reached" in text:
            facts["ended_because"] = end_of_wal(wal_gap_check)
        raise BackupError(explained[0] + log_tail(log), explained[1], **facts)
    raise BackupError("The restored server stopped during recovery.%s" % log_tail(log),
                      "Read the log above; the data directory is left as it is for a person to look at.", **facts)


def unanswered(job, data, message):
    """The restored server answered the restore with an error that waiting will not cure."""
    return BackupError("The restore could not ask the restored server where its recovery is: %s" % message,
                       "Read the server's log (%s). The server is left running: stop it with pg_ctl -D %s stop."
                       % (job.result.get("log_file"), data), server_error=message)


def server_state(job, data, owner):
    sock, port = listening(data)
    if not port:
        return None
    role = login_role(job.p, owner.pw_name)
    try:
        conn = connect(job, sock, port, role, owner)
    except DRIVER_ERRORS as exc:
        job.last_error = str(exc).strip()
        outcome = connection_outcome(job.last_error)
        if outcome == "error":
            raise unanswered(job, data, job.last_error)
        if outcome == "refused":
            raise BackupError(
                "The restored server runs but refused the restore's connection as role %s (through %s, port %s, "
                "as OS user %s): %s" % (role, sock or "127.0.0.1", port, owner.pw_name, job.last_error),
                "Set login_user (the role: restore_login_user) to a role that the restored pg_hba.conf admits "
                "over the Unix socket from OS user %s. The server is left running: stop it with pg_ctl -D %s "
                "stop, or connect yourself to see where it is." % (owner.pw_name, data), login_refused=True)
        return None
    try:
        cur = conn.cursor()
        cur.execute("SELECT current_setting('server_version_num')::int")
        # 14 tells a pause asked for from one reached; 10 to 13 (which the drill restores too) only the former.
        paused = ("pg_get_wal_replay_pause_state() = 'paused'" if cur.fetchone()[0] >= 140000
                  else "pg_is_wal_replay_paused()")
        cur.execute("SELECT pg_is_in_recovery(), pg_is_in_recovery() AND " + paused + ", "
                    "pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text, "
                    "CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint()) "
                    "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, "
                    "current_setting('server_version')")
        return cur.fetchone() + (sock, port)
    except DRIVER_ERRORS as exc:   # the server went down under the query (a shutdown at its target): waited out
        job.last_error = str(exc).strip()
        if connection_outcome(job.last_error) != "wait":
            raise unanswered(job, data, job.last_error)
        return None
    finally:
        conn.close()


def connect(job, sock, port, role, owner):
    """A connection as ``role``, made with the owner's uid; with the module's own when the OS refuses the owner
    the socket.

    The owner's uid is what peer authentication needs. On the fleet test
    bed's hosts (a module run over ssh and sudo) the owner's uid was refused
    the socket with EACCES although the server had made it there as that
    same user; root reaches it, and trust or password authentication admit
    root as any role.
    """
    if job.as_owner:
        try:
            with acting_as(Owner(owner)):
                return job.connect(sock or "127.0.0.1", port, role)
        except DRIVER_ERRORS as exc:
            if os.geteuid() != 0 or not socket_refused(str(exc)):
                raise
            job.as_owner = False
    return job.connect(sock or "127.0.0.1", port, role)
