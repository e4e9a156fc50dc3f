# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The filesystem copy of an exclusive backup: tar, rsync, copy or the user's command.

Layout of a backup directory ``<dest>/<label>/`` (DESIGN.md):

    tar:      base.tar[.gz|.zst]   the data directory
              <oid>.tar[.gz|.zst]  one per tablespace (as pg_basebackup names them)
    rsync,
    copy:     data/                the data directory; pg_tblspc/<oid> stay symbolic
                                   links, pointing at ../../tablespaces/<oid>
              tablespaces/<oid>/   the contents of each tablespace
    command:  whatever the user's command writes (a snapshot elsewhere, usually)

With a repository on another host (``[user@]host:/path``, reached over SSH as
the database host's root with the key and options given), tar streams each
archive into ``<path>/<label>/`` and rsync writes ``data/`` and
``tablespaces/`` there; ``backup_dir`` on the database host keeps the run's
own record. send_record then puts backup.json there last, after a sync of the
repository's filesystem: a backup.json in the repository always describes a
copy that is whole and on its disk.

The copy always carries backup_label and tablespace_map. The backup_label in the
copy is written from the one read at copy time (never the live file changed):
on 15+ its method line is fixed (backup_label.restorable_label) so that recovery
waits for the end-of-backup record. pg_wal and the other backup_files.EMPTY_DIRS
are new, real, empty directories in every copy, whatever the live ones are.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import collections
import errno
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import zlib

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import (
    EMPTY_DIRS, is_excluded, rsync_exclude_args, tar_exclude_args)
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    LABEL_FILE, TABLESPACE_MAP, parse_backup_label, restorable_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

METHODS = ("tar", "rsync", "copy", "command")
COMPRESSIONS = ("none", "gzip", "zstd")
TAR_SUFFIX = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
TAR_COMPRESS_ARG = {"none": [], "gzip": ["--gzip"], "zstd": ["--zstd"]}
DATA_SUBDIR = "data"
TABLESPACES_SUBDIR = "tablespaces"
STAGING_SUBDIR = ".staging"
RESTORABLE_LABEL_FILE = "backup_label.restorable"
# Parallel gzip: blocks of the tar stream compressed at gzip's default level, one gzip member each.
GZIP_BLOCK = 4 << 20
GZIP_LEVEL = 6
# Bytes one sendfile call copies at most (Linux stops at 2 GiB anyway).
SEND_CHUNK = 64 << 20
# What an entry of the source must still be when the copy opens it.
KINDS = {"file": stat.S_ISREG, "directory": stat.S_ISDIR}
FAILED_HINT = "Fix the cause (space, permissions, the destination) and run the backup again."
REMOTE_HINT = ("Check, as root on the database host, that 'ssh' with the same user, key and options reaches the "
               "repository without a prompt (its host key in known_hosts, the key in the user's authorized_keys), "
               "and that the repository directory is writable and has room; then take the backup again.")
RECORD_PART = ".backup.json.part"
# [user@]host:/absolute/path, as scp and rsync write it; an IPv6 host in brackets. Neither user nor
# host may start with '-': ssh would take it for an option.
REMOTE = re.compile(r"^(?:(?P<user>[^-@:/\s][^@:/\s]*)@)?(?P<host>\[[0-9A-Fa-f:.%]+\]|[^-@:/\s\[\]][^@:/\s\[\]]*)"
                    r":(?P<path>/.*)$")
# ssh options the copy always needs, after the user's (ssh takes the first value it gets for an option):
# no prompt (the module has no terminal), and a link that dies is noticed in a minute, not hours.
SSH_DEFAULTS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15",
                "-o", "ServerAliveCountMax=4")

# Exit codes that mean "the live cluster changed under us", which is normal:
# GNU tar 1 = "some files differ" (changed while read), rsync 24 = "some
# files vanished before they could be transferred".
NORMAL_EXIT = {"tar": (0, 1), "rsync": (0, 24), "command": (0,), "copy": (0,)}


def is_normal_exit(tool, rc):
    """True when ``rc`` from ``tool`` means the copy is complete."""
    return rc in NORMAL_EXIT[tool]


def tar_name(name, compression):
    """'base' + compression -> 'base.tar.gz' etc."""
    if compression not in COMPRESSIONS:
        raise BackupError("Unknown compression %r." % compression, "Use one of %s." % ", ".join(COMPRESSIONS))
    return name + TAR_SUFFIX[compression]


def tar_compress_args(compression, parallel=1):
    """tar's compression options; zstd gets ``parallel`` threads (the Copier gzips with gzip_parallel)."""
    if compression == "zstd" and parallel > 1:
        return ["--use-compress-program=zstd -T%d" % parallel]
    return TAR_COMPRESS_ARG[compression]


