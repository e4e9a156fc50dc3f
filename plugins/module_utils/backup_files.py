# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Which files of a data directory belong in a backup.

The one list of exclusions (PostgreSQL docs, "Backing Up the Data Directory").
backup_label and tablespace_map are NOT excluded: in an exclusive backup they
are the backup's own description and must be in the copy.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import fnmatch

# Directories kept empty in the copy: the server recreates what it needs.
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


def is_excluded(relpath, extra=()):
    """True when ``relpath`` (relative to the data directory, '/'-separated) stays out.

    ``extra`` holds the user's own patterns, matched against the whole
    relative path and against the file name.
    """
    parts = [p for p in relpath.strip("/").split("/") if p not in ("", ".")]
    if not parts:
        return False
    if len(parts) > 1 and parts[0] in EMPTY_DIRS:
        return True
    if len(parts) == 1 and parts[0] in TOP_FILES:
        return True
    for name in parts:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in ANYWHERE):
            return True
    path = "/".join(parts)
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(parts[-1], p) for p in extra)


def tar_exclude_args(extra=()):
    """GNU tar options for ``tar -C <data_directory> ... .`` implementing is_excluded.

    Members are named ./<relpath>, so the anchored patterns start with './'.
    """
    args = ["--anchored"]
    args += ["--exclude=./%s/*" % name for name in EMPTY_DIRS]
    args += ["--exclude=./%s" % name for name in TOP_FILES]
    args += ["--no-anchored"]
    args += ["--exclude=%s" % name for name in ANYWHERE]
    args += ["--exclude=%s" % pattern for pattern in extra]
    return args
