# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The WAL a backup needs, put into the backup: pg_backup_wal, and the finalize step's first part.

Every file lands inside the backup directory or nowhere: a copy's pg_wal may be
a link to the live server's WAL directory, where old segments would be archived
again.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import shutil
import stat
import subprocess

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import (
    COMPRESSIONS, DATA_SUBDIR, TAR_COMPRESS_ARG, tar_name)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import segment_name, segment_number


def _segment_number(name, segment_size):
    try:
        return segment_number(name, segment_size)
    except ValueError:
        raise BackupError("%r is not a WAL segment name." % (name,), "Expect 24 hexadecimal digits.")


def segments_between(start, stop, segment_size):
    """Every WAL segment name from ``start`` to ``stop`` inclusive (one timeline)."""
    tli, first = _segment_number(start, segment_size)
    stop_tli, last = _segment_number(stop, segment_size)
    if stop_tli != tli:
        raise BackupError(
            "The backup starts on timeline %d and stops on timeline %d." % (tli, stop_tli),
            "A promotion happened during the backup: take a new backup.")
    if last < first:
        raise BackupError("The stop WAL file %s comes before the start WAL file %s." % (stop, start),
                          "Pass the WAL files of one backup.")
    return [segment_name(tli, n, segment_size) for n in range(first, last + 1)]


def include_wal(archive_dir, backup_dir, target_dir, start_wal_file, stop_wal_file, history_file=None):
    """Copy the segments from start to stop (and the history file) out of the archive into ``target_dir``.

    ``target_dir`` lies inside ``backup_dir``, and every file lands there or
    nowhere: a copy's pg_wal may be a link to the live server's WAL directory,
    where old segments would be archived again. Fails naming the first missing
    segment before anything is written: a backup that claims to be
    self-contained must be.
    """
    first = os.path.join(archive_dir, start_wal_file)
    if not os.path.isfile(first):
        raise BackupError(
            "WAL segment %s is not in the archive %s." % (start_wal_file, archive_dir),
            "include_wal reads the WAL archive the server's archive_command writes (uncompressed): "
            "check exclusive_backup_wal_archive_dir and archiving.")
    segment_size = os.path.getsize(first)
    names = segments_between(start_wal_file, stop_wal_file, segment_size)
    if history_file:
        names.append(history_file)
    for name in names:
        if not os.path.isfile(os.path.join(archive_dir, name)):
            raise BackupError("WAL file %s is not in the archive %s." % (name, archive_dir),
                              "Wait for archiving (pg_stat_archiver) and check archive_command.")
    target_fd = open_inside(backup_dir, target_dir)
    try:
        for name in names:
            _copy_into(os.path.join(archive_dir, name), target_fd, name, target_dir)
    finally:
        os.close(target_fd)
    return names


def open_inside(backup_dir, target_dir):
    """A descriptor of ``target_dir``, created (0700) as needed, never through a symbolic link.

    Each component below ``backup_dir`` is opened relative to the one before
    with O_NOFOLLOW, so no link, and no link swapped in meanwhile, can lead
    the writes out of the backup: realpath(target) stays inside
    realpath(backup_dir).
    """
    rel = os.path.relpath(os.path.normpath(target_dir), os.path.normpath(backup_dir))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        raise BackupError("%s is not inside the backup directory %s. Nothing was written." % (target_dir, backup_dir),
                          "Pass a target inside the backup directory.")
    try:
        fd = os.open(os.path.realpath(backup_dir), os.O_RDONLY | os.O_DIRECTORY)
    except (IOError, OSError) as exc:
        raise BackupError("Cannot read the backup directory %s: %s." % (backup_dir, exc.strerror or exc),
                          "Give the directory of a finished copy, <dest>/<label>.")
    path = backup_dir
    try:
        for part in ([] if rel == os.curdir else rel.split(os.sep)):
            path = os.path.join(path, part)
            child = _subdirectory(fd, part, path, backup_dir)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _subdirectory(dir_fd, name, path, backup_dir):
    """A descriptor of the directory ``name`` in ``dir_fd``, created (0700) when missing; a link is refused."""
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
        if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
            raise BackupError(
                "%s is a symbolic link (to %s): writing through it would leave the backup directory %s. "
                "Nothing was written." % (path, os.path.realpath(path), backup_dir),
                "The copy must hold a real directory there, never a link to the live server's files: "
                "take a new backup with a copy that does not keep that link.")
        # O_NOFOLLOW: a link swapped in since the check fails here instead of being followed.
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except (IOError, OSError) as exc:
        raise BackupError("Cannot create %s in the backup: %s." % (path, exc.strerror or exc),
                          "Check space and permissions in the backup directory.")