def tar_data_command(data_directory, staging, output, compression="none", extra=(), parallel=1):
    """GNU tar of the data directory, backup_label and the EMPTY_DIRS taken from ``staging``.

    The live backup_label and EMPTY_DIRS are excluded and the staged ones
    added as members without the './' prefix, so the anchored exclusions
    ('./backup_label', './pg_wal') do not drop them again: the archive holds
    pg_wal/ as a directory even when the live pg_wal is a symbolic link.
    """
    return (["tar", "-C", data_directory, "-cf", output] + tar_compress_args(compression, parallel)
            + tar_exclude_args(extra) + ["--anchored", "--exclude=./" + LABEL_FILE, "--no-anchored", "."]
            + ["-C", staging, LABEL_FILE] + list(EMPTY_DIRS))


def tar_tablespace_command(location, output, compression="none", extra=(), parallel=1):
    """GNU tar of one tablespace's directory; only the name patterns apply there."""
    return (["tar", "-C", location, "-cf", output] + tar_compress_args(compression, parallel)
            + tar_exclude_args(extra, top=False) + ["."])


def rsync_data_command(data_directory, target, extra=(), mkpath=False, rsh=None):
    """rsync of the data directory into ``target`` (local dir or host:path), excluding per backup_files.

    backup_label and the EMPTY_DIRS are excluded (and deleted from an earlier
    copy in ``target``): rsync_staged_command sends the staged ones
    afterwards. Symbolic links are kept as links (-a implies -l), so
    pg_tblspc/<oid> is not followed.
    """
    args = ["rsync", "-a", "--delete", "--delete-excluded"] + (["--mkpath"] if mkpath else []) + _rsh_args(rsh)
    args += rsync_exclude_args(extra) + ["--exclude=/" + LABEL_FILE]
    return args + [data_directory.rstrip("/") + "/", target.rstrip("/") + "/"]


def rsync_staged_command(staging, target, rsh=None):
    """rsync of the staged backup_label and empty directories into the copy ``target``.

    Named one by one, not as staging/, so that the copy's own top directory
    keeps the data directory's owner and mode.
    """
    return (["rsync", "-a"] + _rsh_args(rsh) + [os.path.join(staging, name) for name in (LABEL_FILE,) + EMPTY_DIRS]
            + [target.rstrip("/") + "/"])


def rsync_tablespace_command(location, target, extra=(), mkpath=False, rsh=None):
    args = (["rsync", "-a", "--delete"] + (["--mkpath"] if mkpath else []) + _rsh_args(rsh)
            + rsync_exclude_args(extra, top=False))
    return args + [location.rstrip("/") + "/", target.rstrip("/") + "/"]


def _rsh_args(rsh):
    """rsync's -e: the ssh command as one string, which rsync splits again (it honours quotes)."""
    return ["-e", " ".join(shlex.quote(arg) for arg in rsh)] if rsh else []


class Repository(object):
    """A directory on another host, reached over SSH: ``[user@]host:/path`` with a user, key and options.

    Every remote step is one ssh call running a short POSIX sh command in the
    repository user's login shell; the paths in it are quoted, never spliced.
    """

    def __init__(self, host, path, user=None, key=None, options=()):
        self.host = host
        self.path = path.rstrip("/") or "/"
        self.user = user
        self.key = key
        self.options = list(options or ())

    @classmethod
    def parse(cls, spec, user=None, key=None, options=()):
        """The repository ``spec`` names; None when it is a local path (no host before a ':')."""
        head = spec.split("/", 1)[0]
        if ":" not in head:
            return None
        match = REMOTE.match(spec)
        if not match:
            raise BackupError("The repository %r is not [user@]host:/absolute/path." % spec,
                              "Give the host as ssh reaches it and an absolute path on it, e.g. "
                              "backup@repo1:/srv/pgbackups.")
        spec_user = match.group("user")
        if spec_user and user and spec_user != user:
            raise BackupError("The repository %r names the user %r, and the SSH user is %r." % (spec, spec_user, user),
                              "Give the user once: in the repository (user@host:/path) or as the SSH user.")
        return cls(match.group("host"), match.group("path"), spec_user or user, key, options)

    def ssh_argv(self):
        """ssh and its options, without the host: the user's options first, so that they win."""
        argv = ["ssh"] + self.options
        if self.key:
            argv += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        argv += list(SSH_DEFAULTS)
        return argv + (["-l", self.user] if self.user else [])

    def rsync_target(self, path):
        """``host:path`` for rsync; the user travels in ssh_argv's -l."""
        return "%s:%s" % (self.host, path)

    def location(self, path):
        return "%s%s:%s" % (self.user + "@" if self.user else "", self.host, path)

    def command(self, script):
        """The argv that runs ``script`` on the repository host (an IPv6 host without its brackets)."""
        return self.ssh_argv() + [self.host.strip("[]"), script]


