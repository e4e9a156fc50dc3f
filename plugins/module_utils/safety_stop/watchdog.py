# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The safety stop's watchdog: a process on the database host that ends a backup whose lease expired.

Ansible runs neither rescue nor always when the controller is killed or an
AWX job is cancelled, so pg_start_backup leaves this watchdog behind. The
lease ends max_duration after the start or heartbeat_timeout after the
controller's last renewal, whichever comes first (safety_stop_lease.lease_end).
The watchdog is detached from everything Ansible owns:

- it runs as ``python -c <source>``: AnsiballZ runs the module from a
  temporary zip that is deleted when the task ends, so the watchdog carries
  the source of this file and of every module_utils file it imports
  (_CARRIED: durable.py, backup_api.py with the guarded stop and lock it
  shares with pg_stop_backup, safety_stop/records.py, safety_stop/lease.py)
  in its command line instead of importing them from that zip (it needs
  only the standard library and psycopg2, which the module itself needed);
- it is double-forked into a new session with its standard streams on
  /dev/null, so neither a SIGKILL of ansible-playbook, nor the end of the
  module process, nor a hang-up of a terminal reaches it;
- the connection parameters, password included, reach it through a pipe on
  its standard input: never the command line (ps shows it), the environment
  (/proc/<pid>/environ) or a file.

At expiry it takes the collection's advisory lock (the stop module takes it
too, so the two never interleave), re-reads the state record (a normal stop
marks it stopped), and stops the backup in one statement that checks the
label in backup_label and stops only if it is this backup's, within
backup_api.ENDING_LIMIT seconds (the extension's stop would otherwise wait
for the WAL archive without end while archiving fails). What it did goes
into the state record. The start arms it and the stop disarms it through
safety_stop/arming.py.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import signal
import subprocess
import sys
import time

# Imported by name from the modules themselves: in the watchdog process only
# those modules are registered (see _BOOTSTRAP), not the packages above them.
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_api import (
    end_this_backup, label_in_progress, stop_lock)
from ansible_collections.pgexclusive.backup.plugins.module_utils.durable import atomic_write
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.lease import (
    end_lease, lease_end, lease_renewed_at)
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import (
    EXPIRED_ERROR, EXPIRED_NOT_IN_PROGRESS, EXPIRED_OTHER_LABEL, EXPIRED_STOPPED, EXPIRED_UNREACHABLE, RUNNING,
    is_watchdog_of, now_iso, read_record, update_record, write_record)

# Every module_utils file the watchdog imports, named by one of its functions, each after those it imports.
_CARRIED = (atomic_write, end_this_backup, now_iso, lease_end)

# Connection attempts at expiry go on for this long at most, in seconds, but
# never longer than the lease itself: a server restarting must get its chance.
UNREACHABLE_GRACE = 60
RETRY_INTERVAL = 2
# A renewal is seen within this many seconds; the end of the lease itself is slept to exactly.
POLL_INTERVAL = 5

_BOOTSTRAP = r'''
import sys, types
for name, source in %(modules)r:
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, name, "exec"), module.__dict__)
module.main()
'''


def _source_of(module):
    """A module's source, also from inside the AnsiballZ zip (the loader still has it while the task runs)."""
    source = module.__loader__.get_source(module.__name__)
    if source is None:
        raise RuntimeError("the source of %s is not available" % module.__name__)
    return source


def watchdog_argv(record_path):
    """python -c <bootstrap> <record path>; the path lets the stop recognise this watchdog by its PID."""
    modules = [sys.modules[function.__module__] for function in _CARRIED] + [sys.modules[__name__]]
    modules = [(module.__name__, _source_of(module)) for module in modules]
    return [sys.executable, "-c", _BOOTSTRAP % dict(modules=modules), record_path]


