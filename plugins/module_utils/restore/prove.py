# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 2, prove: the chosen backup can be restored, read before anything is written.

The recovery target does not lie before the backup's end, the copy verifies
(restore_verify.py), and the WAL from the backup's start to its stop is at
hand: without it recovery never becomes consistent.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import DATA_SUBDIR
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_wal import segments_between
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.tools import find_tool
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_target import (
    before_backup_end_error, target_before_backup_end)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_verify import verify_backup
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal import infer_segment_size


def wal_needed(record):
    """The WAL segments from the backup's start to its stop (one timeline), or [] when backup.json lacks them."""
    start, stop_file = record.get("start_wal_file"), record.get("stop_wal_file")
    size = infer_segment_size(record.get("start_lsn"), start) if start else None
    if not (start and stop_file and size):
        return []
    return segments_between(start, stop_file, size)


def missing_wal(needed, places, included=()):
    """The first of ``needed`` in none of the directories ``places`` and not in ``included``, or None."""
    for name in needed:
        if name not in included and not any(os.path.exists(os.path.join(place, name)) for place in places if place):
            return name
    return None


def wal_in_backup(backup_dir, record):
    """The WAL segments the backup holds itself (include_wal): those backup.json lists (in pg_wal.tar or
    data/pg_wal/), and whatever a plain copy's data/pg_wal/ holds; read before anything is laid out."""
    names = set(record.get("wal_included") or [])
    try:
        names.update(os.listdir(os.path.join(backup_dir, DATA_SUBDIR, "pg_wal")))
    except (IOError, OSError):
        pass   # a tar backup, or a plain one without WAL
    return names


def check_wal_at_hand(params, backup_dir, record):
    """Refuse a backup whose WAL up to its stop is neither in the archive directory nor in the backup.

    A custom restore_command fetches from where only it knows, so its WAL is
    left to recovery to find.
    """
    if params.get("restore_command"):
        return
    archive = params.get("wal_archive_dir")
    missing = missing_wal(wal_needed(record), [archive], wal_in_backup(backup_dir, record))
    if missing:
        raise BackupError(
            "The WAL segment %s, which the backup needs up to its stop, is neither in the archive (%s) nor "
            "in the backup. Nothing was restored." % (missing, archive or "none given"),
            "Give the WAL archive that holds it (wal_archive_dir or restore_command), or restore a backup "
            "taken with include_wal.", missing_wal=missing)


def run(job):
    p = job.p
    why = target_before_backup_end(p, job.record)
    if why:
        raise before_backup_end_error(why)
    if p.get("verify", True):
        job.result["verified"] = verify_backup(job.backup_dir, job.record, find_tool(p.get("bindir"), "pg_verifybackup"),
                                               p.get("timeout") or 3600)
    check_wal_at_hand(p, job.backup_dir, job.record)
