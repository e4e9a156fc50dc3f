# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 4, lay out: what force sets aside goes aside, then the backup becomes a data directory again.

restore_layout.py does the copying and extracting: plain or tar, gzip or
zstd, the tablespaces at their targets, pg_wal a real directory, optionally
elsewhere and linked as initdb --waldir does.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import EMPTY_DIRS
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import TABLESPACE_MAP
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.targets import (
    check_target_dir, set_aside, tablespace_targets)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.tools import read_text
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_layout import (
    lay_out, real_directory, relink_tablespaces, rewrite_tablespace_map, tablespaces_without_copy, write_new)


def place_wal(data, waldir):
    """pg_wal is a real directory (lay_out); with waldir, its content moves there and pg_wal links to it."""
    pg_wal = os.path.join(data, "pg_wal")
    if waldir:
        if not os.path.isdir(waldir):
            os.makedirs(waldir, 0o700)
        for name in os.listdir(pg_wal):
            os.rename(os.path.join(pg_wal, name), os.path.join(waldir, name))
        os.rmdir(pg_wal)
        os.symlink(waldir, pg_wal)
    status = os.path.join(pg_wal, "archive_status")
    if not os.path.isdir(status):
        os.mkdir(status, 0o700)
    return waldir or pg_wal


def run(job):
    p, data = job.p, job.data
    aside = {}
    for name, path in job.to_set_aside:
        aside[name] = set_aside(path, job.stamp)
    job.result.update(set_aside=aside, changed=True)
    if not os.path.isdir(data):
        os.makedirs(data, 0o700)
    targets = {}

    def tablespace_dir(oid):
        if p.get("tablespaces_under"):
            targets[oid] = os.path.join(p["tablespaces_under"], oid)
        elif not targets:
            # base.tar (or data/) is laid out before any tablespace: its tablespace_map says where they were.
            text = read_text(os.path.join(data, TABLESPACE_MAP)) or ""
            targets.update(tablespace_targets(text, p.get("tablespace_mapping")))
        path = targets.get(oid)
        if not path:
            raise BackupError("The backup holds tablespace %s but its tablespace_map does not name it." % oid,
                              "Give its new path in tablespace_mapping (oid: path).")
        if check_target_dir(path, p.get("force"), "tablespace directory"):
            aside["tablespace %s" % oid] = set_aside(path, job.stamp)
        job.placed.append(path)
        return path

    tblspcs = lay_out(job.backup_dir, data, tablespace_dir)
    # A copy of a data directory may link these to the live server's (pg_wal of initdb --waldir): each
    # becomes a directory of the copy's own, and only then may pg_wal move to waldir.
    for name in EMPTY_DIRS:
        real_directory(os.path.join(data, name))
    job.result["waldir"] = place_wal(data, p.get("waldir"))
    relink_tablespaces(data, tblspcs)
    map_file = os.path.join(data, TABLESPACE_MAP)
    if os.path.lexists(map_file):
        text = read_text(map_file) or ""
        missing = tablespaces_without_copy(text, tblspcs)
        if missing:
            raise BackupError(
                "The backup holds no copy of tablespace %s (%s): it cannot be restored on its own."
                % (missing[0]["oid"], missing[0]["path"]),
                "Restore a backup taken with the tar, rsync or copy method to a local destination, "
                "which copy every tablespace.")
        os.unlink(map_file)
        write_new(map_file, rewrite_tablespace_map(text, tblspcs))
    job.tablespaces = tblspcs
    job.result["tablespaces"] = dict(sorted(tblspcs.items()))
