# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Names of what a backup directory ``<dest>/<label>/`` holds.

    always:   backup.json          the record, written last (RECORD_FILE)
              backup_manifest      PostgreSQL's manifest format (MANIFEST_FILE): tar, rsync, copy
                                   into this directory (not to a repository)
              backup_label.restorable  the label a restore uses (RESTORABLE_LABEL_FILE)

    tar:      base.tar[.gz|.zst]   the data directory
              <oid>.tar[.gz|.zst]  one per tablespace (as pg_basebackup names them)
              pg_wal.tar[.gz|.zst] the WAL (include_wal)
              These are the names pg_verifybackup 18 reads a tar-format backup by.
    rsync,
    copy:     data/                the data directory; pg_tblspc/<oid> stay symbolic
                                   links, pointing at ../../tablespaces/<oid>
              tablespaces/<oid>/   the contents of each tablespace
    command:  whatever the user's command writes (a snapshot elsewhere, usually)

The copy writes these names and the record, WAL, manifest and restore check
read them: they live here, below all of those modules, so that none of them
imports the copy to learn where things are.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

COMPRESSIONS = ("none", "gzip", "zstd")
TAR_SUFFIX = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
# zstd's level and threads are given, never left to the build or the host's ZSTD_CLEVEL/ZSTD_NBTHREADS: level 1
# writes these files as small as the default level 3 does (benchmarks/zstd_levels.py), at about twice the speed.
ZSTD_LEVEL = 1


def zstd_program(threads=1):
    return "--use-compress-program=zstd -%d -T%d" % (ZSTD_LEVEL, threads)


TAR_COMPRESS_ARG = {"none": [], "gzip": ["--gzip"], "zstd": [zstd_program()]}
DATA_SUBDIR = "data"
TABLESPACES_SUBDIR = "tablespaces"
STAGING_SUBDIR = ".staging"
RESTORABLE_LABEL_FILE = "backup_label.restorable"
RECORD_FILE = "backup.json"
MANIFEST_FILE = "backup_manifest"
# Files only a backup directory holds: a data directory holding one, or lying in a directory that does, is a copy.
BACKUP_FILES = (RECORD_FILE, MANIFEST_FILE, RESTORABLE_LABEL_FILE)


def tar_name(name, compression):
    """'base' + compression -> 'base.tar.gz' etc."""
    if compression not in COMPRESSIONS:
        raise BackupError("Unknown compression %r." % compression, "Use one of %s." % ", ".join(COMPRESSIONS))
    return name + TAR_SUFFIX[compression]


def tar_archive(name):
    """('base' | '<oid>' | 'pg_wal', compression) for a file name of the tar layout; None for any other name."""
    for compression, suffix in TAR_SUFFIX.items():
        stem = name[:-len(suffix)] if name.endswith(suffix) else None
        if stem in ("base", "pg_wal") or (stem and stem.isdigit()):
            return stem, compression
    return None


def copy_format(backup_dir):
    """'plain' (data/), 'tar' (base.tar[.gz|.zst]), or None: no copy of the data directory here."""
    if os.path.isdir(os.path.join(backup_dir, DATA_SUBDIR)):
        return "plain"
    names = os.listdir(backup_dir) if os.path.isdir(backup_dir) else []
    return "tar" if any((tar_archive(name) or ("",))[0] == "base" for name in names) else None


def _tar_archives(backup_dir):
    """stem ('base' | '<oid>' | 'pg_wal') -> file name, for the tar layout's archives in ``backup_dir``."""
    names = sorted(os.listdir(backup_dir)) if os.path.isdir(backup_dir) else []
    return {found[0]: name for name, found in ((name, tar_archive(name)) for name in names) if found}


def base_tar(backup_dir):
    """The file name of the data directory's archive (base.tar[.gz|.zst]), or None."""
    return _tar_archives(backup_dir).get("base")


def wal_tar(backup_dir):
    """The path of the WAL archive (pg_wal.tar[.gz|.zst], include_wal), or None."""
    name = _tar_archives(backup_dir).get("pg_wal")
    return os.path.join(backup_dir, name) if name else None


def backup_tablespaces(backup_dir):
    """oid -> the tablespace's copy in the backup: a directory (plain) or an archive (tar)."""
    if copy_format(backup_dir) == "plain":
        plain = os.path.join(backup_dir, TABLESPACES_SUBDIR)
        return {oid: os.path.join(plain, oid) for oid in os.listdir(plain)} if os.path.isdir(plain) else {}
    return {stem: os.path.join(backup_dir, name) for stem, name in _tar_archives(backup_dir).items() if stem.isdigit()}