def tablespaces_of(data_directory):
    """The tablespaces as [{'oid', 'path'}] read from the links in pg_tblspc/, each target resolved once.

    The copy follows these links by design, as root. A tablespace always
    belongs to the server's OS user (CREATE TABLESPACE requires it), so a link
    to a directory someone else owns was not made by PostgreSQL: copying it
    would let whoever changed the link read that directory from the backup.
    It is refused before anything is copied. ``path`` is the resolved
    target, which the copy then uses, so a link changed afterwards is not
    followed again.
    """
    tblspc = os.path.join(data_directory, "pg_tblspc")
    found = []
    if not os.path.isdir(tblspc):
        return found
    owner = os.stat(data_directory).st_uid
    for name in sorted(os.listdir(tblspc)):
        link = os.path.join(tblspc, name)
        if not os.path.islink(link):
            # An in-place tablespace (allow_in_place_tablespaces) is copied with the data directory.
            continue
        path = os.path.realpath(link)
        try:
            uid = os.stat(path).st_uid
        except OSError as exc:
            raise BackupError("Tablespace %s: %s leads to %s, which cannot be read: %s. Nothing was copied."
                              % (name, link, path, exc.strerror),
                              "Check the link against tablespace_map and the tablespace's directory, then take the "
                              "backup again.")
        if uid != owner:
            raise BackupError(
                "Tablespace %s: %s leads to %s, owned by %s, but the data directory %s is owned by %s. "
                "Nothing was copied." % (name, link, path, _user(uid), data_directory, _user(owner)),
                "A tablespace's directory belongs to the server's OS user, so this link was changed outside "
                "PostgreSQL. Compare it with tablespace_map (ls -l %s), put the right link back, then take the "
                "backup again." % link)
        found.append({"oid": name, "path": path})
    return found


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
        if method not in METHODS:
            raise BackupError("Unknown copy method %r." % method, "Use one of %s." % ", ".join(METHODS))
        if method != "tar" and compression != "none":
            raise BackupError("Compression %r only applies to the tar method." % compression,
                              "Set compression to none, or use method tar.")
        if parallel < 1:
            raise BackupError("parallel is %d; it must be 1 or more." % parallel,
                              "Set it to the number of copy workers (1: one stream).")
        if method == "command" and not command:
            raise BackupError("The command method needs a command.", "Set exclusive_backup_command.")
        # A local path stays as it was: rsync into that directory on the database host.
        self.remote = Repository.parse(repository, ssh_user, ssh_key, ssh_options) if repository else None
        if repository and method not in ("tar", "rsync"):
            raise BackupError("The %s method copies on the database host only: a repository needs the tar or "
                              "rsync method." % method, "Set the method to tar or rsync, or leave the repository empty.")
        if method == "tar" and repository and not self.remote:
            raise BackupError("The tar method sends to a repository on another host only, and %r is a local path."
                              % repository, "Give the repository as [user@]host:/path, or set dest for a directory "
                              "on the database host.")
        self.data_directory = data_directory.rstrip("/") or "/"
        self.backup_dir = backup_dir
        self.label = label
        self.method = method
        self.compression = compression
        self.exclude = list(exclude or ())
        self.fix_label = fix_label
        self.command = command
        self.repository = repository
        self.parallel = parallel
        self.run = run or run_argv
        # Set when the backup's lease ends (safety_stop.copy_while_leased): the copy method stops between files.
        self.cancel = cancel or threading.Event()
        self.warnings = []
        self.commands = []
        # Bytes of the tar streams sent to a repository.
        self.streamed = 0

    # -- plan ---------------------------------------------------------------

    def live_label(self):
        path = os.path.join(self.data_directory, LABEL_FILE)
        try:
            with open(path) as handle:
                return handle.read()
        except (IOError, OSError):
            raise BackupError(
                "%s has no backup_label: no exclusive backup is in progress." % self.data_directory,
                "Start the backup first (pg_start_backup); a copy without backup_label is not a backup.")

    def copy(self):
        # Imported here: data_directory imports this module (and backup_record, which does too).
        from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import system_identifier
        started = time.time()
        text = self.live_label()
        fields = check_label(text, self.label)
        tablespaces = tablespaces_of(self.data_directory)
        owner = os.stat(self.data_directory)
        if not os.path.isdir(self.backup_dir):
            os.makedirs(self.backup_dir, 0o700)
        staging = os.path.join(self.backup_dir, STAGING_SUBDIR)
        if os.path.isdir(staging):
            shutil.rmtree(staging)
        os.mkdir(staging, 0o700)
        copy_text = label_for_copy(text, self.fix_label)
        if self.remote:
            self._prepare_remote()
        # The staging area holds what the copy gets in place of the live entries.
        _write(os.path.join(staging, LABEL_FILE), copy_text, owner)
        _make_empty_dirs(staging, owner)
        if self.method == "command":
            # Next to backup.json, and before the command runs, so that it can ship it with the snapshot.
            _write(os.path.join(self.backup_dir, RESTORABLE_LABEL_FILE), copy_text, None, 0o644)
        try:
            outputs = getattr(self, "_copy_" + self.method)(staging, tablespaces)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result = {
            "method": self.method,
            "compression": self.compression,
            "label": self.label,
            # Which cluster this is a backup of: retention must never mix clusters.
            "system_identifier": system_identifier(self.data_directory),
            "data_directory": os.path.realpath(self.data_directory),
            "start_wal_file": fields.get("start_wal_file"),
            "label_fixed": self.fix_label and self.method != "command",
            "tablespaces": tablespaces,
            "outputs": outputs,
            "commands": self.commands,
            "started_at": round(started, 3),
            "duration": round(time.time() - started, 3),
            "warnings": self.warnings,
            "repository": self.remote.location(self._remote_dir()) if self.remote else None,
        }
        if self.method == "command":
            result["restore_hint"] = restore_hint(self.fix_label)
        result["bytes"] = self._bytes()
        return result

    def _bytes(self):
        """Size of the copy: the tar streams sent to a repository, or the local backup directory."""
        if self.method == "command" or (self.remote and self.method == "rsync"):
            # A snapshot, or files on another host: not measured here.
            return None
        return self.streamed if self.remote else _size_of(self.backup_dir)

    # -- repository on another host -------------------------------------------

    def _remote_dir(self):
        return self.remote.path.rstrip("/") + "/" + os.path.basename(self.backup_dir.rstrip("/"))

    def _prepare_remote(self):
        """Create <repository>/<label>/ (0700), refusing one that holds a backup already; also proves the link works."""
        remote_dir = self._remote_dir()
        argv = self.remote.command("umask 077 && { test ! -e %s || exit 3; } && mkdir -p %s"
                                   % (shlex.quote(remote_dir + "/backup.json"), shlex.quote(remote_dir)))
        rc, _out, err = self.run(argv)
        self.commands.append({"argv": argv, "rc": rc})
        if rc == 3:
            raise BackupError("%s already holds a backup (backup.json): this copy would overwrite it."
                              % self.remote.location(remote_dir),
                              "Give this run another label, or leave exclusive_backup_label empty for a unique one.")
        if rc != 0:
            raise _remote_error(self.remote.location(remote_dir), rc, err)

    def _check(self, tool, argv, rc, err):
        self.commands.append({"argv": argv, "rc": rc})
        if not is_normal_exit(tool, rc):
            if self.remote and tool == "rsync":
                # ssh's own words name only the host: the message names the repository's directory.
                raise BackupError("The copy to %s failed: rsync exited with %d: %s" % (
                    self.remote.location(self._remote_dir()), rc, (err or "").strip()[-2000:]), REMOTE_HINT)
            name = tool if tool != "command" else "the copy command"
            raise BackupError(
                "The copy failed: %s exited with %d: %s" % (name, rc, (err or "").strip()[-2000:]), FAILED_HINT)
        if rc != 0:
            self.warnings.append("%s exited with %d, which is normal on a live cluster: %s"
                                 % (tool, rc, (err or "").strip().splitlines()[-1:] or ""))

    def _copy_tar(self, staging, tablespaces):
        outputs = []
        where = self._remote_dir() if self.remote else self.backup_dir
        base = os.path.join(where, tar_name("base", self.compression))
        self._tar(lambda output, compression: tar_data_command(
            self.data_directory, staging, output, compression, self.exclude, self.parallel), base)
        outputs.append(os.path.basename(base))
        for tblspc in tablespaces:
            out = os.path.join(where, tar_name(tblspc["oid"], self.compression))
            self._tar(lambda output, compression, path=tblspc["path"]: tar_tablespace_command(
                path, output, compression, self.exclude, self.parallel), out)
            outputs.append(os.path.basename(out))
        return outputs

    def _tar(self, command, output):
        """One tar. gzip is done here with zlib, not by GNU gzip: zlib compresses about 1.4x faster
        (docs/benchmarks.md), and in ``parallel`` threads."""
        if self.remote:
            return self._tar_to_repository(command, output)
        if self.compression == "gzip":
            argv = command("-", "none")
            rc, err = gzip_parallel(argv, output, self.parallel)
        else:
            argv = command(output, self.compression)
            rc, _out, err = self.run(argv)
        self._check("tar", argv, rc, err)

    def _tar_to_repository(self, command, output):
        """One tar streamed into ``output`` on the repository host: tar | (gzip here) | ssh 'cat > output'.

        The stream passes through this process, which counts it and, for
        gzip, compresses it in ``parallel`` threads as for a local file.
        """
        gzip = self.compression == "gzip"
        argv = command("-", "none" if gzip else self.compression)
        rc, err, size, ssh_argv = stream_to_repository(
            self.remote, "umask 077 && cat > %s" % shlex.quote(output), argv, self.remote.location(output),
            self.parallel if gzip else 0)
        self.commands.append({"argv": ssh_argv, "rc": 0})
        self._check("tar", argv, rc, err)
        self.streamed += size

    def _targets(self):
        if self.remote:
            root = self.remote.rsync_target(self._remote_dir())
        elif self.repository:
            root = self.repository.rstrip("/") + "/" + os.path.basename(self.backup_dir.rstrip("/"))
        else:
            root = self.backup_dir
        return root + "/" + DATA_SUBDIR, root + "/" + TABLESPACES_SUBDIR

    def _copy_rsync(self, staging, tablespaces):
        data_target, tblspc_target = self._targets()
        local = not self.repository
        rsh = self.remote.ssh_argv() if self.remote else None
        if local and not os.path.isdir(data_target):
            os.makedirs(data_target)
        # A target's <label>/ (or, remote, tablespaces/) does not exist yet: --mkpath (rsync 3.2.3+) creates it.
        argv = rsync_data_command(self.data_directory, data_target, self.exclude, mkpath=not local, rsh=rsh)
        rc, _out, err = self.run(argv)
        self._check("rsync", argv, rc, err)
        argv = rsync_staged_command(staging, data_target, rsh=rsh)
        rc, _out, err = self.run(argv)
        self._check("rsync", argv, rc, err)
        for tblspc in tablespaces:
            target = tblspc_target + "/" + tblspc["oid"]
            if local and not os.path.isdir(target):
                os.makedirs(target)
            argv = rsync_tablespace_command(tblspc["path"], target, self.exclude, mkpath=not local, rsh=rsh)
            rc, _out, err = self.run(argv)
            self._check("rsync", argv, rc, err)
        if local:
            _relink_tablespaces(data_target, tablespaces)
        elif tablespaces:
            self.warnings.append("The remote copy's pg_tblspc links still point at the original locations; "
                                 "tablespace_map names them; the tablespaces' contents are in %s." % tblspc_target)
        return [DATA_SUBDIR] + ([TABLESPACES_SUBDIR] if tablespaces else [])

    def _copy_copy(self, staging, tablespaces):
        data_target, tblspc_target = self._targets()
        targets = [data_target] + [os.path.join(tblspc_target, t["oid"]) for t in tablespaces]
        present = [path for path in targets if os.path.lexists(path)]
        if present:
            raise BackupError("%s already exist: the copy method writes new directories only." % ", ".join(present),
                              "Remove them, or copy into a new backup directory (the role makes one per label).")
        owner = os.stat(self.data_directory)
        copy_tree(self.data_directory, data_target, self.exclude, prefix="", workers=self.parallel,
                  cancel=self.cancel)
        _make_empty_dirs(data_target, owner)
        shutil.copy2(os.path.join(staging, LABEL_FILE), os.path.join(data_target, LABEL_FILE))
        _chown_like(os.path.join(data_target, LABEL_FILE), owner)
        for tblspc in tablespaces:
            copy_tree(tblspc["path"], os.path.join(tblspc_target, tblspc["oid"]), self.exclude,
                      prefix="pg_tblspc/%s/" % tblspc["oid"], workers=self.parallel, cancel=self.cancel)
        _relink_tablespaces(data_target, tablespaces)
        self.commands.append({"argv": ["copy", self.data_directory, data_target], "rc": 0})
        return [DATA_SUBDIR] + ([TABLESPACES_SUBDIR] if tablespaces else [])

    def _copy_command(self, staging, tablespaces):
        env = dict(os.environ)
        env.update({
            "PGX_DATA_DIRECTORY": self.data_directory,
            "PGX_TABLESPACES": " ".join("%s=%s" % (t["oid"], t["path"]) for t in tablespaces),
            "PGX_BACKUP_DIR": self.backup_dir,
            "PGX_LABEL": self.label,
            "PGX_BACKUP_LABEL_RESTORABLE": os.path.join(self.backup_dir, RESTORABLE_LABEL_FILE),
        })
        argv = ["/bin/sh", "-c", self.command]
        rc, out, err = self.run(argv, env=env)
        self._check("command", argv, rc, err or out)
        return []


