# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Preflight: everything that must hold before a backup starts, in one call on the database host.

The destination (no earlier backup under this label, not inside the data
directory), the server (a primary with an exclusive backup API), and WAL
archiving. Nothing here starts a backup; when a check fails nothing was
started, and the message says so.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_api, wal_archiving
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_info import add_state_records, info_argument_spec, online_info
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import RECORD_FILE
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_session import open_server
from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import with_queries
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop import cluster_id

SKIP = "skip"
ARCHIVE_MODES = wal_archiving.MODES + (SKIP,)
NOTHING_STARTED = " Nothing was started."


def preflight_argument_spec():
    spec = info_argument_spec()
    spec.update(
        dest=dict(type="path", required=True),
        label=dict(type="str", required=True),
        verify_archiving=dict(type="str", choices=list(ARCHIVE_MODES), default="active"),
        archive_timeout=dict(type="int", default=60),
        create_extension=dict(type="bool", default=False),
    )
    return spec


def backup_dir_of(dest, label):
    return os.path.join(dest.rstrip("/") or "/", label)


def refuse_earlier_backup(backup_dir):
    """Copying over an earlier backup would destroy it before the new one is known to be good."""
    if os.path.lexists(os.path.join(backup_dir, RECORD_FILE)):
        raise BackupError(
            "%s already holds a backup (backup.json)." % backup_dir + NOTHING_STARTED,
            "Give this run another label, or leave exclusive_backup_label empty for a unique one.")


def is_inside(path, directory):
    """True when ``path`` is ``directory`` or below it, links resolved on both sides."""
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(directory))
    return rel == os.curdir or not (rel == os.pardir or rel.startswith(os.pardir + os.sep))


def refuse_server(info, create_extension, login_db):
    """A standby, or a server without an exclusive API this run may create, takes no exclusive backup."""
    if info["in_recovery"]:
        raise BackupError("The server is in recovery (a standby): take the backup on the primary." + NOTHING_STARTED,
                          "Point the role at the primary (login_host/login_unix_socket, or the inventory).")
    if info["api"] == backup_api.NONE and not create_extension:
        raise BackupError((info["api_reason"] or "No exclusive backup API in %s." % login_db) + NOTHING_STARTED,
                          "Install the pg_exclusive_backup extension in the login database, or let the role create "
                          "it (exclusive_backup_create_extension).")


def data_directory_of(given, info, login_user):
    """The user's data directory, else the server's; a backup that does not know what to copy never starts."""
    path = given or info.get("data_directory") or ""
    if not path.startswith("/"):
        raise BackupError(
            "The data directory of the server is not known: %s may not read the data_directory setting (that "
            "needs a superuser, or pg_read_all_settings, which pg_monitor includes)." % login_user + NOTHING_STARTED,
            "Set exclusive_backup_data_directory to its path on the database host, or GRANT pg_monitor TO %s."
            % login_user)
    return path


def refuse_dest_inside(dest, data_directory):
    """A copy into the data directory would copy itself, and the server's next backup would hold this one."""
    if is_inside(dest, data_directory):
        raise BackupError(
            "The destination %s is inside the data directory %s." % (dest, data_directory) + NOTHING_STARTED,
            "Set exclusive_backup_dest to a directory outside the data directory (and outside its tablespaces).")


def preflight(params, check_mode):
    """pg_backup_preflight: every check before the start; the server's facts and the archive check's."""
    backup_dir = backup_dir_of(params["dest"], params["label"])
    refuse_earlier_backup(backup_dir)
    server = open_server(params)
    return with_queries(server.session, lambda: _check_server(server, params, check_mode, backup_dir))


def _check_server(server, params, check_mode, backup_dir):
    info = online_info(server, params["data_directory"])
    add_state_records(info, params["state_dir"], cluster_id(server), True)
    refuse_server(info, params["create_extension"], params["login_db"])
    data_directory = data_directory_of(params["data_directory"], info, server.user)
    refuse_dest_inside(params["dest"], data_directory)
    mode = params["verify_archiving"]
    if mode == SKIP:
        checked = None
        info["warnings"].append(
            "verify_archiving is skip: nothing proves that the WAL this backup needs will reach an archive; "
            "without it the backup cannot be restored.")
    else:
        checked = wal_archiving.check(server.session, "passive" if check_mode else mode, params["label"],
                                      params["archive_timeout"])
    info.update(changed=mode == "active" and not check_mode, backup_dir=backup_dir, data_directory=data_directory,
                archive_check=checked)
    return info
