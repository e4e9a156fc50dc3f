# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 4, lay out: what force sets aside goes aside, then the backup becomes a data directory again.

Every target was checked before (targets.py); the tablespaces go where that
phase decided.

restore/layout.py does the copying and extracting: plain or tar, gzip or
zstd, the tablespaces at their targets, pg_wal a real directory, optionally
elsewhere and linked as initdb --waldir does.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import EMPTY_DIRS
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import TABLESPACE_MAP
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.check_targets import set_aside
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.tools import read_text
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.layout import (
    lay_out, real_directory, relink_tablespaces, rewrite_tablespace_map, write_new)


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
    job.result.update(set_aside=aside, changed=True)
    for key, path in job.to_set_aside:
        aside[key] = set_aside(path, job.stamp)
    if not os.path.isdir(data):
        os.makedirs(data, 0o700)
    if job.tablespaces_dir and not os.path.isdir(job.tablespaces_dir):
        os.mkdir(job.tablespaces_dir, 0o700)
    job.placed = sorted(job.tablespace_targets.values())
    tblspcs = lay_out(job.backup_dir, data, lambda oid: job.tablespace_targets[oid])
    # A copy of a data directory may link these to the live server's (pg_wal of initdb --waldir): each
    # becomes a directory of the copy's own, and only then may pg_wal move to waldir.
    for name in EMPTY_DIRS:
        real_directory(os.path.join(data, name))
    job.result["waldir"] = place_wal(data, p.get("waldir"))
    relink_tablespaces(data, tblspcs)
    map_file = os.path.join(data, TABLESPACE_MAP)
    if os.path.lexists(map_file):
        text = read_text(map_file) or ""
        os.unlink(map_file)
        write_new(map_file, rewrite_tablespace_map(text, tblspcs))
    job.tablespaces = tblspcs
    job.result["tablespaces"] = dict(sorted(tblspcs.items()))
