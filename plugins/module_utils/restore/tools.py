# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The restore's helpers shared by its phases: the owner of the restored files, the PostgreSQL programs."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import pwd

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


class Owner(object):
    """A passwd entry in the shape restore_server's helpers take (an os.stat result's st_uid and st_gid)."""

    def __init__(self, entry):
        self.st_uid, self.st_gid = entry.pw_uid, entry.pw_gid


def owner_entry(name):
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise BackupError("There is no OS user %s to own the restored data directory." % name,
                          "Set owner to the OS user PostgreSQL runs as (usually postgres).")
    if os.geteuid() != 0 and os.geteuid() != entry.pw_uid:
        raise BackupError("Only root can give the restored files to %s." % name,
                          "Run the restore as root (become: true) or as %s." % name)
    return entry


def find_tool(bindir, name):
    """``name`` in ``bindir``, else on the PATH; None when neither has it."""
    dirs = [bindir] if bindir else os.environ.get("PATH", "").split(os.pathsep)
    return next((os.path.join(d, name) for d in dirs if os.path.isfile(os.path.join(d, name))), None)


def pg_ctl_in(bindir):
    path = find_tool(bindir, "pg_ctl")
    if not path:
        raise BackupError("There is no pg_ctl in %s." % (bindir or "the PATH"),
                          "Set bindir to the directory of pg_ctl and postgres of the backup's major version.")
    return path


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None
