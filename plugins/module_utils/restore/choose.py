# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 1, choose: which backup (a backup directory, or the newest complete one of a cluster under dest).

Newest by start LSN (backup_order.py), never by a date in backup.json; the
next phase proves the choice against the copy itself. A newest backup that
fails its proof is refused, not passed over for an older one: a backup.json
that disagrees with its copy means something changed the destination, and
restoring older data without a word could lose the very changes the restore
is meant to bring back; a person decides, and names the backup to restore.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_order import newest_first
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import (
    COMPLETE, RECORD_FILE, read_record, scan_backups)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.recovery_target import check_target


def latest_complete(records, system_identifier=None):
    """The label of the newest complete backup among ``records`` (label -> backup.json), of one cluster.

    Without ``system_identifier`` the complete backups must all be of one
    cluster; otherwise that is refused, as taking another cluster's backup
    would be.
    """
    complete = {label: r for label, r in records.items() if r and r.get("status") == COMPLETE}
    if system_identifier:
        complete = {label: r for label, r in complete.items()
                    if str(r.get("system_identifier") or "") == str(system_identifier)}
    else:
        clusters = sorted(set(str(r.get("system_identifier")) for r in complete.values()))
        if len(clusters) > 1:
            raise BackupError("The destination holds complete backups of %d clusters (system identifiers %s)."
                              % (len(clusters), ", ".join(clusters)),
                              "Set system_identifier to the cluster to restore, or name the backup directory.")
    if not complete:
        raise BackupError("There is no complete backup%s in the destination." % (
            " of the cluster with system identifier %s" % system_identifier if system_identifier else ""),
            "Check dest and system_identifier (backup.json of each backup names its cluster), or name a backup "
            "directory.")
    return newest_first(complete)[0]


def choose_backup(backup_dir=None, dest=None, system_identifier=None, allow_incomplete=False):
    """(backup directory, its backup.json) to restore; refuses a backup that is not complete."""
    if bool(backup_dir) == bool(dest):
        raise BackupError("Give either backup_dir or dest, not both and not neither.",
                          "backup_dir restores that backup; dest restores the newest complete backup under it.")
    if dest:
        backup_dir = os.path.join(dest, latest_complete(scan_backups(dest), system_identifier))
    record = read_record(backup_dir)
    if record is None:
        raise BackupError("%s holds no readable %s." % (backup_dir, RECORD_FILE),
                          "Name a backup directory this collection wrote (<dest>/<label>).")
    if record.get("status") != COMPLETE and not allow_incomplete:
        raise BackupError("The backup %s is not complete (status %s: %s)." % (
            backup_dir, record.get("status"), record.get("error") or "no reason recorded"),
            "Restore a complete backup. Only to salvage data, set allow_incomplete: true; such a restore may "
            "not reach consistency.")
    if system_identifier and str(record.get("system_identifier") or "") != str(system_identifier):
        raise BackupError("The backup %s is of the cluster %s, not %s." % (
            backup_dir, record.get("system_identifier"), system_identifier),
            "Name a backup of the cluster to restore, or leave system_identifier out.")
    return backup_dir, record


def run(job):
    """The recovery target options are checked before anything is read; the drill hands its backup as ``record``."""
    p = job.p
    check_target(p)
    if p.get("record") is not None:
        job.backup_dir, job.record = p["backup_dir"], p["record"]
    else:
        job.backup_dir, job.record = choose_backup(p.get("backup_dir"), p.get("dest"), p.get("system_identifier"),
                                                   p.get("allow_incomplete"))
    job.result.update(backup_dir=job.backup_dir, label=job.record.get("label"), data_directory=job.data,
                      system_identifier=job.record.get("system_identifier"), target=p.get("target") or "immediate")
