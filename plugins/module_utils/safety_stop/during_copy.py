# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The safety stop during the copy: a copy runs only while its backup's lease holds.

When the lease ends the watchdog (safety_stop/watchdog.py) stops the backup;
copy_while_leased ends the copy at the same moment, child processes included.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import signal
import threading
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.lease import lease_lost, lease_renewed_at
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import RUNNING, read_record

GUARD_INTERVAL = 1.0
# After the lease ended, how long the copy waits for the watchdog's outcome, to say what became of the backup.
OUTCOME_WAIT = 15


def copy_while_leased(path, copy, cancel):
    """``copy()``'s result, run while the lease of the record at ``path`` holds; None ``path``: no lease.

    A copy whose controller is gone (killed, cancelled, cut off) goes on
    running on the database host: nothing tells it. Its lease does: once it
    ends, the watchdog stops the backup, and this ends the copy too, so an
    orphaned copy never writes on for hours. ``cancel`` (a threading.Event)
    stops an in-process copy between files; the copy's child processes (tar,
    rsync, ssh, the user's command) are terminated. A lease that ended during
    the copy fails it even when the copy finished: the backup is void.
    """
    if path is None:
        return copy()
    reason = _lease_lost(path)
    if reason:
        _refuse_lost_lease(path, reason, started=False)
    lost = []
    done = threading.Event()

    def watch():
        while not done.wait(GUARD_INTERVAL):
            why = _lease_lost(path)
            if why:
                lost.append(why)
                cancel.set()
                terminate_children()
                return

    watcher = threading.Thread(target=watch, name="lease watch")
    watcher.daemon = True
    watcher.start()
    try:
        result = copy()
    except Exception:  # noqa: BLE001 - a copy ended by the lease fails with the lease's reason
        if not lost:
            raise
        result = None
    finally:
        done.set()
        watcher.join()
    if lost:
        _refuse_lost_lease(path, lost[0], started=True)
    return result


def _lease_lost(path):
    try:
        record = read_record(path)
    except (IOError, OSError, ValueError) as exc:
        return "its state record cannot be read: %s" % exc
    return lease_lost(record, lease_renewed_at(path), time.time())


def _refuse_lost_lease(path, reason, started):
    record = _wait_for_outcome(path)
    outcome = record.get("outcome") if record else None
    raise BackupError(
        "The copy %s: the backup's lease ended (%s). The safety stop %s; a copy taken under this label is "
        "not usable." % ("was stopped" if started else "did not start", reason,
                         "ended the backup (outcome %s)" % outcome if outcome not in (None, RUNNING)
                         else "ends the backup"),
        "Take a new backup. When the controller was killed or cut off, nothing else is needed: pg_backup_info "
        "reports the outcome. Otherwise give heartbeat_timeout or max_duration more room.",
        lease_lost=True, state_record=record)


def _wait_for_outcome(path):
    """The record once the watchdog recorded what it did, or as it is after OUTCOME_WAIT seconds."""
    give_up = time.time() + OUTCOME_WAIT
    while True:
        try:
            record = read_record(path)
        except (IOError, OSError, ValueError):
            return None
        if record is None or record.get("outcome") != RUNNING or time.time() >= give_up:
            return record
        time.sleep(0.5)


def terminate_children(grace=5.0):
    """SIGTERM every descendant of this process, then SIGKILL those still there after ``grace`` seconds."""
    pids = descendants(os.getpid())
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    give_up = time.time() + grace
    while time.time() < give_up and any(pid in descendants(os.getpid()) for pid in pids):
        time.sleep(0.1)
    for pid in descendants(os.getpid()):
        _signal(pid, signal.SIGKILL)


def descendants(root):
    """PIDs of every process below ``root``, read from /proc."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as handle:
                # The command name may hold spaces and parentheses: the fields follow the last ')'.
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (IOError, OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except OSError:
        pass
