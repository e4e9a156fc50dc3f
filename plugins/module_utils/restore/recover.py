# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 6, recover: start the restored server (restore_server.py) and wait until it reaches its target.

``job.state`` is left for the report: the server's answer once it reached
its target, or, with target_action shutdown, the log line where it stopped.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.tools import Owner
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_layout import write_new
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_server import (
    acting_as, alive, listening, log_tail, postmaster_pid, read_log, start)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_target import (
    explain_recovery_failure, replay_end_in_log)

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


def login_role(params, owner_name):
    """The role the restore connects to the restored server as: login_user, else the OS user that owns the
    restored data directory. initdb names the bootstrap superuser after the OS user that ran it, and peer
    authentication admits that OS user as the role of its own name."""
    return params.get("login_user") or owner_name


def stopping_line(text):
    lines = [line for line in text.splitlines() if "recovery stopping" in line]
    return lines[-1].split("recovery stopping", 1)[1].strip() if lines else None


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
        rc, out = job.debian.start(log)
    else:
        rc, out = start(job.pg_ctl, data, log, Owner(owner), os.path.dirname(data))
    # pg_ctlcluster waits for a server that a shutdown target stops on its own.
    if rc != 0 and not (job.debian and p.get("target_action") == "shutdown"):
        raise BackupError("The restored server did not start: %s%s" % (out.strip(), log_tail(log)),
                          "Read the log above: the settings (port, memory) or binaries of another major.")
    timeout = p.get("timeout") or 3600
    deadline = time.time() + timeout
    action = p.get("target_action") or "promote"
    started = time.time()
    pid = None
    while True:
        if job.debian:
            job.debian.copy_log(log)
        pid = pid or postmaster_pid(data)
        if (pid and not alive(pid)) or (pid is None and time.time() > started + 10):
            job.state = ended(log, action)
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
                              "-D %s stop and check that the WAL up to the target is available." % (pid, data),
                              timed_out=True)
        time.sleep(0.3)


def ended(log, action):
    """The log line where a shutdown at the target stopped; raises for a server that died on its way."""
    text = read_log(log)
    if action == "shutdown" and "database system is shut down" in text and "recovery stopping" in text:
        return {"reached": stopping_line(text)}
    explained = explain_recovery_failure(text)
    if explained:
        raise BackupError(explained[0] + log_tail(log), explained[1], replay_end=replay_end_in_log(text))
    raise BackupError("The restored server stopped during recovery.%s" % log_tail(log),
                      "Read the log above; the data directory is left as it is for a person to look at.")


def server_state(job, data, owner):
    sock, port = listening(data)
    if not port:
        return None
    role = login_role(job.p, owner.pw_name)
    try:
        conn = connect(job, sock, port, role, owner)
    except Exception as exc:   # still starting or replaying before consistency: psycopg2 raises OperationalError
        job.last_error = str(exc).strip()
        if refused_login(job.last_error):
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
    except Exception:
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
        except Exception as exc:
            if os.geteuid() != 0 or not socket_refused(str(exc)):
                raise
            job.as_owner = False
    return job.connect(sock or "127.0.0.1", port, role)
