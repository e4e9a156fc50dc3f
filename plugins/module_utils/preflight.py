# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Preflight: everything that must hold before a backup starts, in one call on the database host.

The destination (no earlier backup under this label, not inside the data
directory, writable by the user the copy runs as, with room for the copy),
the programs the copy method runs, the server (a primary with an exclusive
backup API), and WAL archiving. Nothing here starts a backup; when a check
fails nothing was started, and the message says so.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import pwd
import shutil
import tempfile

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_api
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal import archiving as wal_archiving
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import is_excluded
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import COMPRESSIONS
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_info import add_state_records, info_argument_spec, online_info
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import RECORD_FILE
from ansible_collections.pgexclusive.backup.plugins.module_utils.session.server import open_server
from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import with_queries
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.options import METHODS, check_copy_options
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import tablespace_links
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.repository import Repository
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.arming import cluster_id

SKIP = "skip"
ARCHIVE_MODES = wal_archiving.MODES + (SKIP,)
NOTHING_STARTED = " Nothing was started."
# The database the README recommends for the extension: never postgres, where other tools need the built-in API.
EXTENSION_DB = "backupctl"
# Where each program the copy may run comes from on Debian, for the hint.
PACKAGES = {"tar": "tar", "zstd": "zstd", "gzip": "gzip", "rsync": "rsync", "ssh": "openssh-client"}
# Methods whose copy lands under dest (command: the user's snapshot, wherever it goes).
COPIES_INTO_DEST = ("tar", "rsync", "copy")
MIB = 1024.0 * 1024


def preflight_argument_spec():
    spec = info_argument_spec()
    spec.update(
        dest=dict(type="path", required=True),
        label=dict(type="str", required=True),
        verify_archiving=dict(type="str", choices=list(ARCHIVE_MODES), default="active"),
        archive_timeout=dict(type="int", default=60),
        create_extension=dict(type="bool", default=False),
        method=dict(type="str", choices=list(METHODS), default="tar"),
        compression=dict(type="str", choices=list(COMPRESSIONS), default="none"),
        repository=dict(type="str", default=""),
        include_wal=dict(type="bool", default=False),
        command=dict(type="str"),
        parallel=dict(type="int", default=1),
        rsync_target=dict(type="str", default=""),
        wal_archive_dir=dict(type="path"),
        verify_restore=dict(type="bool", default=False),
    )
    return spec


def backup_dir_of(dest, label):
    return os.path.join(dest.rstrip("/") or "/", label)


def refuse_copy_options(params):
    """The copy's options, checked as the copy will check them, which would be after the start."""
    try:
        check_copy_options(params["method"], params["compression"], params["command"], params["repository"],
                           params["parallel"], params["rsync_target"], params["include_wal"],
                           params["wal_archive_dir"], params["verify_restore"])
    except BackupError as exc:
        raise BackupError(exc.msg + NOTHING_STARTED, exc.hint)


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


def extension_hint(login_db):
    """What to do without an exclusive API in ``login_db``: never to put the extension into postgres."""
    if login_db == "postgres":
        return ("Do not install it in postgres: there it drops pg_backup_start/pg_backup_stop, which pgBackRest, "
                "Barman and other tools call. Create a dedicated database (CREATE DATABASE %s; then CREATE EXTENSION "
                "pg_exclusive_backup in it, as a superuser) and set exclusive_backup_login_db: %s." % ((EXTENSION_DB,) * 2))
    return ("Install the pg_exclusive_backup extension in %s (CREATE EXTENSION pg_exclusive_backup, as a superuser), "
            "or let the role create it there (exclusive_backup_create_extension)." % login_db)


def refuse_server(info, create_extension, login_db):
    """A standby, or a server without an exclusive API this run may create, takes no exclusive backup."""
    if info["in_recovery"]:
        raise BackupError("The server is in recovery (a standby): take the backup on the primary." + NOTHING_STARTED,
                          "Point the role at the primary (login_host/login_unix_socket, or the inventory).")
    if info["api"] == backup_api.NONE and not create_extension:
        raise BackupError((info["api_reason"] or "No exclusive backup API in %s." % login_db) + NOTHING_STARTED,
                          extension_hint(login_db))


def tools_needed(method, compression, repository, include_wal):
    """(program, what needs it) for every program the copy and the WAL step run on the database host."""
    needed = []
    if method == "tar":
        needed.append(("tar", "the tar method"))
        if compression == "zstd":
            needed.append(("zstd", "compression zstd"))
        elif compression == "gzip" and include_wal:
            # The copy gzips with zlib; the WAL archive is tar --gzip.
            needed.append(("gzip", "include_wal with compression gzip"))
    elif method == "rsync":
        needed.append(("rsync", "the rsync method"))
    if repository and Repository.parse(repository) is not None:
        needed.append(("ssh", "the repository %s" % repository))
    return needed


def refuse_missing_tools(needed, which=shutil.which):
    """Every program found in the PATH, or nothing starts: a copy would fail on it after the start."""
    missing = [(tool, why) for tool, why in needed if which(tool) is None]
    if missing:
        raise BackupError(
            "The copy needs %s, not found in the PATH of the database host (%s)."
            % (", ".join("%s (%s)" % pair for pair in missing), os.environ.get("PATH", "")) + NOTHING_STARTED,
            "Install %s on the database host (Debian: apt-get install %s), or choose another exclusive_backup_method "
            "or exclusive_backup_compression." % (" and ".join(t for t, _w in missing),
                                                  " ".join(sorted(set(PACKAGES[t] for t, _w in missing)))))


