# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 3, check targets: every path the restore will write is free, or ``force`` may set it aside.

The targets are the data directory, waldir and one directory per tablespace:
the user's (tablespace_mapping, by oid or by the old path), else a fresh
``<data directory>.tablespaces/<oid>``; never the path the backup's
tablespace_map names, which is the source cluster's (the live server's, on
the same host) or whatever a writer of the backup put there. No target may
be, lie inside or hold a path a running server on this host uses
(restore/live_servers.py), with or without force. Nothing is changed here: the
set-aside is the first act of the lay-out, so check mode runs this phase as
it is. The owner of the restored files and pg_ctl (when the restored server is
to start) are found here too.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import backup_tablespaces
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import TABLESPACE_MAP, parse_tablespace_map
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.live_servers import check_not_live, live_servers
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.tools import owner_entry, pg_ctl_in
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.layout import tablespaces_without_copy
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.server import running_postmaster


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


TABLESPACES_SUFFIX = ".tablespaces"


def default_tablespaces_dir(data):
    """Where the tablespaces go without a mapping: beside the data directory, as <data>.fetch and .restore.log."""
    return data.rstrip("/") + TABLESPACES_SUFFIX


def tablespace_targets(map_text, oids, mapping, default_dir):
    """oid -> where each tablespace of the backup (``oids``) goes.

    ``mapping`` by oid, or by the old path tablespace_map gives it (a lookup
    key only), else ``default_dir``/<oid>. The old path itself is never a target.
    """
    mapping = dict((str(k), v) for k, v in (mapping or {}).items())
    old = dict((str(e["oid"]), e["path"]) for e in parse_tablespace_map(map_text))
    return dict((oid, mapping.get(oid) or mapping.get(old.get(oid)) or os.path.join(default_dir, oid)) for oid in oids)


def check_every_copy(map_text, oids):
    missing = tablespaces_without_copy(map_text, oids)
    if missing:
        raise BackupError(
            "The backup holds no copy of tablespace %s (%s): it cannot be restored on its own."
            % (missing[0]["oid"], missing[0]["path"]),
            "Restore a backup taken with the tar, rsync or copy method to a local destination, "
            "which copy every tablespace.")


def run(job):
    p = job.p
    if job.debian:
        job.debian.check_major(job.record)
    job.owner = owner_entry(p.get("owner") or "postgres")
    job.pg_ctl = pg_ctl_in(p.get("bindir")) if p.get("start", True) else None
    map_text = job.label_files.get(TABLESPACE_MAP) or ""
    oids = sorted(backup_tablespaces(job.backup_dir))
    check_every_copy(map_text, oids)
    default_dir = p.get("tablespaces_under") or default_tablespaces_dir(job.data)
    mapping = {} if p.get("tablespaces_under") else p.get("tablespace_mapping")
    job.tablespace_targets = tablespace_targets(map_text, oids, mapping, default_dir)
    if any(os.path.dirname(path) == default_dir for path in job.tablespace_targets.values()):
        job.tablespaces_dir = default_dir
    # (set_aside key, what the messages call it, path)
    places = [("data_directory", "target data directory", job.data)] + (
        [("waldir", "waldir", p["waldir"])] if p.get("waldir") else []) + [
        ("tablespace %s" % oid, "tablespace %s target" % oid, path) for oid, path in sorted(job.tablespace_targets.items())]
    servers = live_servers()
    for _key, what, path in places:
        check_not_live(path, what, servers)
    job.to_set_aside = [(key, path) for key, what, path in places if check_target_dir(path, p.get("force"), what)]
