# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The filesystem copy of an exclusive backup: tar, rsync, copy or the user's command.

Copier checks the options, the live backup_label and the tablespaces, stages
what the copy gets in place of the live entries, runs the method
(copy_methods) and reports. The data directory and each tablespace are opened
once, where they are checked (open_sources), and every method reads them
through those descriptors, never by name again. The backup directory's layout is backup_layout's;
a repository on another host is repository's; the in-process file copy and
the threaded gzip are copy_io's.

The copy always carries backup_label and tablespace_map. The backup_label in the
copy is written from the one read at copy time (never the live file changed):
on 15+ its method line is fixed (backup_label.restorable_label) so that recovery
waits for the end-of-backup record. pg_wal and the other backup_files.EMPTY_DIRS
are new, real, empty directories in every copy, whatever the live ones are.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import pwd
import shlex
import shutil
import threading
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    LABEL_FILE, parse_backup_label, restorable_label, tablespace)
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import (
    COMPRESSIONS, RECORD_FILE, RESTORABLE_LABEL_FILE, STAGING_SUBDIR)
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.io import chown_like, open_root, run_argv
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.methods import (
    METHOD_CLASSES, CopyContext, Sources, make_empty_dirs)
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.options import METHODS, check_copy_options
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import system_identifier, tablespace_links
from ansible_collections.pgexclusive.backup.plugins.module_utils.durable import atomic_write
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.repository import (
    Repository, remote_error, send_record)
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.during_copy import copy_while_leased


def copy_argument_spec():
    return dict(
        label=dict(type="str", required=True),
        data_directory=dict(type="path"),
        backup_dir=dict(type="path", required=True),
        method=dict(type="str", choices=list(METHODS), default="tar"),
        compression=dict(type="str", choices=list(COMPRESSIONS), default="none"),
        exclude=dict(type="list", elements="str", default=[]),
        fix_label=dict(type="bool", default=False),
        command=dict(type="str"),
        repository=dict(type="str", aliases=["rsync_target"]),
        ssh_user=dict(type="str"),
        ssh_key=dict(type="path"),
        ssh_options=dict(type="list", elements="str", default=[]),
        send_record=dict(type="bool", default=False),
        parallel=dict(type="int", default=1),
        state_record_path=dict(type="path"),
    )


# What each of the module's two tasks needs; the rules between the copy's options are check_copy_options'.
COPY_REQUIRED_IF = [("send_record", False, ("data_directory",)), ("send_record", True, ("repository",))]


def copy_backup(params, check_mode):
    """pg_backup_copy's task: the copy while the lease holds, or with send_record the record sent after it."""
    try:
        return _copy_backup(params, check_mode)
    except BackupError as exc:
        exc.facts.setdefault("method", params["method"])
        raise


def _copy_backup(p, check_mode):
    ssh = dict(ssh_user=p["ssh_user"], ssh_key=p["ssh_key"], ssh_options=p["ssh_options"])
    if p["send_record"]:
        if check_mode:
            return dict(changed=True, method=p["method"], sent=[],
                        msg="Check mode: would send backup.json from %s to %s." % (p["backup_dir"], p["repository"]))
        return dict(send_record(p["backup_dir"], p["repository"], **ssh), changed=True, method=p["method"])
    copier = Copier(p["data_directory"], p["backup_dir"], p["label"], p["method"], p["compression"],
                    p["exclude"], p["fix_label"], p["command"], p["repository"], parallel=p["parallel"], **ssh)
    if check_mode:
        return dict(changed=True, method=p["method"], outputs=[], label_fixed=p["fix_label"],
                    msg="Check mode: would copy %s into %s with %s." % (p["data_directory"], p["backup_dir"], p["method"]))
    result = copy_while_leased(p["state_record_path"], copier.copy, copier.cancel)
    if result.get("restore_hint") and p["fix_label"]:
        result["warnings"].append(result["restore_hint"])
    return dict(result, changed=True)


def open_sources(data_directory):
    """The data directory and every tablespace linked from it, each opened once and checked on its descriptor.

    The copy reads them as root, and only through these descriptors
    (copy_methods.Sources): the server's OS user can swap any of them for a
    link at any time, and a swap after this check changes nothing, since the
    names are never looked up again; a swap before it is refused here.
    """
    sources = Sources(_open_data_directory(data_directory))
    try:
        _open_tablespaces(sources)
    except BaseException:
        sources.close()
        raise
    return sources