def existing_parent(path):
    """``path``, or its nearest ancestor that exists: where the copy creates what is missing."""
    while not os.path.lexists(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    return path


def writer():
    """The user this module, and so the copy of the same become, runs as: 'name (uid N)'."""
    uid = os.geteuid()
    try:
        return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid %d" % uid


def try_writing(directory, check_mode):
    """Why ``directory`` does not take a new file from this user (None: it does), found by trying.

    A temporary file is created and removed there, so a read-only mount, a full
    disk, an NFS root squash or an ACL answers as the copy would meet it; check
    mode changes nothing and asks the permission bits only.
    """
    if not os.path.isdir(directory):
        return "it is not a directory"
    if check_mode:
        return None if os.access(directory, os.W_OK | os.X_OK) else "permission denied (checked in check mode)"
    try:
        handle, name = tempfile.mkstemp(prefix=".pgx-preflight-", dir=directory)
        os.close(handle)
        os.unlink(name)
    except (IOError, OSError) as exc:
        return exc.strerror or str(exc)
    return None


def refuse_unwritable(backup_dir, check_mode):
    """The copy and backup.json are written by this user under ``backup_dir``: refused when it may not."""
    where = existing_parent(backup_dir)
    why = try_writing(where, check_mode)
    if why:
        raise BackupError(
            "The destination %s is not writable by %s, who writes the backup: %s." % (where, writer(), why)
            + NOTHING_STARTED,
            "Give that user write access to %s (owner, mode, a mount that is not read-only), choose another "
            "exclusive_backup_dest, or run the role with become: true." % where)
    return where


def copy_size(data_directory):
    """Bytes of the files a copy takes: the data directory without what it leaves out, and every tablespace."""
    tablespaces = [os.path.realpath(os.path.join(data_directory, "pg_tblspc", str(t["oid"])))
                   for t in tablespace_links(data_directory)]
    return _file_bytes(data_directory, is_excluded) + sum(_file_bytes(path, lambda _rel: False) for path in tablespaces)


def _file_bytes(top, excluded):
    total = 0
    for root, dirs, files in os.walk(top):
        rel = os.path.relpath(root, top)
        dirs[:] = [name for name in dirs if not excluded(os.path.join(rel, name))]
        for name in files:
            if not excluded(os.path.join(rel, name)):
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    # Removed by the server meanwhile (a temporary file, a dropped table).
                    pass
    return total


def free_bytes(path):
    """Free bytes on the file system of ``path`` for this user (root may use the reserved blocks)."""
    st = os.statvfs(path)
    return st.f_frsize * (st.f_bfree if os.geteuid() == 0 else st.f_bavail)


def room_verdict(needed, free, compressed):
    """None when the copy fits; else the shortfall, and whether it refuses (an uncompressed copy) or warns."""
    if free >= needed:
        return None
    text = "%.1f MiB free, and the copy of the data directory and its tablespaces takes about %.1f MiB" % (
        free / MIB, needed / MIB)
    return (text + " before compression: it may not fit.", False) if compressed else (text + ".", True)


def check_room(where, data_directory, params):
    """Refuses a dest without room for the copy, warns when a compressed copy may not fit; the estimate."""
    if params["method"] not in COPIES_INTO_DEST or params["repository"]:
        return None, []
    needed, free = copy_size(data_directory), free_bytes(where)
    verdict = room_verdict(needed, free, params["compression"] != "none")
    estimate = {"path": where, "copy_bytes": needed, "free_bytes": free}
    if verdict is None:
        return estimate, []
    text, refuse = verdict
    if refuse:
        raise BackupError("The destination %s has no room for the copy: %s" % (where, text) + NOTHING_STARTED,
                          "Free space on that file system, choose another exclusive_backup_dest, or compress "
                          "(exclusive_backup_compression with the tar method).", room=estimate)
    return estimate, ["The destination %s may be too small: %s" % (where, text)]


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
    refuse_copy_options(params)
    # The role's older name of the repository, now known not to be set with it.
    params = dict(params, repository=params["repository"] or params["rsync_target"])
    backup_dir = backup_dir_of(params["dest"], params["label"])
    refuse_earlier_backup(backup_dir)
    where = refuse_unwritable(backup_dir, check_mode)
    needed = tools_needed(params["method"], params["compression"], params["repository"], params["include_wal"])
    refuse_missing_tools(needed)
    server = open_server(params)
    return with_queries(server.session, lambda: _check_server(server, params, check_mode, backup_dir, where, needed))


def _check_server(server, params, check_mode, backup_dir, where, needed):
    info = online_info(server, params["data_directory"])
    add_state_records(info, params["state_dir"], cluster_id(server), True)
    refuse_server(info, params["create_extension"], params["login_db"])
    data_directory = data_directory_of(params["data_directory"], info, server.user)
    refuse_dest_inside(params["dest"], data_directory)
    room, warnings = check_room(where, data_directory, params)
    info["warnings"].extend(warnings)
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
                archive_check=checked, room=room, tools=[tool for tool, _why in needed])
    return info