def gzip_parallel(argv, output, workers, block=GZIP_BLOCK):
    """Run ``argv``, which writes a tar stream to stdout, and gzip that stream into ``output`` with ``workers`` threads.

    Returns tar's (exit code, stderr); see pipe_stream.
    """
    try:
        with open(output, "wb") as out:
            rc, err, _size = pipe_stream(argv, out, workers, block)
    except (IOError, OSError) as exc:
        raise BackupError("The copy failed on %s: %s" % (output, exc), FAILED_HINT)
    return rc, err


def pipe_stream(argv, out, gzip_workers=0, block=GZIP_BLOCK):
    """Run ``argv``, which writes a stream to stdout, and write that stream to the binary file object ``out``.

    With ``gzip_workers``, the stream is gzipped in that many threads: each
    block becomes a gzip member of its own, as pigz does: gzip -d, tar -z and
    zlib read the members one after the other as a single stream (RFC 1952).
    zlib does not hold Python's lock while it compresses, so the threads use
    the cores. A failed write ends ``argv`` and raises its error. Returns
    ``argv``'s (exit code, stderr) and the bytes written.
    """
    written = 0
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors)
        try:
            with proc.stdout:
                in_flight = collections.deque()
                while True:
                    data = proc.stdout.read(block)
                    if not data:
                        break
                    if not gzip_workers:
                        out.write(data)
                        written += len(data)
                        continue
                    # The next block was read while ``gzip_workers`` blocks compressed: tar never waits for zlib.
                    if len(in_flight) >= gzip_workers:
                        written += _write_member(in_flight.popleft(), out)
                    member = _GzipMember(data)
                    member.start()
                    in_flight.append(member)
                while in_flight:
                    written += _write_member(in_flight.popleft(), out)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        rc = proc.wait()
        errors.seek(0)
        return rc, errors.read().decode("utf-8", "replace"), written


