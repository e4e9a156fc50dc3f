# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Writes that survive a power loss: the one atomic write, and fsync of a finished tree.

A backup is complete only when every file and directory it consists of is on
stable storage and backup.json, written last, is too. A rename is durable only
once its directory is fsynced.

Standard library only: the watchdog process loads this file's source outside
Ansible (see safety_stop/watchdog.py).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import tempfile


def fsync_path(path):
    """fsync one file or directory without following a final symbolic link."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir_of(path):
    fsync_path(os.path.dirname(os.path.abspath(path)) or "/")


def atomic_write(path, text, mode=0o600):
    """Write ``text`` to ``path``: a reader sees the old content or the new one, never a mix.

    Temporary file in the same directory, fsync, rename, fsync of the directory.
    """
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(directory)
    return path


def fsync_tree(root):
    """fsync every regular file and directory under ``root`` (symbolic links are not followed).

    Returns how many entries were synced. Directories are synced after their
    contents, ``root`` last, so the names are durable once the data is.
    """
    count = 0
    for current, dirs, files in os.walk(root, topdown=False, onerror=_raise):
        for name in files:
            full = os.path.join(current, name)
            if os.path.islink(full):
                continue
            fsync_path(full)
            count += 1
        for name in dirs:
            full = os.path.join(current, name)
            if not os.path.islink(full):
                fsync_path(full)
                count += 1
    fsync_path(root)
    return count + 1


def _raise(error):
    raise error
