# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The controller's half of the lease: a process that renews it for as long as the run lives.

pg_start_backup's action plugin starts it in the worker that ran the start,
forked so that it keeps the task's connection and become: each renewal is
one shell command on the database host (safety_stop_lease.renew_command), not a
module. It checks every second that the ansible-playbook process that
started the backup is still running, identified by PID and start time (a
zombie that its parent has not reaped yet is gone), so a
killed controller stops renewing at once, even while its orphaned workers
(which SIGKILL does not reach) go on. It ends too when the database host
says the lease is ended (stopped, or ended by the watchdog), and once the
lease has run out while renewals failed. It never stops anything itself:
when it stops renewing, the database host's watchdog ends the backup.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import multiprocessing
import os
import threading
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.lease import ENDED, RENEWED

# Why keep() returned.
CONTROLLER_GONE = "controller-gone"
LEASE_ENDED = "lease-ended"
LEASE_RAN_OUT = "lease-ran-out"

CHECK_INTERVAL = 1.0


def controller_pid():
    """The ansible-playbook process that forked this worker; None when it is gone already."""
    parent = multiprocessing.parent_process()
    pid = parent.pid if parent is not None else os.getppid()
    return pid if pid == os.getppid() else None


# States of a process that has ended: a zombie (its parent has not reaped it yet) keeps its PID and start time.
DEAD_STATES = ("Z", "X", "x")


def stat_of(pid):
    """The text of /proc/<pid>/stat, or None when there is no such process (or no /proc)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def stat_fields(stat):
    """(state, start time) from a /proc/<pid>/stat text, or None when it cannot be read as one."""
    # The command name may hold spaces and parentheses: fields follow the last ')'; state is field 3, starttime 22.
    fields = stat.rsplit(")", 1)[1].split() if stat and ")" in stat else []
    return (fields[0], fields[19]) if len(fields) > 19 else None


def start_time(pid):
    """The process's start time from /proc (a reused PID has another), or None where there is no /proc."""
    fields = stat_fields(stat_of(pid))
    return fields[1] if fields else None


def alive_by_stat(stat, started):
    """Is the process that started at ``started`` the one /proc describes, and still running?

    A killed controller is dead whether or not its parent reaped it: a zombie, with the same PID and start
    time, counts as gone, as does a PID now used by another process (another start time).
    """
    fields = stat_fields(stat)
    return fields is not None and fields[1] == started and fields[0] not in DEAD_STATES


class Controller(object):
    def __init__(self, pid):
        self.pid = pid
        self.started = start_time(pid)

    def alive(self):
        if self.started is not None:
            return alive_by_stat(stat_of(self.pid), self.started)
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True


def keep(renew, controller, interval, timeout, clock=time.monotonic, sleep=time.sleep):
    """Renew every ``interval`` seconds while ``controller`` lives; why it stopped (CONTROLLER_GONE, ...).

    ``renew()`` returns RENEWED, ENDED or None (failed). A renewal that hangs
    (a host whose link is down) counts as failed after ``interval``; no
    second one starts while it hangs.
    """
    last = clock()
    call = _Bounded(renew)
    while controller.alive():
        outcome = call(interval)
        if outcome == ENDED:
            return LEASE_ENDED
        if outcome == RENEWED:
            last = clock()
        elif clock() - last >= timeout:
            return LEASE_RAN_OUT
        next_at = clock() + interval
        while clock() < next_at:
            if not controller.alive():
                return CONTROLLER_GONE
            sleep(min(CHECK_INTERVAL, max(0.0, next_at - clock())))
    return CONTROLLER_GONE


class _Bounded(object):
    """Calls a function in a thread and waits for it a bounded time; a hanging call is not repeated."""

    def __init__(self, function):
        self.function = function
        self.thread = None
        self.result = []

    def __call__(self, seconds):
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(seconds)
            return None
        self.result = []
        self.thread = threading.Thread(target=self._run)
        self.thread.daemon = True
        self.thread.start()
        self.thread.join(seconds)
        return self.result[0] if self.result else None

    def _run(self):
        try:
            self.result.append(self.function())
        except Exception:  # noqa: BLE001 - a renewal that raised is a failed renewal
            self.result.append(None)


def spawn(run):
    """Run ``run()`` in a detached grandchild process; its PID.

    The grandchild has a session of its own and its standard streams on
    /dev/null: it must not write into the run's output, nor keep open the
    pipe that ansible-runner or a CI job reads ansible-playbook's output
    from, or they would wait for it.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                try:
                    os.write(write_end, str(os.getpid()).encode("ascii"))
                    os.close(write_end)
                    _detach_stdio()
                    run()
                finally:
                    os._exit(0)
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as handle:
        text = handle.read().decode("ascii")
    if not text.isdigit():
        raise RuntimeError("the lease keeper did not start")
    return int(text)


def _detach_stdio():
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
