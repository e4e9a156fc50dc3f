# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Retention: which of a cluster's complete backups under dest go, and their removal (pg_backup_retention).

Newest is by start LSN, and only a backup whose copy agrees with its
backup.json counts (backup_order.py): a planted or edited record can neither
push a real backup out of the newest ``keep`` nor get one removed.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import shutil

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import LABEL_FILE
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import copy_format
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_order import (
    copy_label_files, label_disagreement, newest_first, record_lsn)
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import COMPLETE, RECORD_FILE, scan_backups
from ansible_collections.pgexclusive.backup.plugins.module_utils.durable import fsync_path
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def same_cluster(record, cluster):
    """True when backup.json names ``cluster``: its system identifier, and data directory and host when given.

    A record without a system identifier (written before it was recorded) is
    nobody's: it is never taken for this cluster's.
    """
    if not record.get("system_identifier") or str(record["system_identifier"]) != str(cluster["system_identifier"]):
        return False
    if cluster.get("data_directory") and os.path.normpath(record.get("data_directory") or "") != os.path.normpath(
            cluster["data_directory"]):
        return False
    return not cluster.get("host") or record.get("host") == cluster["host"]


def retention_plan(records, keep, current, cluster, disagreement=lambda label: None):
    """Which labels to remove, and why the others stay.

    ``records`` maps label -> backup.json content (None: unreadable). Only
    complete backups of ``cluster`` (see same_cluster) whose copy agrees with
    the record (``disagreement(label)`` None) are candidates; all but the
    newest ``keep`` of them by start LSN go, never ``current``. Failed or
    unreadable backups are left alone (reported, not removed: someone may be
    looking at them), as are other clusters', unidentified ones and those
    whose copy disagrees (``unproved``). ``keep`` 0 keeps everything; at least
    1 otherwise, so the newest complete backup always stays.
    """
    if keep < 0:
        raise BackupError("keep is %d; it must be 0 (keep everything) or more." % keep,
                          "Set keep to the number of complete backups of this cluster to keep.")
    plan = dict(removed=[], kept=[], failed_backups=[], other_clusters=[], unidentified=[], unproved=[])
    ours = {}
    for label, record in sorted(records.items()):
        if not record or record.get("status") != COMPLETE:
            plan["failed_backups"].append(label)
        elif not record.get("system_identifier"):
            plan["unidentified"].append(label)
        elif not same_cluster(record, cluster):
            plan["other_clusters"].append(label)
        elif disagreement(label):
            plan["unproved"].append(label)
        else:
            ours[label] = record
    for position, label in enumerate(newest_first(ours)):
        remove = keep > 0 and position >= keep and label != current
        plan["removed" if remove else "kept"].append(label)
    plan["removed"].sort()
    plan["kept"].sort()
    return plan


def copy_disagreement(backup_dir, record, newest_lsn=None):
    """How the backup's copy disagrees with its backup.json, or None (backup_order.label_disagreement).

    ``newest_lsn`` is the start of the backup this run just took from the live
    server: no real backup of the cluster starts later. A tar copy's
    backup_label is the last member of base.tar, so reading it would read
    every archive under dest on every run; such a copy counts by its record
    and that bound, and the restore proves whichever copy it restores.
    """
    lsn = record_lsn(record)
    if newest_lsn is not None and lsn is not None and lsn > newest_lsn:
        return "backup.json says the backup starts at %s, after the backup just taken" % record.get("start_lsn")
    if copy_format(backup_dir) == "tar":
        return None
    try:
        label = copy_label_files(backup_dir).get(LABEL_FILE)
    except BackupError as exc:
        return exc.msg
    return label_disagreement(record, label)


def retention_argument_spec():
    return dict(
        dest=dict(type="path", required=True),
        keep=dict(type="int", required=True),
        current=dict(type="str", required=True),
        system_identifier=dict(type="str", required=True),
        data_directory=dict(type="path"),
        host=dict(type="str"),
    )


def apply_retention(params, check_mode):
    """pg_backup_retention: remove this cluster's complete backups beyond the newest ``keep``."""
    try:
        records = scan_backups(params["dest"])
    except (IOError, OSError) as exc:
        raise BackupError("Cannot read the backups in %s: %s." % (params["dest"], exc.strerror or exc),
                          "Run as a user who may read the destination (become: true).")
    newest_lsn = record_lsn(records.get(params["current"]))
    plan = retention_plan(records, params["keep"], params["current"], params,
                          lambda label: copy_disagreement(os.path.join(params["dest"], label), records[label], newest_lsn))
    if not check_mode:
        for done, label in enumerate(plan["removed"]):
            _remove_backup(params["dest"], label, plan["removed"][:done])
    return dict(plan, changed=bool(plan["removed"]))


def _remove_backup(dest, label, removed):
    """backup.json goes first: a backup half removed must never still claim to be complete."""
    path = os.path.join(dest, label)
    try:
        os.unlink(os.path.join(path, RECORD_FILE))
        fsync_path(path)
        shutil.rmtree(path)
    except (IOError, OSError) as exc:
        raise BackupError(
            "Retention could not remove the backup %s: %s." % (path, exc),
            "Its backup.json is gone if the removal started, so nothing takes it for a complete backup; "
            "remove the rest by hand once the cause (permissions, a busy mount) is fixed.", removed=removed)
