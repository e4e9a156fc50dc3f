# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""verify_restore: start a throwaway server on a copy of a backup and see it reach consistency.

The throwaway server runs as the owner of the live data directory, on a free
local port, on a Unix socket in a private directory, with no TCP listener,
no archiving (it must never write into the live archive), recovery_target =
'immediate' and recovery_target_action = 'promote'. Its WAL comes from the
backup's own pg_wal/ (include_wal) and/or the WAL archive. It is stopped by
its PID and its directory removed, whatever happened.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import TABLESPACE_MAP
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import (
    DATA_SUBDIR, TABLESPACES_SUBDIR, TAR_SUFFIX)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def free_port():
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
    finally:
        sock.close()


def bindir_of_running_server(data_directory):
    """The directory of the running postmaster's binary (its pg_ctl sits beside it)."""
    try:
        with open(os.path.join(data_directory, "postmaster.pid")) as handle:
            pid = int(handle.readline().strip())
        return os.path.dirname(os.readlink("/proc/%d/exe" % pid))
    except (IOError, OSError, ValueError):
        raise BackupError(
            "Cannot tell which PostgreSQL binaries run %s." % data_directory,
            "Set exclusive_backup_bindir to the directory holding pg_ctl and postgres.")


def settings_text(port, socket_dir, hba_file, ident_file, restore_command):
    """The lines appended to postgresql.auto.conf of the throwaway copy (they win over the rest)."""
    settings = [
        ("port", str(port)),
        ("listen_addresses", "''"),
        ("unix_socket_directories", quote(socket_dir)),
        ("archive_mode", "'off'"),
        ("hba_file", quote(hba_file)),
        ("ident_file", quote(ident_file)),
        ("logging_collector", "'off'"),
        ("ssl", "'off'"),
        ("recovery_target", "'immediate'"),
        ("recovery_target_action", "'promote'"),
        ("restore_command", quote(restore_command or "")),
        ("cluster_name", "'pgexclusive-verify-restore'"),
    ]
    return "\n# pgexclusive.backup verify_restore\n" + "".join("%s = %s\n" % kv for kv in settings)


def quote(value):
    return "'" + value.replace("'", "''") + "'"


def rewrite_tablespace_map(text, new_locations):
    """tablespace_map lines '<oid> <path>' with the paths of ``new_locations`` (oid -> path)."""
    out = []
    for line in text.splitlines():
        oid, _sep, _path = line.partition(" ")
        out.append("%s %s" % (oid, new_locations[oid]) if oid in new_locations else line)
    return "\n".join(out) + ("\n" if out else "")


def _extract(archive, target):
    if not os.path.isdir(target):
        os.makedirs(target)
    if archive.endswith(".zst"):
        proc = subprocess.Popen(["tar", "--zstd", "-xf", archive, "-C", target], stderr=subprocess.PIPE)
        _out, err = proc.communicate()
        if proc.returncode != 0:
            raise BackupError("Cannot extract %s: %s" % (archive, err.decode("utf-8", "replace")), "Is zstd installed?")
        return
    with tarfile.open(archive) as tar:
        tar.extractall(target)


def materialize(backup_dir, work):
    """Lay the backup out as a data directory under ``work``; return (data_dir, {oid: tablespace dir})."""
    data = os.path.join(work, "data")
    tblspcs = {}
    plain = os.path.join(backup_dir, DATA_SUBDIR)
    if os.path.isdir(plain):
        shutil.copytree(plain, data, symlinks=True)
        source = os.path.join(backup_dir, TABLESPACES_SUBDIR)
        if os.path.isdir(source):
            for oid in os.listdir(source):
                tblspcs[oid] = os.path.join(work, "tablespaces", oid)
                shutil.copytree(os.path.join(source, oid), tblspcs[oid], symlinks=True)
        return data, tblspcs
    names = os.listdir(backup_dir)
    base = [n for n in names if n in ["base" + s for s in TAR_SUFFIX.values()]]
    if not base:
        raise BackupError("%s holds neither data/ nor base.tar: nothing to restore." % backup_dir,
                          "verify_restore checks tar, rsync and copy backups, not the command method's.")
    _extract(os.path.join(backup_dir, base[0]), data)
    for name in names:
        stem = name.split(".", 1)[0]
        if stem.isdigit() and ".tar" in name:
            tblspcs[stem] = os.path.join(work, "tablespaces", stem)
            _extract(os.path.join(backup_dir, name), tblspcs[stem])
        elif stem == "pg_wal" and ".tar" in name:
            _extract(os.path.join(backup_dir, name), os.path.join(data, "pg_wal"))
    return data, tblspcs


def _chown_tree(path, uid, gid):
    for root, dirs, files in os.walk(path):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            os.lchown(name, uid, gid)


def _as_user(uid, gid):
    def demote():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return demote


