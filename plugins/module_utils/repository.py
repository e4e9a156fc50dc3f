# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A backup repository on another host, reached over SSH as the database host's root.

With a repository (``[user@]host:/path``, with the key and options given),
tar streams each archive into ``<path>/<label>/`` and rsync writes ``data/``
and ``tablespaces/`` there; ``backup_dir`` on the database host keeps the
run's own record. send_record then puts backup.json there last, after a sync
of the repository's filesystem: a backup.json in the repository always
describes a copy that is whole and on its disk.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re
import shlex
import subprocess
import tempfile

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import RECORD_FILE, STAGING_SUBDIR
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.io import FAILED_HINT, pipe_stream
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

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


def rsync_shell_args(ssh_argv):
    """rsync's -e: the ssh command as one string, which rsync splits again (it honours quotes); none without one."""
    return ["-e", " ".join(shlex.quote(arg) for arg in ssh_argv)] if ssh_argv else []


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

    def rsync_shell(self):
        return rsync_shell_args(self.ssh_argv())

    def rsync_target(self, path):
        """``host:path`` for rsync; the user travels in ssh_argv's -l."""
        return "%s:%s" % (self.host, path)

    def location(self, path):
        return "%s%s:%s" % (self.user + "@" if self.user else "", self.host, path)

    def backup_path(self, backup_dir):
        """The repository's directory for the backup that ``backup_dir`` holds on the database host: same name."""
        return self.path.rstrip("/") + "/" + os.path.basename(backup_dir.rstrip("/"))

    def command(self, script):
        """The argv that runs ``script`` on the repository host (an IPv6 host without its brackets)."""
        return self.ssh_argv() + [self.host.strip("[]"), script]


def stream_to_repository(remote, script, argv, location, gzip_workers=0, pass_fds=()):
    """Pipe what ``argv`` writes (gzipped in ``gzip_workers`` threads, or as it is) into ``script`` on the repository.

    ``pass_fds`` are the descriptors ``argv`` reads through (copy_io.SourceRoot.source).

    Raises when ssh or the remote command fails, with ssh's message: when the
    link or the remote side breaks, that message says why, not the broken pipe
    seen here. Returns ``argv``'s exit code and stderr, the bytes sent and the ssh argv.
    """
    ssh_argv = remote.command(script)
    write_error = None
    with tempfile.TemporaryFile() as ssh_errors:
        ssh = subprocess.Popen(ssh_argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=ssh_errors)
        try:
            rc, err, size = pipe_stream(argv, ssh.stdin, gzip_workers, pass_fds=pass_fds)
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
        raise remote_error(location, ssh_rc, ssh_err)
    if write_error is not None:
        raise BackupError("The copy to %s failed: %s" % (location, write_error), REMOTE_HINT)
    return rc, err, size, ssh_argv


def remote_error(location, rc, err):
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
    remote = Repository.parse(repository, ssh_user, ssh_key, ssh_options) if repository else None
    if remote is None:
        raise BackupError("Only a repository on another host gets the record sent, and %r is not one." % repository,
                          "Give the repository as [user@]host:/path; a local copy's record is in backup_dir already.")
    record = os.path.join(backup_dir, RECORD_FILE)
    if not os.path.isfile(record):
        raise BackupError("%s holds no backup.json to send to the repository." % backup_dir,
                          "Write the record first (pg_backup_record), then send it.")
    remote_dir = remote.backup_path(backup_dir)
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
