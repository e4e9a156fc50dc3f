# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Opening a path beneath a directory without following a link on the way: a backup is untrusted input."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

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