def _copy_into(src, dir_fd, name, target_dir):
    """Create ``name`` in ``dir_fd`` (never over an existing file or link) with ``src``'s content, mode and times."""
    try:
        st = os.stat(src)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as out, open(src, "rb") as handle:
            shutil.copyfileobj(handle, out, 1 << 20)
            os.fchmod(out.fileno(), stat.S_IMODE(st.st_mode))
            out.flush()
            os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
    except (IOError, OSError) as exc:
        raise BackupError("Cannot copy %s into %s: %s." % (src, target_dir, exc.strerror or exc),
                          "include_wal writes into an empty WAL directory of the backup and never replaces a "
                          "file: check what is already there, and space and permissions.")


def wal_argument_spec():
    return dict(
        backup_dir=dict(type="path", required=True),
        wal_archive_dir=dict(type="path", required=True),
        start_wal_file=dict(type="str", required=True),
        stop_wal_file=dict(type="str", required=True),
        backup_history_file=dict(type="str"),
        compression=dict(type="str", choices=list(COMPRESSIONS), default="none"),
    )


def backup_wal(params, check_mode):
    """pg_backup_wal: the WAL into data/pg_wal/ (plain), pg_wal.tar (tar) or pg_wal/ (command)."""
    if check_mode:
        return dict(changed=True, wal_files=[], location=None)
    backup_dir = params["backup_dir"]
    try:
        present = os.listdir(backup_dir)
    except (IOError, OSError) as exc:
        raise BackupError("Cannot read the backup directory %s: %s." % (backup_dir, exc.strerror or exc),
                          "Give the directory of a finished copy, <dest>/<label>.")
    plain = DATA_SUBDIR in present
    tarred = not plain and any(n.startswith("base.tar") for n in present)
    target = os.path.join(backup_dir, DATA_SUBDIR, "pg_wal") if plain else os.path.join(backup_dir, "pg_wal")
    output = os.path.join(backup_dir, tar_name("pg_wal", params["compression"]))
    if tarred and os.path.lexists(output):
        raise BackupError("%s already exists. Nothing was written." % output,
                          "include_wal writes pg_wal.tar once, into a backup that has none.")
    files = include_wal(params["wal_archive_dir"], backup_dir, target, params["start_wal_file"],
                        params["stop_wal_file"], params["backup_history_file"])
    if not tarred:
        return dict(changed=True, wal_files=files, location=os.path.relpath(target, backup_dir))
    argv = ["tar", "-C", target, "-cf", output] + TAR_COMPRESS_ARG[params["compression"]] + sorted(files)
    try:
        rc = subprocess.call(argv)
    except (IOError, OSError) as exc:
        raise BackupError("tar of the WAL could not run: %s" % exc, "Install tar (and zstd for zstd).")
    if rc != 0:
        raise BackupError("tar of the WAL failed with exit code %d: %s" % (rc, " ".join(argv)),
                          "Check space and permissions in the backup directory.")
    try:
        shutil.rmtree(target)
    except (IOError, OSError) as exc:
        raise BackupError("%s is packed into %s, but could not be removed: %s." % (target, output, exc),
                          "Remove it by hand; the backup itself is fine.")
    return dict(changed=True, wal_files=files, location=os.path.basename(output))