def stream_to_repository(remote, script, argv, location, gzip_workers=0):
    """Pipe what ``argv`` writes (gzipped in ``gzip_workers`` threads, or as it is) into ``script`` on the repository.

    Raises when ssh or the remote command fails, with ssh's message: when the
    link or the remote side breaks, that message says why, not the broken pipe
    seen here. Returns ``argv``'s exit code and stderr, the bytes sent and the ssh argv.
    """
    ssh_argv = remote.command(script)
    write_error = None
    with tempfile.TemporaryFile() as ssh_errors:
        ssh = subprocess.Popen(ssh_argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=ssh_errors)
        try:
            rc, err, size = pipe_stream(argv, ssh.stdin, gzip_workers)
        except (IOError, OSError) as exc:
            write_error = exc
        finally:
            try:
                ssh.stdin.close()
            except (IOError, OSError):
                pass
        ssh_rc = ssh.wait()
        ssh_errors.seek(0)
        ssh_err = ssh_errors.read().decode("utf-8", "replace")
    if ssh_rc != 0:
        raise _remote_error(location, ssh_rc, ssh_err)
    if write_error is not None:
        raise BackupError("The copy to %s failed: %s" % (location, write_error), REMOTE_HINT)
    return rc, err, size, ssh_argv


def _remote_error(location, rc, err):
    return BackupError("The copy to %s failed: ssh exited with %d: %s" % (location, rc, (err or "").strip()[-2000:]),
                       REMOTE_HINT)


