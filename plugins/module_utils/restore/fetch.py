# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore_fetch: a backup in a repository on another host, staged on the host that restores it.

Runs on the target host as root: rsync over ssh with the user, key and
options given, parsed and assembled by repository.py as the backup's copy to
the repository is. The repository path names one backup (it holds a
backup.json) or a destination (its subdirectories do).

Choosing happens here, on the target host, with the restore's own choice: one
rsync mirrors only the backup.json files of the path (a few kilobytes per
backup) into a temporary directory, and choose_backup picks from that mirror
as it would from a local dest (the newest complete backup of the cluster by
start LSN, backup_order.py, or the one backup named, refused unless complete).
The mirror holds only records, so the staged copy itself is proved by the
restore (its label, pg_control and manifest) before anything is laid out. Ansible never connects to the
repository host, which needs sshd and rsync only, no Python, and a dest there
is chosen from exactly as a local one would be.

The chosen backup goes into ``<fetch_dir>/<label>/``, its backup.json last (the
very bytes chosen from): a staged directory without backup.json is an
interrupted fetch, never a backup. A staged copy left by an earlier fetch of the
same backup is brought up to date and reused. ``created`` names what the fetch
created, the only thing ever to remove afterwards.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import shutil
import subprocess
import tempfile

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import RECORD_FILE
from ansible_collections.pgexclusive.backup.plugins.module_utils.durable import atomic_write
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.repository import RECORD_PART, Repository
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import choose_backup
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.server import running_postmaster

FETCH_SUFFIX = ".fetch"
FETCH_HINT = ("Check, as root on the target host, that 'ssh' with the same user, key and options reaches the "
              "repository without a prompt and that rsync is installed on both hosts; then run the restore again.")
# Only the records: backup.json of the path itself (a backup directory) and of each subdirectory (a dest).
RECORD_FILTER = ["--prune-empty-dirs", "--include=/" + RECORD_FILE, "--include=/*/",
                 "--include=/*/" + RECORD_FILE, "--exclude=*"]


def fetch_dir_for(fetch_dir, data_directory):
    """Where the backup is staged: ``fetch_dir``, or beside the data directory (``<data directory>.fetch``)."""
    return os.path.normpath(fetch_dir or data_directory.rstrip("/") + FETCH_SUFFIX)


def _overlap(one, other):
    one, other = os.path.normpath(one), os.path.normpath(other)
    return one == other or one.startswith(other.rstrip("/") + "/") or other.startswith(one.rstrip("/") + "/")


def check_fetch_dir(fetch_dir, places):
    """Refuse a fetch directory that is, holds or lies in one of ``places`` (name -> path the restore writes).

    Removing what the fetch created must never remove a restored directory,
    and the restore must never find the staged copy in its target.
    """
    if not os.path.isabs(fetch_dir):
        raise BackupError("The fetch directory %s is not an absolute path." % fetch_dir,
                          "Give fetch_dir as an absolute path on the target host.")
    for name, path in sorted(places.items()):
        if path and _overlap(fetch_dir, path):
            raise BackupError("The fetch directory %s overlaps the %s %s." % (fetch_dir, name, path),
                              "Stage the backup in a directory of its own beside them (the default is "
                              "<data directory>.fetch).")
    if os.path.lexists(fetch_dir) and (os.path.islink(fetch_dir) or not os.path.isdir(fetch_dir)):
        raise BackupError("The fetch directory %s exists and is not a directory." % fetch_dir,
                          "Give a directory, or a path that does not exist yet.")


def rsync_argv(remote, source, target, *options):
    """rsync from ``source`` on the repository into the local ``target``: files, links as links, modes, times."""
    return ["rsync", "-rlpt"] + list(options) + remote.rsync_shell() + [remote.rsync_target(source), target]


def _run(argv, commands):
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise BackupError("rsync could not run: %s." % exc, "Install rsync on the target host.")
    _out, err = proc.communicate()
    commands.append({"argv": argv, "rc": proc.returncode})
    return proc.returncode, err.decode("utf-8", "replace").strip()[-2000:]


def choose_remote(remote, mirror, system_identifier=None, allow_incomplete=False):
    """(the chosen backup's directory on the repository, its backup.json path in ``mirror``, its record).

    ``mirror`` holds the records of the repository path as RECORD_FILTER
    copied them: at its top when the path is one backup, one level down when
    it is a destination.
    """
    one_backup = os.path.isfile(os.path.join(mirror, RECORD_FILE))
    try:
        if one_backup:
            local, record = choose_backup(backup_dir=mirror, system_identifier=system_identifier,
                                          allow_incomplete=allow_incomplete)
        else:
            local, record = choose_backup(dest=mirror, system_identifier=system_identifier,
                                          allow_incomplete=allow_incomplete)
    except BackupError as exc:
        # The mirror is a temporary directory: name the repository instead.
        where = remote.location(remote.path)
        raise BackupError("In the repository %s: %s" % (where, exc.msg.replace(mirror, remote.path)), exc.hint)
    remote_dir = remote.path if one_backup else remote.path.rstrip("/") + "/" + os.path.basename(local)
    return remote_dir, os.path.join(local, RECORD_FILE), record


