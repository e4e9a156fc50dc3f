# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 3, check targets: every path the restore will write is free, or ``force`` may set it aside.

Nothing is changed here: the set-aside itself is the first act of the lay-out,
so check mode runs this phase as it is. The owner of the restored files and
pg_ctl (when the restored server is to start) are found here too.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import parse_tablespace_map
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.tools import owner_entry, pg_ctl_in
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_server import running_postmaster


def aside_name(path, stamp):
    return "%s.pgx-aside-%s" % (path.rstrip("/"), stamp)


def check_target_dir(path, force, what="target data directory"):
    """Refuse ``path`` when a postmaster runs there, or when not empty (unless ``force``).

    True when ``force`` is to set it aside (it is not empty), False when it can be written as it is.
    """
    pid = running_postmaster(path)
    if pid:
        raise BackupError("A postmaster (PID %s) runs on the %s %s." % (pid, what, path),
                          "Stop that server first, or restore into another directory; a restore never "
                          "touches a running server's files, not even with force.")
    if not os.path.lexists(path):
        return False
    if not os.path.isdir(path) or os.path.islink(path):
        raise BackupError("The %s %s exists and is not a directory." % (what, path),
                          "Give a directory, or a path that does not exist yet.")
    if not os.listdir(path):
        return False
    if not force:
        raise BackupError("The %s %s is not empty." % (what, path),
                          "Give an empty or new directory, or set force: true to rename it aside "
                          "(<path>.pgx-aside-<time>; nothing is deleted).")
    return True


def set_aside(path, stamp):
    """Rename ``path`` aside (nothing is deleted); returns its new name."""
    aside = aside_name(path, stamp)
    os.rename(path, aside)
    return aside


def tablespace_targets(map_text, mapping):
    """oid -> where each tablespace of tablespace_map goes: ``mapping`` by oid or by old path, else its old path."""
    mapping = dict((str(k), v) for k, v in (mapping or {}).items())
    return dict((str(e["oid"]), mapping.get(str(e["oid"]), mapping.get(e["path"], e["path"])))
                for e in parse_tablespace_map(map_text))


def run(job):
    p = job.p
    if job.debian:
        job.debian.check_major(job.record)
    job.owner = owner_entry(p.get("owner") or "postgres")
    job.pg_ctl = pg_ctl_in(p.get("bindir")) if p.get("start", True) else None
    places = [("data_directory", job.data)]
    if p.get("waldir"):
        places.append(("waldir", p["waldir"]))
    job.to_set_aside = [(name, path) for name, path in places
                        if check_target_dir(path, p.get("force"), name.replace("_", " "))]