def send_record(backup_dir, repository, ssh_user=None, ssh_key=None, ssh_options=()):
    """Send the backup's record from ``backup_dir`` to its copy in the repository, after all else is there.

    The record step writes backup.json (and include_wal its WAL) on the
    database host: what it decides needs the facts of this run, which live
    there. This sends the other files of ``backup_dir`` first, then
    backup.json under a temporary name, syncs the repository's filesystem
    (the copy, the WAL, the record: everything of this backup on its disk),
    and renames it into place: backup.json appears in the repository whole,
    and only over a copy that is whole and durable.
    """
    # Imported here: backup_record imports this module.
    from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import RECORD_FILE
    remote = Repository.parse(repository, ssh_user, ssh_key, ssh_options) if repository else None
    if remote is None:
        raise BackupError("Only a repository on another host gets the record sent, and %r is not one." % repository,
                          "Give the repository as [user@]host:/path; a local copy's record is in backup_dir already.")
    record = os.path.join(backup_dir, RECORD_FILE)
    if not os.path.isfile(record):
        raise BackupError("%s holds no backup.json to send to the repository." % backup_dir,
                          "Write the record first (pg_backup_record), then send it.")
    remote_dir = remote.path.rstrip("/") + "/" + os.path.basename(backup_dir.rstrip("/"))
    others = sorted(name for name in os.listdir(backup_dir) if name not in (RECORD_FILE, STAGING_SUBDIR))
    commands = []
    if others:
        argv = ["tar", "-C", backup_dir, "-cf", "-"] + others
        rc, err, _size, ssh_argv = stream_to_repository(
            remote, "umask 077 && cd %s && tar -xf -" % shlex.quote(remote_dir), argv, remote.location(remote_dir))
        if rc != 0:
            raise BackupError("The files of %s could not be sent to the repository: tar exited with %d: %s"
                              % (backup_dir, rc, err.strip()[-2000:]), FAILED_HINT)
        commands += [{"argv": argv, "rc": rc}, {"argv": ssh_argv, "rc": 0}]
    part, final = remote_dir + "/" + RECORD_PART, remote_dir + "/" + RECORD_FILE
    script = "umask 077 && cat > %s && sync -f %s && mv -f %s %s && sync %s" % (
        shlex.quote(part), shlex.quote(remote_dir), shlex.quote(part), shlex.quote(final), shlex.quote(remote_dir))
    _rc, _err, _size, ssh_argv = stream_to_repository(remote, script, ["cat", record], remote.location(final))
    commands.append({"argv": ssh_argv, "rc": 0})
    return {"repository": remote.location(remote_dir), "sent": others + [RECORD_FILE], "commands": commands}


