# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore_server: the restored server's process, as its OS user: start it as our child, stop it by that child, read its log.

A restore signals only the process it started, by the PID it holds: the
postmaster is this module's child (``postgres -D``, not ``pg_ctl start``,
whose postmaster is pg_ctl's grandchild), so its PID cannot be reused by
another process until we reap it. postmaster.pid is written by the server's
OS user and is never used to choose a PID to signal.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import contextlib
import os
import signal
import socket
import subprocess

from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import POSTMASTER_PID, read_postmaster_pid


def free_port():
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
    finally:
        sock.close()


def as_user(uid, gid):
    """A preexec_fn that runs the child as uid:gid (a no-op when that is who runs already)."""
    def demote():
        if os.geteuid() == uid:
            return
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return demote


@contextlib.contextmanager
def acting_as(owner):
    """Run the block with ``owner``'s effective uid and gid (a stat result: st_uid, st_gid) when running as root.

    Peer authentication names a Unix-socket client by the effective uid it had
    at connect(): a module running as root connects to the restored server as
    its OS user, whose role of the same name peer authentication admits. The
    saved uid stays root, so root is taken back afterwards.
    """
    if os.geteuid() != 0 or owner.st_uid == 0:
        yield
        return
    gid = os.getegid()
    os.setegid(owner.st_gid)
    try:
        os.seteuid(owner.st_uid)
        try:
            yield
        finally:
            os.seteuid(0)
    finally:
        os.setegid(gid)


def owner_can(owner, test_args):
    """True when ``test <test_args>`` succeeds as ``owner`` (a stat result: st_uid, st_gid)."""
    return subprocess.call(["test"] + test_args, preexec_fn=as_user(owner.st_uid, owner.st_gid)) == 0


def postmaster_pid(data):
    """The PID in ``data``'s postmaster.pid; None when there is none or it cannot be read yet."""
    try:
        return read_postmaster_pid(data)
    except (IOError, OSError, ValueError):
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == 1   # EPERM: someone else's process, alive
    return True


def running_postmaster(data):
    """The PID of a postmaster running on ``data``, or None (a postmaster.pid left by a crash is not one)."""
    pid = postmaster_pid(data)
    return pid if pid and alive(pid) else None


def listening(data):
    """(socket directory, port) from postmaster.pid (lines 4 and 5), or (None, None)."""
    try:
        with open(os.path.join(data, POSTMASTER_PID)) as handle:
            lines = handle.read().split("\n")
        sockets = lines[4].strip()
        return (sockets.split(",")[0].strip() or None), int(lines[3].strip())
    except (IOError, OSError, ValueError, IndexError):
        return None, None


# Fast, then immediate shutdown, then SIGKILL of our own child; seconds to wait after each.
STOP_STEPS = ((signal.SIGINT, 60), (signal.SIGQUIT, 10), (signal.SIGKILL, 10))


class Server(object):
    """A postmaster this module started as its child (``proc``, a subprocess.Popen), on ``data``."""

    def __init__(self, proc, data):
        self.proc = proc
        self.data = data

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        """False once the postmaster has exited (and is reaped: from then on, nothing is signalled)."""
        return self.proc.poll() is None

    def stop(self, steps=STOP_STEPS):
        """Stop the server, each step with a bounded wait; True once it is gone (and reaped).

        Popen.send_signal signals only a child not reaped yet, so a PID the
        kernel handed to someone else is never signalled.
        """
        for signum, seconds in steps:
            if not self.running():
                return True
            self.proc.send_signal(signum)
            try:
                self.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                continue
        return not self.running()


def postmaster_as(owner, log):
    """A preexec_fn: the child becomes ``owner`` and only then opens ``log`` for its stdout and stderr.

    Opened as the owner, as pg_ctl -l does, so a link planted at that path
    (the owner can write the directories around it) gives the server nothing
    its user could not write anyway.
    """
    demote = as_user(owner.st_uid, owner.st_gid)

    def child():
        demote()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    return child


def start_postmaster(postgres, data, log, owner, cwd):
    """``postgres -D data`` as ``owner``, in a session of its own, its output appended to ``log``; a Server.

    Raises OSError or subprocess.SubprocessError when it cannot be started;
    how recovery goes is for the caller to watch (it may end in a shutdown).
    """
    with open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen([postgres, "-D", data], stdin=devnull, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, preexec_fn=postmaster_as(owner, log), cwd=cwd,
                                start_new_session=True)
    return Server(proc, data)


def read_log(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return ""


def log_tail(path, lines=30):
    try:
        with open(path) as handle:
            return "\n--- restored server log ---\n" + "".join(handle.readlines()[-lines:])
    except (IOError, OSError):
        return ""
