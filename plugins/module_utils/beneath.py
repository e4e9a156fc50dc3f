# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Opening a path beneath a directory without following a link on the way: a backup is untrusted input."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import stat

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def open_beneath(top, names, last_flags=os.O_RDONLY):
    """An fd of ``top``/``names``..., no link followed on the way: each directory is opened beneath the one before."""
    fd = os.open(top, OPEN_DIR)
    try:
        for name in names[:-1]:
            parent, fd = fd, os.open(name, OPEN_DIR, dir_fd=fd)
            os.close(parent)
        return os.open(names[-1], last_flags | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)


class NotRegularFile(OSError):
    """A FIFO, socket, device or directory where a backup's file should be."""


def open_file_beneath(top, names):
    """An fd of the regular file ``top``/``names``..., opened as open_beneath does, without blocking.

    A FIFO planted under the name would hang a blocking open until a writer came, and a device would be read:
    anything but a regular file raises NotRegularFile.
    """
    fd = open_beneath(top, names, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(errno.EINVAL, "not a regular file", os.path.join(top, *names))
    return fd