class _GzipMember(threading.Thread):
    def __init__(self, data):
        threading.Thread.__init__(self)
        self.data = data
        self.result = None

    def run(self):
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)   # 31: gzip header and trailer
        self.result = compressor.compress(self.data) + compressor.flush()
        self.data = None


def _write_member(member, out):
    member.join()
    if member.result is None:
        raise OSError("compressing a block failed (see the module's stderr)")
    out.write(member.result)
    return len(member.result)


def run_argv(argv, env=None):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def copy_tree(source, target, extra=(), prefix="", workers=1, cancel=None):
    """Copy ``source`` into the new directory ``target``, leaving out what backup_files excludes.

    The copy runs as root in a tree the server's OS user can change while it
    is read, so no symbolic link below ``source`` is ever followed: each
    directory and file is opened relative to its parent's descriptor with
    O_NOFOLLOW. A link seen by the walk is copied as a link; an entry that
    became a link afterwards fails the copy, since following it would copy
    its target, with the original file's owner and mode, into the backup.
    Files that vanish are skipped: normal on a live cluster (WAL replay
    recreates them). Anything unreadable fails the copy: a backup never
    silently lacks a file. ``prefix`` makes the relative paths those of the
    data directory, so the exclusion list applies the same way inside
    tablespaces. With ``workers`` > 1 the files are shared out by size among
    that many threads: the kernel copies (sendfile) without holding Python's
    lock, so one stream's waits on the disk overlap with another's. Once
    ``cancel`` (a threading.Event) is set, no further file is started.
    Returns how many files were copied.
    """
    cancel = cancel or threading.Event()
    try:
        # The top itself may be reached through links: the data directory's path is the administrator's.
        root_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise _read_error(source, exc)
    try:
        jobs = []
        try:
            os.makedirs(target, 0o700)
            _copy_meta(os.fstat(root_fd), target)
            # Errors reading the source are BackupErrors already: what is left is about the destination.
            _walk(root_fd, source, (), target, extra, prefix, jobs)
        except OSError as exc:
            raise BackupError("The copy into %s failed: %s" % (target, exc), FAILED_HINT)
        if workers <= 1 or len(jobs) < 2:
            return _copy_files(root_fd, source, jobs, cancel)
        return _copy_in_parallel(root_fd, source, balanced(jobs, workers), cancel)
    finally:
        os.close(root_fd)


def _walk(dir_fd, source, parts, target, extra, prefix, jobs):
    """Make the subdirectories of ``source``/``parts`` (open as ``dir_fd``) in ``target``, its files into ``jobs``."""
    try:
        names = sorted(os.listdir(dir_fd))
    except OSError as exc:
        raise _read_error(os.path.join(source, *parts), exc)
    for name in names:
        rel = parts + (name,)
        relpath = prefix + "/".join(rel)
        if relpath == LABEL_FILE or is_excluded(relpath, extra):
            # The live backup_label is replaced by the staged one (Copier._copy_copy).
            continue
        path = os.path.join(source, *rel)
        dst = os.path.join(target, *rel)
        try:
            st = os.lstat(name, dir_fd=dir_fd)
            link = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else None
        except OSError as exc:
            _vanished(path, exc)
            continue
        if link is not None:
            # pg_tblspc/<oid> too: _relink_tablespaces points it at the copy's tablespace afterwards.
            os.symlink(link, dst)
            _chown_like(dst, st)
        elif stat.S_ISDIR(st.st_mode):
            sub = _open_nofollow(name, dir_fd, path, "directory")
            if sub is None:
                continue
            try:
                st = os.fstat(sub)
                os.mkdir(dst, 0o700)
                _copy_meta(st, dst)
                _walk(sub, source, rel, target, extra, prefix, jobs)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode):
            jobs.append((st.st_size, rel, path, dst))
        # Sockets, FIFOs and devices are nothing of PostgreSQL's: left out, as pg_basebackup does.


def balanced(jobs, workers):
    """Share (size, ...) jobs out among ``workers`` lists of nearly equal total size (largest first)."""
    bins = [[0, []] for _worker in range(workers)]
    for job in sorted(jobs, key=lambda j: j[0], reverse=True):
        lightest = min(bins, key=lambda b: b[0])
        lightest[0] += job[0]
        lightest[1].append(job)
    return [jobs_of_bin for _total, jobs_of_bin in bins if jobs_of_bin]


def _copy_in_parallel(root_fd, source, shares, cancel):
    counts, errors = [], []

    def work(share):
        try:
            counts.append(_copy_files(root_fd, source, share, cancel))
        except Exception as exc:   # any error, not only BackupError: a dead worker must not look like a done one
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts)


def _copy_files(root_fd, source, jobs, cancel):
    count = 0
    for _size, rel, path, dst in jobs:
        if cancel.is_set():
            raise BackupError("The copy of %s was cancelled." % source, FAILED_HINT)
        src = _open_below(root_fd, source, rel)
        if src is None:
            continue
        try:
            _copy_fd(src, path, dst)
        finally:
            os.close(src)
        count += 1
    return count


