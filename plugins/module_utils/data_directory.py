# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a data directory's files say, read on the database host without the server.

The dangerous moment of an exclusive backup is a server that stopped while
backup_label was in place: on the primary the label may block the next
start, in a restored copy or a standby it is what makes recovery correct.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import struct
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    LABEL_FILE, TABLESPACE_MAP, describe_backup, parse_backup_label, parse_tablespace_map, start_time_epoch, tablespace)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import infer_segment_size, segment_of

SIGNAL_FILES = ("standby.signal", "recovery.signal")
POSTMASTER_PID = "postmaster.pid"


def _read(path):
    with open(path) as handle:
        return handle.read()


def read_postmaster_pid(path):
    """The PID on the first line of the data directory's postmaster.pid; None when there is no such file.

    ValueError when the first line is not a PID: the postmaster is writing the
    file this moment, or it is not PostgreSQL's. Other read errors are raised.
    """
    try:
        with open(os.path.join(path, POSTMASTER_PID)) as handle:
            first = handle.readline().strip()
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return int(first)


def read_data_directory(path):
    """The files' facts of the data directory at ``path`` (a dict, see pg_backup_info's RETURN)."""
    if not os.path.isfile(os.path.join(path, "PG_VERSION")):
        raise BackupError(
            "%s is not a PostgreSQL data directory (it has no PG_VERSION), or this user cannot read it." % path,
            "Give the data directory's path, and run the task as root or as the server's OS user (become: true).")

    def here(name):
        return os.path.join(path, name)

    try:
        facts = {
            "path": path,
            "pg_version": _read(here("PG_VERSION")).strip(),
            "postmaster_pid": _postmaster_pid_fact(path),
            "backup_label": os.path.exists(here(LABEL_FILE)),
            "tablespace_map": os.path.exists(here(TABLESPACE_MAP)),
            "backup_label_old": os.path.exists(here(LABEL_FILE + ".old")),
            "signal_files": [name for name in SIGNAL_FILES if os.path.exists(here(name))],
            "tablespaces": tablespace_links(path),
        }
        backup = None
        if facts["backup_label"]:
            backup = parse_backup_label(_read(here(LABEL_FILE)))
            backup["tablespace_map"] = parse_tablespace_map(
                _read(here(TABLESPACE_MAP)) if facts["tablespace_map"] else "")
            facts["needed_wal_files"] = _needed_wal_files(backup)
            facts["missing_wal_files"] = [name for name in facts["needed_wal_files"]
                                          if not os.path.exists(os.path.join(path, "pg_wal", name))]
    except (IOError, OSError) as exc:
        raise BackupError("Could not read the data directory %s: %s" % (path, exc),
                          "Run the task as root or as the server's OS user (become: true).")
    return facts, backup


def _postmaster_pid_fact(path):
    try:
        return read_postmaster_pid(path)
    except ValueError:
        # Taken for "no server", it would let pg_clear_backup_label touch a starting server's files.
        raise BackupError(
            "%s does not start with a PID, so whether a server runs there cannot be told. Nothing was changed."
            % os.path.join(path, POSTMASTER_PID),
            "A server that is starting writes it now: wait and retry. Otherwise check the file by hand.")


def system_identifier(path):
    """The cluster's system identifier: the first field of global/pg_control, in the host's byte order.

    It names the cluster's state records (safety_stop/records.py) also when the server is down.
    """
    try:
        with open(os.path.join(path, "global", "pg_control"), "rb") as handle:
            return pg_control_identifier(handle.read(8))
    except (IOError, OSError, struct.error):
        return None


def pg_control_identifier(head):
    """The system identifier in the first 8 bytes of pg_control, as a decimal string (as backup.json records it)."""
    return str(struct.unpack("=Q", head[:8])[0])


def tablespace_links(path):
    """The tablespaces linked from ``path``/pg_tblspc, each with its link's text as ``location``.

    An in-place tablespace (allow_in_place_tablespaces) is a directory there,
    not a link: it is part of the data directory and is not listed.
    """
    pg_tblspc = os.path.join(path, "pg_tblspc")
    if not os.path.isdir(pg_tblspc):
        return []
    return [tablespace(name, os.readlink(os.path.join(pg_tblspc, name)))
            for name in sorted(os.listdir(pg_tblspc))
            if name.isdigit() and os.path.islink(os.path.join(pg_tblspc, name))]


def _needed_wal_files(backup):
    """The segments holding the backup's redo start and its checkpoint record."""
    start_file = backup.get("start_wal_file")
    size = infer_segment_size(backup.get("start_lsn"), start_file) if start_file else None
    if size is None or not backup.get("checkpoint_lsn"):
        return [start_file] if start_file else []
    checkpoint_file = segment_of(backup["timeline"], backup["checkpoint_lsn"], size)
    return sorted(set([start_file, checkpoint_file]))


def age_offline(backup, now=None):
    """Seconds since the backup started, by this host's clock; None when the zone is unknown."""
    started = start_time_epoch(backup.get("start_time"))
    if started is None:
        return None
    return round((now if now is not None else time.time()) - started, 3)


def advice(facts, backup, server_running):
    """What the files mean and what to do, in words."""
    if backup is None:
        if server_running:
            return "No backup_label: no exclusive backup is in progress."
        return "No backup_label: no exclusive backup was in progress; the server starts normally."
    if facts["signal_files"]:
        return ("backup_label is present and %s marks this directory as a restored copy or a standby: the label "
                "tells recovery where to begin and where the backup ends. Never remove it; start the server "
                "and let recovery consume it." % " and ".join(facts["signal_files"]))
    if server_running:
        return ("The exclusive backup %s is in progress. If the server stops before pg_stop_backup runs, "
                "backup_label stays behind and its next start replays WAL from the backup's checkpoint."
                % describe_backup(backup))
    text = ("The server stopped during the exclusive backup %s and left backup_label behind; that backup is void "
            "(take a new one). The next start replays WAL from the backup's checkpoint %s, which needs %s in pg_wal. "
            % (describe_backup(backup), backup.get("checkpoint_lsn"), ", ".join(facts["needed_wal_files"])))
    if facts["postmaster_pid"] is not None:
        text += ("postmaster.pid is present (pid %d): make sure no server process is still running before "
                 "changing anything. " % facts["postmaster_pid"])
    if facts["missing_wal_files"]:
        return text + ("%s is missing, so the start will fail ('could not locate required checkpoint record'). "
                       "Only because this is the primary itself and not a restored copy or a standby: move "
                       "backup_label (and tablespace_map) aside, e.g. to backup_label.old, then start the server."
                       % ", ".join(facts["missing_wal_files"]))
    return text + "That WAL is present, so the server should start and then discard backup_label on its own."


def postmaster_running(facts):
    """True when postmaster.pid names a live process. A crash leaves the file behind with a dead PID."""
    pid = facts["postmaster_pid"]
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    # A killed postmaster nobody has reaped yet still answers kill(0): a zombie runs nothing.
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (IOError, OSError, IndexError):
        return True