def _read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def fetch_argument_spec():
    return dict(
        repository=dict(type="str", required=True),
        ssh_user=dict(type="str"),
        ssh_key=dict(type="path"),
        ssh_options=dict(type="list", elements="str", default=[]),
        fetch_dir=dict(type="path"),
        data_directory=dict(type="path", required=True),
        waldir=dict(type="path"),
        tablespace_mapping=dict(type="dict", default={}),
        system_identifier=dict(type="str"),
        allow_incomplete=dict(type="bool", default=False),
    )


def fetch_task(params, check_mode):
    """pg_restore_fetch's task. Check mode chooses the backup (reading only the records) and stages nothing."""
    remote = Repository.parse(params["repository"], params.get("ssh_user"), params.get("ssh_key"),
                              params.get("ssh_options"))
    if remote is None:
        raise BackupError("The repository %r is not on another host." % params["repository"],
                          "Give it as [user@]host:/path; a backup on the target host itself is restored with "
                          "backup_dir or dest, without a fetch.")
    fetch_dir = fetch_dir_for(params.get("fetch_dir"), params["data_directory"])
    places = {"data directory": params["data_directory"], "waldir": params.get("waldir")}
    for key, path in sorted((params.get("tablespace_mapping") or {}).items()):
        places["directory of tablespace %s" % key] = path
    check_fetch_dir(fetch_dir, places)
    # The restore refuses this target in any case: say so before a backup is copied for nothing.
    pid = running_postmaster(params["data_directory"])
    if pid:
        raise BackupError("A postmaster (PID %s) runs on the target data directory %s. Nothing was fetched." % (
            pid, params["data_directory"]), "Stop that server first, or restore into another directory; a restore "
            "never touches a running server's files, not even with force.")
    commands = []
    mirror = tempfile.mkdtemp(prefix="pgx-records-")
    try:
        argv = rsync_argv(remote, remote.path + "/", mirror + "/", *RECORD_FILTER)
        rc, err = _run(argv, commands)
        if rc != 0:
            raise BackupError("The backup records in %s could not be read: rsync exited with %d: %s"
                              % (remote.location(remote.path), rc, err), FETCH_HINT, commands=commands)
        remote_dir, record_path, record = choose_remote(remote, mirror, params.get("system_identifier"),
                                                        params.get("allow_incomplete"))
        label = os.path.basename(remote_dir)
        result = dict(changed=True, label=label, backup_dir=os.path.join(fetch_dir, label),
                      repository=remote.location(remote_dir), fetch_dir=fetch_dir,
                      system_identifier=record.get("system_identifier"), commands=commands)
        if check_mode:
            result.update(created=[], reused=False, msg="Check mode: nothing fetched.")
            return result
        return _stage(remote, remote_dir, _read_bytes(record_path), result)
    finally:
        shutil.rmtree(mirror, ignore_errors=True)


def _stage(remote, remote_dir, chosen, result):
    """Copy the backup into result['backup_dir'], backup.json last; returns ``result`` with created and reused."""
    fetch_dir, target = result["fetch_dir"], result["backup_dir"]
    reused = os.path.lexists(target)
    if reused and _read_bytes(os.path.join(target, RECORD_FILE)) != chosen:
        raise BackupError("%s exists and is not a staged copy of the backup %s." % (target, result["repository"]),
                          "Remove it (an interrupted fetch leaves it without backup.json), or give another "
                          "fetch_dir; a fetch never deletes what it did not create.")
    created = [] if reused else [fetch_dir if not os.path.lexists(fetch_dir) else target]
    result.update(created=created, reused=reused)
    try:
        if not reused:
            # Missing parents are made and left (the restore's target may come to live in them too); the staged
            # copy holds the cluster's data: private to root, as the backup directories are.
            if not os.path.isdir(os.path.dirname(fetch_dir)):
                os.makedirs(os.path.dirname(fetch_dir))
            for path in (fetch_dir, target):
                if not os.path.isdir(path):
                    os.mkdir(path, 0o700)
        rc, err = _run(rsync_argv(remote, remote_dir + "/", target + "/", "--exclude=/" + RECORD_FILE,
                                  "--exclude=/" + RECORD_PART), result["commands"])
        if rc != 0:
            raise BackupError("The backup %s could not be fetched into %s: rsync exited with %d: %s"
                              % (result["repository"], target, rc, err), FETCH_HINT)
        if not reused:
            atomic_write(os.path.join(target, RECORD_FILE), chosen.decode("utf-8"))
    except BackupError as exc:
        exc.facts.update(created=created, commands=result["commands"], backup_dir=target)
        raise
    except (IOError, OSError) as exc:
        raise BackupError("The backup could not be staged in %s: %s." % (target, exc),
                          "Check the space and permissions there, or give another fetch_dir.",
                          created=created, commands=result["commands"], backup_dir=target)
    return result
