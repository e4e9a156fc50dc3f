# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Which files of a data directory belong in a backup.

The one list of exclusions (PostgreSQL docs, "Backing Up the Data Directory"),
rendered here for the Python copy (is_excluded), GNU tar and rsync, so the
three methods leave out exactly the same files. backup_label and
tablespace_map are NOT excluded: in an exclusive backup they are the backup's
own description and must be in the copy.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import fnmatch

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import LABEL_FILE

# Directories that are empty in the copy. The live entries are left out whole,
# not just their contents: pg_wal is usually a symbolic link to another disk
# (initdb --waldir), and a copy that kept the link would let a restore check or
# include_wal write into the live server's WAL. Every copy method puts a new,
# real, empty directory in their place instead (copy.Copier), as pg_basebackup
# does; the server recreates what it needs inside.
EMPTY_DIRS = (
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
)

# Files left out at the top of the data directory.
TOP_FILES = ("postmaster.pid", "postmaster.opts", "backup_label.old")

# Names left out wherever they appear.
ANYWHERE = ("pgsql_tmp*", "pg_internal.init")

# Files every copy method writes itself from its staging area, in place of the live ones: backup_label as read at
# the start (fixed on 15+, backup_label.restorable_label). With staged=True the live ones stay out.
STAGED_FILES = (LABEL_FILE,)


def _top_files(staged):
    return TOP_FILES + (STAGED_FILES if staged else ())


def is_excluded(relpath, extra=(), staged=False):
    """True when ``relpath`` (relative to the data directory, '/'-separated) stays out.

    The EMPTY_DIRS themselves are excluded too: the caller adds empty ones, and
    with ``staged`` its STAGED_FILES.
    ``extra`` holds the user's own patterns, matched against the whole
    relative path and against the file name.
    """
    parts = [p for p in relpath.strip("/").split("/") if p not in ("", ".")]
    if not parts:
        return False
    if parts[0] in EMPTY_DIRS:
        return True
    if len(parts) == 1 and parts[0] in _top_files(staged):
        return True
    for name in parts:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in ANYWHERE):
            return True
    path = "/".join(parts)
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(parts[-1], p) for p in extra)


def tar_exclude_args(extra=(), top=True, staged=False):
    """GNU tar options for ``tar -C <data_directory> ... .`` implementing is_excluded.

    Members are named ./<relpath>, so the anchored patterns start with './'.
    The archive then holds no EMPTY_DIRS at all: add empty directories of
    your own after '.' (copy.tar_data_command does, from its staging area).
    ``top=False`` gives the name patterns only, for a tablespace's directory.
    """
    args = []
    if top:
        args += ["--anchored"] + ["--exclude=./%s" % name for name in EMPTY_DIRS + _top_files(staged)]
    args += ["--no-anchored"] + ["--exclude=%s" % pattern for pattern in ANYWHERE + tuple(extra)]
    return args


def rsync_exclude_args(extra=(), top=True, staged=False):
    """rsync options implementing is_excluded; patterns starting with '/' are anchored at the transfer root.

    As with tar, the EMPTY_DIRS are left out whole: send empty ones separately.
    ``top=False`` gives the name patterns only, for a tablespace's directory.
    """
    args = ["--exclude=/%s" % name for name in EMPTY_DIRS + _top_files(staged)] if top else []
    return args + ["--exclude=%s" % pattern for pattern in ANYWHERE + tuple(extra)]
