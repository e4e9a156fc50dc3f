# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""backup.json, the WAL a backup needs, and retention: the backup directory's bookkeeping.

Pure functions where possible; the few that touch files take paths.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import shutil

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal import segment_name, segment_number

RECORD_FILE = "backup.json"
RECORD_VERSION = 1
STATUSES = ("complete", "failed")
# The record's keys, in the order they are written (the rest follow sorted).
ORDER = ("format", "label", "status", "error", "host", "server_version", "api", "method", "compression",
         "timeline", "start_lsn", "stop_lsn", "start_wal_file", "stop_wal_file", "checkpoint_lsn",
         "backup_history_file", "start_time", "stop_time", "finished_at", "duration", "bytes", "files", "tablespaces",
         "label_fixed", "wal_included", "manifest", "verify_restore", "restore_hint")


def build_record(facts, status):
    """The backup.json document: the given facts, the status, the format version.

    Keys with value None are dropped so a failed record holds what is known.
    """
    if status not in STATUSES:
        raise BackupError("Unknown backup status %r." % status, "Use complete or failed.")
    record = dict((k, v) for k, v in facts.items() if v is not None)
    record["status"] = status
    record["format"] = RECORD_VERSION
    ordered = dict((k, record[k]) for k in ORDER if k in record)
    for key in sorted(record):
        if key not in ordered:
            ordered[key] = record[key]
    return ordered


def write_record(backup_dir, record):
    path = os.path.join(backup_dir, RECORD_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(record, handle, indent=2)
        handle.write("\n")
    os.rename(tmp, path)
    return path


def read_record(backup_dir):
    try:
        with open(os.path.join(backup_dir, RECORD_FILE)) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


# -- WAL ---------------------------------------------------------------------

def _segment_number(name, segment_size):
    try:
        return segment_number(name, segment_size)
    except ValueError:
        raise BackupError("%r is not a WAL segment name." % (name,), "Expect 24 hexadecimal digits.")


def segments_between(start, stop, segment_size):
    """Every WAL segment name from ``start`` to ``stop`` inclusive (one timeline)."""
    tli, first = _segment_number(start, segment_size)
    stop_tli, last = _segment_number(stop, segment_size)
    if stop_tli != tli:
        raise BackupError(
            "The backup starts on timeline %d and stops on timeline %d." % (tli, stop_tli),
            "A promotion happened during the backup: take a new backup.")
    if last < first:
        raise BackupError("The stop WAL file %s comes before the start WAL file %s." % (stop, start),
                          "Pass the WAL files of one backup.")
    return [segment_name(tli, n, segment_size) for n in range(first, last + 1)]


def include_wal(archive_dir, target_dir, start_wal_file, stop_wal_file, history_file=None):
    """Copy the segments from start to stop (and the history file) out of the archive.

    Fails naming the first missing segment: a backup that claims to be
    self-contained must be.
    """
    first = os.path.join(archive_dir, start_wal_file)
    if not os.path.isfile(first):
        raise BackupError(
            "WAL segment %s is not in the archive %s." % (start_wal_file, archive_dir),
            "include_wal reads the WAL archive the server's archive_command writes (uncompressed): "
            "check exclusive_backup_wal_archive_dir and archiving.")
    segment_size = os.path.getsize(first)
    names = segments_between(start_wal_file, stop_wal_file, segment_size)
    if history_file:
        names.append(history_file)
    if not os.path.isdir(target_dir):
        os.makedirs(target_dir)
    copied = []
    for name in names:
        src = os.path.join(archive_dir, name)
        if not os.path.isfile(src):
            raise BackupError("WAL file %s is not in the archive %s." % (name, archive_dir),
                              "Wait for archiving (pg_stat_archiver) and check archive_command.")
        shutil.copy2(src, os.path.join(target_dir, name))
        copied.append(name)
    return copied


# -- retention ----------------------------------------------------------------

def retention_plan(records, keep, current):
    """Which labels to remove: all complete backups but the newest ``keep``, never ``current``.

    ``records`` maps label -> backup.json content. Failed or unreadable backups
    are left alone (they are reported, not removed: someone may be looking at
    them). ``keep`` 0 keeps everything.
    """
    if keep <= 0:
        return []
    complete = [(r.get("finished_at") or r.get("stop_time") or "", label)
                for label, r in records.items() if r and r.get("status") == "complete"]
    complete.sort(reverse=True)
    kept = [label for _t, label in complete[:keep]]
    return sorted(label for _t, label in complete[keep:] if label != current and label not in kept)


def scan_backups(dest):
    """label -> backup.json for every directory of ``dest`` that holds one."""
    found = {}
    if not os.path.isdir(dest):
        return found
    for name in sorted(os.listdir(dest)):
        path = os.path.join(dest, name)
        if os.path.isdir(path) and not os.path.islink(path) and os.path.isfile(os.path.join(path, RECORD_FILE)):
            found[name] = read_record(path)
    return found
