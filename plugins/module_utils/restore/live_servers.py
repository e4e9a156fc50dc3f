# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The paths every running PostgreSQL server on this host uses, and whether a restore target touches one.

A restore must never rename, remove or write a path a running server uses,
not even with ``force``: its data directory, the target of its pg_wal link,
and each of its tablespaces. The target's own postmaster.pid tells only of a
server running on the target itself; a restore beside production is
targeted at paths of its own, where a tablespace or WAL directory of the
live server may still lie. So the servers are found from /proc: every
postgres process runs in its data directory (PostgreSQL chdirs there), and
that directory's pg_wal and pg_tblspc links name the rest.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.server import postmaster_pid

PROC = "/proc"
PROGRAMS = ("postgres", "postmaster")
MAPPING_HINT = " (tablespace_mapping: oid: path)"


def relation(target, used):
    """How the path ``target`` meets the path ``used``: 'is', 'lies inside', 'holds', or None. Both are absolute.

    Pure: compared as given (the caller resolves links on both sides).
    """
    target, used = os.path.normpath(target), os.path.normpath(used)
    if target == used:
        return "is"
    if target.startswith(used.rstrip("/") + "/"):
        return "lies inside"
    if used.startswith(target.rstrip("/") + "/"):
        return "holds"
    return None


def first_conflict(target, servers):
    """(server, what, path, relation) of the first live path ``target`` meets, or None.

    ``servers``: dicts with pid, data_directory and paths ([(what, real path)]).
    """
    real = os.path.realpath(target)
    for server in servers:
        for what, path in server["paths"]:
            how = relation(real, path)
            if how:
                return server, what, path, how
    return None


def _read_link(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


def _program(pid):
    """The program a process runs, by its executable, else by its name (comm)."""
    exe = _read_link(os.path.join(PROC, pid, "exe"))
    if exe:
        return os.path.basename(exe.split(" (deleted)")[0])
    try:
        with open(os.path.join(PROC, pid, "comm")) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def server_paths(data_directory):
    """[(what, real path)] a server on ``data_directory`` uses: the directory, its pg_wal, its tablespaces."""
    paths = [("data directory", os.path.realpath(data_directory)),
             ("pg_wal", os.path.realpath(os.path.join(data_directory, "pg_wal")))]
    pg_tblspc = os.path.join(data_directory, "pg_tblspc")
    try:
        names = sorted(os.listdir(pg_tblspc))
    except OSError:
        names = []
    for oid in names:
        paths.append(("tablespace %s" % oid, os.path.realpath(os.path.join(pg_tblspc, oid))))
    return paths


def live_servers(proc=PROC):
    """Every PostgreSQL server running on this host: [{pid, data_directory, paths}], one per data directory.

    The pid is the postmaster's: the one postmaster.pid names when it is one
    of the server's processes (the file is the server user's to write, so it
    is believed only then), else the lowest of them. Processes this user may
    not inspect are skipped: the restore runs as root, which may inspect all.
    """
    by_dir = {}
    for pid in sorted((p for p in os.listdir(proc) if p.isdigit()), key=int):
        if _program(pid) not in PROGRAMS:
            continue
        cwd = _read_link(os.path.join(proc, pid, "cwd"))
        if cwd and os.path.isfile(os.path.join(cwd, "PG_VERSION")):
            by_dir.setdefault(cwd, []).append(int(pid))
    return [{"pid": postmaster_of(data, pids), "data_directory": data, "paths": server_paths(data)}
            for data, pids in sorted(by_dir.items())]


def postmaster_of(data, pids):
    named = postmaster_pid(data)
    return named if named in pids else min(pids)


def check_not_live(target, what, servers):
    """Refuse ``target`` (the ``what`` of the restore) when it is, lies inside or holds a path a live server uses."""
    found = first_conflict(target, servers)
    if found:
        server, used, path, how = found
        raise BackupError(
            "The %s %s %s the %s %s of the running server PID %s (data directory %s): a restore never renames, "
            "removes or writes a path a running server uses, not even with force." % (
                what, target, how, used, path, server["pid"], server["data_directory"]),
            "Give the %s a path of its own, outside every running server's data directory, WAL and tablespaces%s; "
            "force cannot help here." % (what, MAPPING_HINT if what.startswith("tablespace") else ""),
            live_server={"pid": server["pid"], "data_directory": server["data_directory"]}, live_path=path)