def _open_data_directory(data_directory):
    """The data directory, its path's links (the administrator's) resolved once.

    What proves it the server's is this run's backup_label, read through the
    same descriptor (Copier.live_label); its owner is the one its tablespaces must have.
    """
    path = os.path.realpath(data_directory)
    try:
        return open_root(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _swapped("The data directory", path)
        raise BackupError("The data directory %s cannot be read: %s. Nothing was copied." % (path, exc.strerror),
                          "Check data_directory (the server's data_directory setting); run the copy as root or as "
                          "the server's OS user (become: true).")


def _open_tablespaces(sources):
    """Each tablespace linked from pg_tblspc/, its ``location`` the link's target resolved once, added to ``sources``.

    The copy follows these links by design, as root. A tablespace always
    belongs to the server's OS user (CREATE TABLESPACE requires it), so a link
    to a directory someone else owns was not made by PostgreSQL: copying it
    would let whoever changed the link read that directory from the backup.
    It is refused before anything is copied, on the descriptor the copy then reads.
    """
    data = sources.data
    owner = data.stat.st_uid
    for linked in tablespace_links(data.source):
        link = os.path.join(data.path, "pg_tblspc", str(linked["oid"]))
        path = os.path.realpath(os.path.join(data.path, "pg_tblspc", linked["location"]))
        try:
            root = open_root(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _swapped("Tablespace %s (%s)" % (linked["oid"], link), path)
            raise BackupError("Tablespace %s: %s leads to %s, which cannot be read: %s. Nothing was copied."
                              % (linked["oid"], link, path, exc.strerror),
                              "Check the link against tablespace_map and the tablespace's directory, then take the "
                              "backup again.")
        sources.tablespaces.append((tablespace(linked["oid"], path), root))
        if root.stat.st_uid != owner:
            raise BackupError(
                "Tablespace %s: %s leads to %s, owned by %s, but the data directory %s is owned by %s. "
                "Nothing was copied." % (linked["oid"], link, path, _user(root.stat.st_uid), data.path, _user(owner)),
                "A tablespace's directory belongs to the server's OS user, so this link was changed outside "
                "PostgreSQL. Compare it with tablespace_map (ls -l %s), put the right link back, then take the "
                "backup again." % link)


def _swapped(what, path):
    return BackupError(
        "%s: %s is a symbolic link now, not the directory it was resolved to: it was swapped during the backup. "
        "It was not followed; nothing was copied." % (what, path),
        "Something renamed the directory and put a link in its place (PostgreSQL does not): find out what, put the "
        "directory back, then take the backup again.")


def _user(uid):
    try:
        return "uid %d (%s)" % (uid, pwd.getpwuid(uid).pw_name)
    except KeyError:
        return "uid %d" % uid


def check_label(text, label):
    """The live backup_label must be this run's: never copy under someone else's label."""
    fields = parse_backup_label(text)
    if fields.get("label") != label:
        raise BackupError(
            "The backup in progress is labelled %r, not this run's %r." % (fields.get("label"), label),
            "Another backup started in between; this run stops nothing and copies nothing.")
    return fields


def label_for_copy(text, fix_label):
    """The backup_label text to put in the copy."""
    return restorable_label(text) if fix_label else text


def restore_hint(fix_label):
    """What the user of the ``command`` method must do before restoring."""
    if not fix_label:
        return ("backup_label in the snapshot can be restored as it is (PostgreSQL 14 and earlier). "
                "Keep backup_label and tablespace_map in the restored data directory.")
    return ("Before restoring the snapshot, change the line 'BACKUP METHOD: pg_start_backup' in its backup_label "
            "to 'BACKUP METHOD: streamed' (or replace the file with %s from the backup directory), e.g. "
            "sed -i 's/^BACKUP METHOD: pg_start_backup$/BACKUP METHOD: streamed/' <restored>/backup_label. "
            "Without it PostgreSQL 15+ declares the copy consistent at the backup's start: a restore with "
            "recovery_target = 'immediate' fails with 'WAL ends before end of online backup' and a standby "
            "answers queries too early. Never change the live data directory's backup_label." % RESTORABLE_LABEL_FILE)


class Copier(object):
    """One copy run. ``run`` executes argv lists and returns (rc, stdout, stderr)."""

    def __init__(self, data_directory, backup_dir, label, method="tar", compression="none", exclude=(),
                 fix_label=False, command=None, repository=None, run=None, parallel=1, ssh_user=None,
                 ssh_key=None, ssh_options=(), cancel=None):
        check_copy_options(method, compression, command, repository, parallel)
        # A local path stays as it was: rsync into that directory on the database host.
        remote = Repository.parse(repository, ssh_user, ssh_key, ssh_options) if repository else None
        self.method = method
        self.fix_label = fix_label
        # Set when the backup's lease ends (safety_stop.copy_while_leased): the copy method stops between files.
        self.cancel = cancel or threading.Event()
        self.context = CopyContext(data_directory.rstrip("/") or "/", backup_dir, label, compression,
                                   list(exclude or ()), command, repository, remote, parallel, run or run_argv,
                                   self.cancel)

    def live_label(self, data):
        """The backup_label of the data directory opened as ``data`` (a SourceRoot), never through a link."""
        try:
            fd = os.open(LABEL_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=data.fd)
            with os.fdopen(fd) as handle:
                return handle.read()
        except (IOError, OSError):
            raise BackupError(
                "%s has no backup_label: no exclusive backup is in progress." % self.context.data_directory,
                "Start the backup first (pg_start_backup); a copy without backup_label is not a backup.")

    def copy(self):
        started = time.time()
        with open_sources(self.context.data_directory) as sources:
            return self._copy(sources, started)

    def _copy(self, sources, started):
        ctx = self.context
        text = self.live_label(sources.data)
        fields = check_label(text, ctx.label)
        owner = sources.data.stat
        if not os.path.isdir(ctx.backup_dir):
            os.makedirs(ctx.backup_dir, 0o700)
        staging = os.path.join(ctx.backup_dir, STAGING_SUBDIR)
        if os.path.isdir(staging):
            shutil.rmtree(staging)
        os.mkdir(staging, 0o700)
        copy_text = label_for_copy(text, self.fix_label)
        if ctx.remote:
            self._prepare_remote()
        # The staging area holds what the copy gets in place of the live entries.
        _write(os.path.join(staging, LABEL_FILE), copy_text, owner)
        make_empty_dirs(staging, owner)
        if self.method == "command":
            # Next to backup.json, and before the command runs, so that it can ship it with the snapshot.
            _write(os.path.join(ctx.backup_dir, RESTORABLE_LABEL_FILE), copy_text, None, 0o644)
        method = dict(zip(METHODS, METHOD_CLASSES))[self.method](ctx)
        try:
            outputs = method.run(staging, sources)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result = {
            "method": self.method,
            "compression": ctx.compression,
            "label": ctx.label,
            # Which cluster this is a backup of: retention must never mix clusters.
            "system_identifier": system_identifier(sources.data.source),
            "data_directory": sources.data.path,
            "start_wal_file": fields.get("start_wal_file"),
            "label_fixed": self.fix_label and self.method != "command",
            "tablespaces": sources.records(),
            "outputs": outputs,
            "commands": ctx.commands,
            "started_at": round(started, 3),
            "duration": round(time.time() - started, 3),
            "warnings": ctx.warnings,
            "repository": ctx.remote.location(ctx.remote_dir()) if ctx.remote else None,
        }
        result["restore_hint"] = restore_hint(self.fix_label) if self.method == "command" else None
        result["bytes"] = method.size()
        result["output_bytes"] = method.output_bytes()
        return result

    def _prepare_remote(self):
        """Create <repository>/<label>/ (0700), refusing one that holds a backup already; also proves the link works."""
        ctx = self.context
        remote_dir = ctx.remote_dir()
        argv = ctx.remote.command("umask 077 && { test ! -e %s || exit 3; } && mkdir -p %s"
                                  % (shlex.quote(remote_dir + "/" + RECORD_FILE), shlex.quote(remote_dir)))
        rc, _out, err = ctx.run(argv)
        ctx.commands.append({"argv": argv, "rc": rc})
        if rc == 3:
            raise BackupError("%s already holds a backup (backup.json): this copy would overwrite it."
                              % ctx.remote.location(remote_dir),
                              "Give this run another label, or leave exclusive_backup_label empty for a unique one.")
        if rc != 0:
            raise remote_error(ctx.remote.location(remote_dir), rc, err)


def _write(path, text, owner_stat, mode=0o600):
    atomic_write(path, text, mode)
    if owner_stat is not None:
        chown_like(path, owner_stat)