def _open_below(root_fd, source, rel):
    """Open the file ``source``/``rel`` one component at a time from ``root_fd``; None when it vanished.

    Opening each directory with O_NOFOLLOW is what keeps a directory swapped
    for a link after the walk from leading the copy elsewhere: O_NOFOLLOW on
    the whole path would guard only the file's own name.
    """
    fd = root_fd
    try:
        for depth in range(len(rel)):
            kind = "file" if depth == len(rel) - 1 else "directory"
            opened = _open_nofollow(rel[depth], fd, os.path.join(source, *rel[:depth + 1]), kind)
            if fd != root_fd:
                os.close(fd)
            fd = opened
            if fd is None:
                return None
        return fd
    except BaseException:
        if fd not in (root_fd, None):
            os.close(fd)
        raise


def _open_nofollow(name, dir_fd, path, kind):
    """Open ``name`` (at ``path``) in the directory ``dir_fd`` for reading, following no link; None when it vanished.

    O_NONBLOCK: a FIFO swapped in must fail the type check, not hang the open.
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        _vanished(path, exc)
        return None
    if not KINDS[kind](os.fstat(fd).st_mode):
        os.close(fd)
        raise BackupError("%s is no longer a %s: it was replaced while it was copied." % (path, kind),
                          "Find out what changed the data directory during the backup, then take the backup again.")
    return fd


def _copy_fd(src, path, dst):
    """Copy the open file ``src`` (at ``path``) into the new file ``dst``, with its mode, times and owner.

    ``dst`` is created 0600 and must not exist (O_EXCL, O_NOFOLLOW): nothing
    is written through a link planted in the copy, and the data is never
    readable by others before the final mode is set.
    """
    try:
        st = os.fstat(src)
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            offset = 0
            while True:
                sent = os.sendfile(out, src, offset, SEND_CHUNK)
                if not sent:
                    break
                offset += sent
            if os.geteuid() == 0:
                os.fchown(out, st.st_uid, st.st_gid)
            # After the owner: chown clears set-id bits.
            os.fchmod(out, stat.S_IMODE(st.st_mode))
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
    except OSError as exc:
        raise BackupError("The copy of %s to %s failed: %s" % (path, dst, exc), FAILED_HINT)


def _vanished(path, exc):
    """Return when ``path`` vanished (normal on a live cluster); raise why it could not be read otherwise."""
    if exc.errno != errno.ENOENT:
        raise _read_error(path, exc)


def _read_error(path, exc):
    if exc.errno == errno.ELOOP:
        return BackupError(
            "%s became a symbolic link during the copy. It was not followed, and the copy is incomplete." % path,
            "Something replaced it while the backup ran (PostgreSQL does not): find out what, then take the "
            "backup again.")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return BackupError("Could not read %s: %s; the copy would be incomplete." % (path, exc.strerror),
                           "Run the copy as root or as the server's OS user (become: true).")
    return BackupError("The copy failed on %s: %s" % (path, exc), FAILED_HINT)


def _copy_meta(st, dst):
    _chown_like(dst, st)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _chown_like(path, st):
    if hasattr(os, "lchown") and os.geteuid() == 0:
        os.lchown(path, st.st_uid, st.st_gid)


def _make_empty_dirs(parent, owner):
    """Real, empty directories for the EMPTY_DIRS in ``parent``, mode 0700.

    Owned like the data directory: by the server's OS user, who owns the live
    ones (or the directories their links lead to).
    """
    for name in EMPTY_DIRS:
        path = os.path.join(parent, name)
        os.mkdir(path, 0o700)
        # mkdir's mode went through the umask.
        os.chmod(path, 0o700)
        _chown_like(path, owner)


def _relink_tablespaces(data_target, tablespaces):
    """pg_tblspc/<oid> in the copy: still a link, now to the copy's own tablespace directory.

    The backup stays self-contained and pg_verifybackup follows the link into
    the copy, not into the live tablespace. tablespace_map keeps the original
    locations: recovery recreates the links from it.
    """
    for tblspc in tablespaces:
        link = os.path.join(data_target, "pg_tblspc", tblspc["oid"])
        st = os.lstat(link) if os.path.lexists(link) else None
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.join("..", "..", TABLESPACES_SUBDIR, tblspc["oid"]), link)
        if st is not None:
            _chown_like(link, st)


def _write(path, text, owner_stat, mode=0o600):
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)
    if owner_stat is not None:
        _chown_like(path, owner_stat)


def _size_of(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


__all__ = ["Copier", "Repository", "send_record", "pipe_stream", "copy_tree", "balanced", "tar_compress_args", "gzip_parallel", "tar_data_command",
           "rsync_data_command", "rsync_staged_command", "is_normal_exit", "tar_name",
           "restore_hint", "label_for_copy", "check_label", "tablespaces_of", "TABLESPACE_MAP"]