def verify_restore(backup_dir, data_directory, bindir=None, wal_archive_dir=None, work_parent=None,
                   timeout=300, keep=False, connect=None):
    """Restore ``backup_dir`` into a scratch directory, start it, and report.

    ``connect(socket_dir, port)`` returns a DB-API connection (psycopg2 in the module).
    """
    started = time.time()
    bindir = bindir or bindir_of_running_server(data_directory)
    pg_ctl = os.path.join(bindir, "pg_ctl")
    if not os.path.exists(pg_ctl):
        raise BackupError("There is no pg_ctl in %s." % bindir, "Set exclusive_backup_bindir.")
    owner = os.stat(data_directory)
    user = pwd.getpwuid(owner.st_uid).pw_name
    work = tempfile.mkdtemp(prefix="pgx-verify-", dir=work_parent or os.path.dirname(backup_dir.rstrip("/")))
    os.chmod(work, 0o700)
    pid = None
    log = os.path.join(work, "server.log")
    result = {"ok": False, "work_dir": work}
    try:
        data, tblspcs = materialize(backup_dir, work)
        map_file = os.path.join(data, TABLESPACE_MAP)
        if tblspcs and os.path.exists(map_file):
            with open(map_file) as handle:
                text = handle.read()
            with open(map_file, "w") as handle:
                handle.write(rewrite_tablespace_map(text, tblspcs))
        sock = os.path.join(work, "sock")
        os.mkdir(sock, 0o700)
        hba = os.path.join(work, "pg_hba.conf")
        ident = os.path.join(work, "pg_ident.conf")
        with open(hba, "w") as handle:
            # Only the owner and root can reach the private socket directory.
            handle.write("local all all trust\n")
        open(ident, "w").close()
        if not os.path.exists(os.path.join(data, "postgresql.conf")):
            open(os.path.join(data, "postgresql.conf"), "w").close()
        pg_wal = os.path.join(data, "pg_wal")
        if not os.path.isdir(pg_wal):
            os.mkdir(pg_wal)
        restore_command = ("cp %s/%%f %%p" % wal_archive_dir) if wal_archive_dir else ""
        port = free_port()
        with open(os.path.join(data, "postgresql.auto.conf"), "a") as handle:
            handle.write(settings_text(port, sock, hba, ident, restore_command))
        open(os.path.join(data, "recovery.signal"), "w").close()
        os.chmod(data, 0o700)
        _chown_tree(work, owner.st_uid, owner.st_gid)
        proc = subprocess.Popen([pg_ctl, "-D", data, "-l", log, "-w", "-t", str(int(timeout)), "start"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                preexec_fn=_as_user(owner.st_uid, owner.st_gid), cwd=work)
        out, _err = proc.communicate()
        pid = _postmaster_pid(data)
        if proc.returncode != 0:
            raise BackupError("The restored copy did not start: %s%s" % (out.decode("utf-8", "replace"), log_tail(log)),
                              "The backup is not restorable as it is: keep it aside and take a new one.")
        deadline = time.time() + timeout
        while True:
            try:
                conn = connect(sock, port)
                try:
                    cur = conn.cursor()
                    cur.execute("SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_database), "
                                "current_setting('server_version')")
                    in_recovery, databases, version = cur.fetchone()
                finally:
                    conn.close()
                if not in_recovery:
                    break
            except BackupError:
                raise
            except Exception as exc:   # still starting up: psycopg2 raises OperationalError
                last = str(exc)
                if _postmaster_pid(data) is None:
                    raise BackupError("The restored copy stopped during recovery: %s%s" % (last, log_tail(log)),
                                      "The backup is not restorable as it is: keep it aside and take a new one.")
            if time.time() > deadline:
                raise BackupError("The restored copy did not finish recovery in %ss.%s" % (timeout, log_tail(log)),
                                  "Raise the timeout, or check that the WAL up to the backup's stop is available.")
            time.sleep(0.2)
        result.update(ok=True, consistent=True, databases=databases, server_version=version,
                      user=user, port=port, duration=round(time.time() - started, 3),
                      log=log_tail(log, 15).strip().splitlines())
        return result
    finally:
        pid = pid or _postmaster_pid(os.path.join(work, "data"))
        if pid:
            _stop(pid, pg_ctl, os.path.join(work, "data"), owner)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _postmaster_pid(data):
    try:
        with open(os.path.join(data, "postmaster.pid")) as handle:
            return int(handle.readline().strip())
    except (IOError, OSError, ValueError):
        return None


def _stop(pid, pg_ctl, data, owner):
    """Stop the throwaway server by its PID: immediate, it is thrown away."""
    subprocess.call([pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    preexec_fn=_as_user(owner.st_uid, owner.st_gid))
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def log_tail(path, lines=30):
    try:
        with open(path) as handle:
            return "\n--- restored server log ---\n" + "".join(handle.readlines()[-lines:])
    except (IOError, OSError):
        return ""