def spawn(config):
    """Start the watchdog described by ``config``; return its PID once it has written its record.

    ``config`` holds: connect (psycopg2.connect keyword arguments, password
    included), record_path, record (the state record to write, outcome
    running; its label, start LSN and lease) and api (which stop statement).
    """
    proc = subprocess.Popen(watchdog_argv(config["record_path"]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd="/", start_new_session=True, close_fds=True)
    out, err = proc.communicate(json.dumps(config).encode("utf-8"), timeout=60)
    text = out.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or not text.isdigit():
        raise RuntimeError("the watchdog did not start (exit %s): %s" % (
            proc.returncode, (err.decode("utf-8", "replace").strip() or text)[-2000:]))
    return int(text)


def main():
    """Entry point of the ``python -c`` process: read the config, detach, wait, act."""
    config = json.loads(sys.stdin.read())
    sys.stdin.close()
    if os.fork() > 0:
        # The first child exits at once: the module reaps it, and the watchdog,
        # no session leader, can never get a controlling terminal back.
        os._exit(0)
    os.umask(0o077)
    record = dict(config["record"], watchdog_pid=os.getpid())
    write_record(config["record_path"], record)
    sys.stdout.write("%d\n" % os.getpid())
    sys.stdout.flush()
    _detach_stdio()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # SIGTERM before expiry is how a normal stop ends the watchdog; the stop has recorded the outcome.
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    ended_by = wait_for_lease_end(config["record"], config["record_path"])
    # From here on the watchdog finishes what it started: a SIGTERM must not cut a stop in half.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        expire(config, ended_by)
    except Exception as exc:  # noqa: BLE001 - whatever happened must reach the record
        record = read_record(config["record_path"])
        if record is not None and record.get("outcome") == RUNNING:
            _finish(config["record_path"], dict(ended_by, outcome=EXPIRED_ERROR, error=str(exc).strip()))
    os._exit(0)


def wait_for_lease_end(record, path):
    """Sleep until the lease of ``record`` ends; what ended it, for the record."""
    while True:
        renewed = lease_renewed_at(path)
        # The start leaves a watchdog only for a lease with an end (max_duration or heartbeat_timeout).
        limit = lease_end(record, renewed)
        left = limit[0] - time.time()
        if left <= 0:
            return dict(expired_by=limit[1], lease_renewed_at=now_iso(renewed or record["started_epoch"]))
        time.sleep(min(left, POLL_INTERVAL))


def _finish(path, changes):
    """Record the outcome, then end the lease: a renewal after this finds the backup ended."""
    changes.setdefault("ended_at", now_iso())
    update_record(path, **changes)
    end_lease(path)


def _detach_stdio():
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def connect_retrying(config):
    """A connection to the server, retried for as long as the lease allows; _Unreachable when it never came."""
    psycopg2 = _driver()
    lease = config["record"].get("lease") or config["record"].get("heartbeat_timeout") or 0
    give_up = time.time() + min(UNREACHABLE_GRACE, max(RETRY_INTERVAL, lease))
    while True:
        try:
            conn = psycopg2.connect(**config["connect"])
            conn.autocommit = True
            return conn
        except psycopg2.Error as exc:
            if time.time() >= give_up:
                raise _Unreachable(str(exc).strip())
            time.sleep(RETRY_INTERVAL)


class _Unreachable(Exception):
    pass


def expire(config, ended_by):
    """Act at expiry under the stop lock; the outcome is recorded before the lock is released.

    A stop waiting for the lock then reads the watchdog's outcome, never a
    record that still says running for a backup the watchdog has just ended.
    """
    try:
        conn = connect_retrying(config)
    except _Unreachable as exc:
        _finish(config["record_path"], dict(ended_by, outcome=EXPIRED_UNREACHABLE, error=str(exc)))
        return
    try:
        cursor = conn.cursor()
        with stop_lock(_value_of(cursor), _driver().Error):
            changes = decide(config, cursor)
            if changes:
                _finish(config["record_path"], dict(ended_by, **changes))
    finally:
        conn.close()


def decide(config, cursor):
    """Under the lock: stop the backup if it is still this very backup (label and start LSN)."""
    record = read_record(config["record_path"])
    if record is None or record.get("outcome") != RUNNING:
        return None
    value = _value_of(cursor)
    # Bounded: the extension's stop would wait for the WAL archive without end while archiving fails.
    ended, stop_lsn = end_this_backup(value, config["api"], config["record"]["label"], config["record"]["start_lsn"],
                                      _driver().Error)
    if ended:
        return dict(outcome=EXPIRED_STOPPED, stop_lsn=stop_lsn, archive_wait_cut=stop_lsn is None)
    other = label_in_progress(value)
    if other is None:
        return dict(outcome=EXPIRED_NOT_IN_PROGRESS)
    return dict(outcome=EXPIRED_OTHER_LABEL, other_label=other)


def _value_of(cursor):
    """backup_api's ``value(sql, args)`` over a plain psycopg2 cursor."""
    def value(sql, args=None):
        cursor.execute(sql, args)
        return cursor.fetchone()[0]
    return value


def _driver():
    """psycopg2, imported in the watchdog process only: the modules import it through connection.py."""
    import psycopg2
    return psycopg2


def end(pid, record_path):
    """End the watchdog of ``record_path`` if ``pid`` is still it; True when it was running."""
    if not is_watchdog_of(pid, record_path):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return False
    return True
