# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""pg_backup_catalog: every backup under a dest, per cluster, restorable or not and why. Read only.

Decide, then act: catalog/read.py reads each directory of dest (beneath dest,
no link followed, nothing written), catalog/decide.py says what it means,
catalog/table.py shows it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.catalog.decide import clusters, judge, row, utc
from ansible_collections.pgexclusive.backup.plugins.module_utils.catalog.read import entries, observe
from ansible_collections.pgexclusive.backup.plugins.module_utils.catalog.table import render
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def catalog_argument_spec():
    return dict(
        dest=dict(type="path", required=True),
        archive_dir=dict(type="path", aliases=["wal_archive_dir"]),
        archive_dirs=dict(type="dict", default={}),
        verify_files=dict(type="bool", default=False),
    )


def label_of(name):
    """A directory name as text that JSON carries: a byte that is no UTF-8 is shown as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def catalog(params, check_mode, now=None):
    """pg_backup_catalog: the same in check mode, since it only reads."""
    dest = params["dest"]
    if not os.path.isdir(dest):
        raise BackupError("The destination %s is not a directory: there are no backups to list." % dest,
                          "Give the directory that holds the backups (the role's exclusive_backup_dest) on the host "
                          "that holds it (the database host, or the repository host).")
    # dest itself is the user's: followed once here, and everything beneath it is opened without following links.
    real = os.path.realpath(dest)
    archive_dir = params.get("archive_dir")
    archive_dirs = dict((str(sid), os.path.expanduser(str(path))) for sid, path in (params.get("archive_dirs") or {}).items())
    now = time.time() if now is None else now
    rows, records = [], {}
    for name, _kind in entries(real):
        seen = observe(real, name, lambda record: archive_dirs.get(record.get("system_identifier")) or archive_dir,
                       params.get("verify_files"))
        label = label_of(name)
        rows.append(row(label, os.path.join(dest, label), seen, judge(seen)))
        records[label] = seen.get("record") or {}
    grouped = clusters(rows, records, now)
    restorable = sum(1 for r in rows if r["restorable"])
    summary = {"dest": dest, "archive_dir": archive_dir, "checked_at": utc(now), "backups": len(rows),
               "restorable": restorable, "unrestorable": len(rows) - restorable, "clusters": len(grouped),
               "wal_checked": sum(1 for r in rows if r["wal_checked"]), "files_checked": bool(params.get("verify_files"))}
    return dict(changed=False, clusters=grouped, backups=rows, summary=summary,
                table=render(dest, grouped, rows, summary))
