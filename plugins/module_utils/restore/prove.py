# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 2, prove: the chosen backup is what its record says, and can be restored; nothing is written.

Its copy's own backup_label starts where backup.json says (backup_order.py),
its own global/pg_control names the cluster backup.json and the user name, its
files verify against its backup_manifest (restore/verify_copy.py; a backup without
one is refused unless verify: false, and the result then says it was not
verified), the recovery target does not lie before the backup's end, and the
WAL from the backup's start to its stop is at hand: without it recovery never
becomes consistent.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import LABEL_FILE
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import DATA_SUBDIR
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_order import (
    copy_label_files, disagreement_error, label_disagreement)
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.backup_wal import segments_between
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.tools import find_tool
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.layout import copy_system_identifier
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.recovery_target import (
    before_backup_end_error, target_before_backup_end)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.verify_copy import verify_backup
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import infer_segment_size


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


def check_cluster(backup_dir, record, system_identifier):
    """Refuse a copy whose own pg_control names another cluster than backup.json or the user; returns it."""
    expected = [(str(value), whose) for value, whose in ((record.get("system_identifier"), "its backup.json"),
                                                         (system_identifier, "system_identifier")) if value]
    if not expected:
        return None
    found = copy_system_identifier(backup_dir)
    for value, whose in expected:
        if str(found) != value:
            raise BackupError(
                "The backup %s is a copy of the cluster %s (its own global/pg_control), not of %s, which %s names. "
                "Nothing was restored." % (backup_dir, found, value, whose),
                "Restore a backup of the cluster meant; if this copy is the one wanted, a person must find out why "
                "its record names another cluster before it is restored.", copy_system_identifier=str(found))
    return str(found)


def verification(p, backup_dir):
    """(verified, how): the proof of the copy's files, or why there was none (verify: false)."""
    if not p.get("verify", True):
        return False, {"method": "none", "reason": "verify: false: the files were not checked"}
    return True, verify_backup(backup_dir, find_tool(p.get("bindir"), "pg_verifybackup"), p.get("timeout") or 3600)


def run(job):
    p = job.p
    why = target_before_backup_end(p, job.record)
    if why:
        raise before_backup_end_error(why)
    job.label_files = copy_label_files(job.backup_dir)
    if job.record.get("start_lsn"):
        why = label_disagreement(job.record, job.label_files.get(LABEL_FILE))
        if why:
            raise disagreement_error(job.backup_dir, why)
    check_cluster(job.backup_dir, job.record, p.get("system_identifier"))
    job.result["verified"], job.result["verification"] = verification(p, job.backup_dir)
    check_wal_at_hand(p, job.backup_dir, job.record)
