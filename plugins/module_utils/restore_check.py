# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""verify_restore: start a throwaway server on a copy of a backup and see it reach consistency.

A drill over the restore engine: the copy is laid out by the engine's
restore_layout.lay_out (tablespaces under the scratch directory) and gets the
engine's 15+ label fix (restore.needs_label_fix); what is the drill's own is
the isolation below and the throwaway server's minimal configuration.

Nothing the check runs writes outside its scratch directory (DESIGN.md,
"Nothing outside our own"): not the live data directory, not the target of its
pg_wal link, not a tablespace, not the WAL archive. So, before the server starts:
the copy's pg_wal (and the other directories a backup leaves empty) is a real
directory of its own, never a link; every pg_tblspc/<oid> link and
tablespace_map line names the copy's own tablespace directory; any other link
out of the scratch directory stops the check; the copy's postgresql.conf is
replaced by a minimal one written here and postgresql.auto.conf emptied, so
nothing of the live configuration (include files, ALTER SYSTEM settings,
archive and cleanup commands) applies; restore_command only reads the archive.

The throwaway server runs as the owner of the live data directory, on a free
local port, on a Unix socket in a private directory, with no TCP listener,
recovery_target = 'immediate' and recovery_target_action = 'promote'. Its WAL
comes from the backup's own pg_wal/ (include_wal) and/or the WAL archive. It is
stopped by its PID and its directory removed, whatever happened.

Errors carry ``check_ran``: false when no server was started on the copy, so
the outcome says nothing about whether the backup restores.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import pwd
import shutil
import subprocess
import tempfile
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import EMPTY_DIRS
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    LABEL_FILE, TABLESPACE_MAP, restorable_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import connect_socket
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import needs_label_fix
# The restore engine's parts the drill is made of (and what this file held before they moved there).
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_layout import (  # noqa: F401
    lay_out, links_out_of, real_directory, rewrite_tablespace_map, tablespaces_without_copy,
    write_new as _write_new, chown_tree as _chown_tree)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_server import (  # noqa: F401
    as_user as _as_user, free_port, log_tail, owner_can as _owner_can, postmaster_pid as _postmaster_pid,
    stop as _stop)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_target import (  # noqa: F401
    quote, restore_command_for)
from ansible_collections.pgexclusive.backup.plugins.module_utils import restore_layout

CONF = "postgresql.conf"
AUTO_CONF = "postgresql.auto.conf"
# The copy's own configuration files are moved here, out of the server's reach, for a person to read.
LIVE_CONFIG_SUBDIR = "live-config"
NOT_RESTORABLE = "The backup is not restorable as it is: keep it aside and take a new one."


def bindir_of_running_server(data_directory):
    """The directory of the running postmaster's binary (its pg_ctl sits beside it)."""
    try:
        return os.path.dirname(os.readlink("/proc/%d/exe" % _postmaster_pid(data_directory)))
    except (IOError, OSError, TypeError):
        raise cannot_run("which PostgreSQL binaries run %s cannot be told" % data_directory,
                         "Set exclusive_backup_bindir to the directory holding pg_ctl and postgres.")


def settings_text(port, socket_dir, hba_file, ident_file, restore_command):
    """The whole postgresql.conf of the throwaway server: nothing of the live configuration.

    The live one may include files, name a data_directory or an
    external_pid_file, preload libraries this host cannot load, archive or
    clean up the archive, and ask for more memory than a second server gets.
    hot_standby is off: with it, recovery refuses (14+: pauses) when
    max_connections and the other limits are below the live server's, and no
    one connects before the promotion anyway. fsync is off: the copy is thrown
    away.
    """
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
        ("restore_command", quote(restore_command)),
        ("cluster_name", "'pgexclusive-verify-restore'"),
        ("max_connections", "10"),
        ("shared_buffers", "'16MB'"),
        ("hot_standby", "'off'"),
        ("fsync", "'off'"),
    ]
    return "# pgexclusive.backup verify_restore\n" + "".join("%s = %s\n" % kv for kv in settings)


def no_tablespace_copy(oid, path):
    return BackupError(
        "The restore check could not run: the backup holds no copy of tablespace %s (%s), and a server "
        "started on it would write into that live tablespace." % (oid, path),
        "A backup without its tablespaces does not restore on its own: take it with the tar, rsync or copy "
        "method to a local destination, which copy every tablespace.", check_ran=False)


def cannot_run(reason, hint):
    """The check stopped before a server started on the copy, for a reason outside the backup."""
    return BackupError("The restore check could not run: %s. This says nothing about the backup itself." % reason,
                       hint, check_ran=False)


def not_restorable(msg):
    return BackupError(msg, NOT_RESTORABLE, check_ran=True)


def materialize(backup_dir, work):
    """Lay the backup out as a data directory under ``work``; return (data_dir, {oid: tablespace dir}).

    The engine's layout (restore_layout.lay_out) with every tablespace under
    ``work/tablespaces``; a failure there means the check could not run.
    """
    data = os.path.join(work, "data")
    try:
        tblspcs = lay_out(backup_dir, data, lambda oid: os.path.join(work, "tablespaces", oid))
    except BackupError as exc:
        raise as_check_error(exc)
    return data, tblspcs


def as_check_error(exc):
    """An engine error met before any server started: the check could not run."""
    if "check_ran" in exc.facts:
        return exc
    return BackupError("The restore check could not run: %s" % exc.msg, exc.hint, check_ran=False)


def relink_tablespaces(data, tblspcs):
    """The engine's relink; a link without a copy means the check could not run."""
    try:
        restore_layout.relink_tablespaces(data, tblspcs)
    except BackupError as exc:
        raise as_check_error(exc)


def isolate(work, data, tblspcs):
    """Leave no way out of ``work`` for the server (see the module's docstring); refuse when one remains."""
    for name in EMPTY_DIRS:
        real_directory(os.path.join(data, name))
    relink_tablespaces(data, tblspcs)
    map_file = os.path.join(data, TABLESPACE_MAP)
    if os.path.lexists(map_file):
        with open(map_file) as handle:
            text = handle.read()
        missing = tablespaces_without_copy(text, tblspcs)
        if missing:
            raise no_tablespace_copy(missing[0]["oid"], missing[0]["path"])
        os.unlink(map_file)
        _write_new(map_file, rewrite_tablespace_map(text, tblspcs))
    aside = os.path.join(work, LIVE_CONFIG_SUBDIR)
    os.mkdir(aside, 0o700)
    for name in (CONF, AUTO_CONF):
        # rename moves a link itself: the file it names is neither read nor changed.
        if os.path.lexists(os.path.join(data, name)):
            os.rename(os.path.join(data, name), os.path.join(aside, name))
    outside = links_out_of(data, work) + [p for path in sorted(tblspcs.values()) for p in links_out_of(path, work)]
    if outside:
        raise BackupError(
            "The restore check could not run: the copy links out of its scratch directory (%s), and a server "
            "started on it could write there." % ", ".join(outside),
            "What such a link names is not in the backup: leave it out of the backups (exclusive_backup_exclude) "
            "or keep that data inside the data directory.", check_ran=False)


def _locate_pg_ctl(data_directory, bindir):
    try:
        owner = os.stat(data_directory)
    except OSError as exc:
        raise cannot_run("the live data directory cannot be read (%s)" % exc, "Check data_directory.")
    bindir = bindir or bindir_of_running_server(data_directory)
    pg_ctl = os.path.join(bindir, "pg_ctl")
    if not os.path.exists(pg_ctl):
        raise cannot_run("there is no pg_ctl in %s" % bindir, "Set exclusive_backup_bindir.")
    return owner, pg_ctl


def prepare(backup_dir, work, sock, port, wal_archive_dir, owner):
    """The scratch copy, isolated and configured, owned by ``owner``, listening in ``sock``; returns its data_dir."""
    data, tblspcs = materialize(backup_dir, work)
    isolate(work, data, tblspcs)
    hba = os.path.join(work, "pg_hba.conf")
    ident = os.path.join(work, "pg_ident.conf")
    # Only the owner and root can reach the private socket directory.
    _write_new(hba, "local all all trust\n")
    _write_new(ident, "")
    _write_new(os.path.join(data, CONF),
               settings_text(port, sock, hba, ident, restore_command_for(wal_archive_dir)))
    _write_new(os.path.join(data, AUTO_CONF), "")
    fix_label_of_copy(data)
    if not os.path.lexists(os.path.join(data, "recovery.signal")):
        _write_new(os.path.join(data, "recovery.signal"), "")
    os.chmod(data, 0o700)
    _chown_tree(work, owner.st_uid, owner.st_gid)
    os.chown(sock, owner.st_uid, owner.st_gid)
    return data


def fix_label_of_copy(data):
    """The engine's 15+ label fix, in the copy, when its backup_label still says pg_start_backup."""
    path = os.path.join(data, LABEL_FILE)
    if not os.path.isfile(path) or os.path.islink(path):
        return False
    with open(path) as handle:
        text = handle.read()
    with open(os.path.join(data, "PG_VERSION")) as handle:
        major = int((handle.read().strip() or "0").split(".")[0])
    if not needs_label_fix(text, major):
        return False
    os.unlink(path)
    _write_new(path, restorable_label(text))
    return True


def verify_restore_argument_spec():
    return dict(
        backup_dir=dict(type="path", required=True),
        data_directory=dict(type="path", required=True),
        bindir=dict(type="path"),
        wal_archive_dir=dict(type="path"),
        work_dir=dict(type="path"),
        timeout=dict(type="int", default=300),
        keep=dict(type="bool", default=False),
    )


def verify_restore_task(params, check_mode):
    """pg_verify_restore's task; check mode starts nothing."""
    if check_mode:
        return dict(changed=False, ok=None, check_ran=False, msg="Check mode: no restore started.")
    try:
        result = verify_restore(params["backup_dir"], params["data_directory"], params["bindir"],
                                params["wal_archive_dir"], params["work_dir"], params["timeout"], params["keep"],
                                connect_socket)
    except BackupError as exc:
        exc.facts.setdefault("ok", False)
        raise
    return dict(result, changed=False)


def verify_restore(backup_dir, data_directory, bindir=None, wal_archive_dir=None, work_parent=None,
                   timeout=300, keep=False, connect=None):
    """Restore ``backup_dir`` into a scratch directory, start it, and report.

    ``connect(socket_dir, port)`` returns a DB-API connection (psycopg2 in the module).
    """
    started = time.time()
    owner, pg_ctl = _locate_pg_ctl(data_directory, bindir)
    user = pwd.getpwuid(owner.st_uid).pw_name
    parent = work_parent or os.path.dirname(backup_dir.rstrip("/"))
    try:
        work = tempfile.mkdtemp(prefix="pgx-verify-", dir=parent)
    except OSError as exc:
        raise cannot_run("no scratch directory in %s (%s)" % (parent, exc), "Set work_dir to a writable directory.")
    data = os.path.join(work, "data")
    pid = sock = None
    log = os.path.join(work, "server.log")
    result = {"ok": False, "work_dir": work}
    try:
        os.chmod(work, 0o700)
        os.chown(work, owner.st_uid, owner.st_gid)
        # Asked first, as the server's user, before copying anything: pg_ctl's own error would come
        # after a whole copy and read like a broken backup.
        if not _owner_can(owner, ["-r", work, "-a", "-w", work, "-a", "-x", work]):
            raise cannot_run("the OS user %s cannot enter %s" % (user, work),
                             "Set work_dir (the role: exclusive_backup_verify_restore_work_dir) to a directory %s can "
                             "enter (every directory on the way open to it); the default is the parent of the "
                             "backup directory." % user)
        if not _owner_can(owner, ["-x", pg_ctl]):
            raise cannot_run("the OS user %s cannot run %s" % (user, pg_ctl), "Set exclusive_backup_bindir.")
        port = free_port()
        # A socket path is limited to 107 bytes: beside a backup with a long label it would not fit, so the
        # private socket directory is a short one of its own.
        sock = tempfile.mkdtemp(prefix="pgx-sock-")
        try:
            data = prepare(backup_dir, work, sock, port, wal_archive_dir, owner)
        except (IOError, OSError, shutil.Error) as exc:
            raise cannot_run("the scratch copy could not be laid out (%s)" % exc,
                             "Check the space and permissions of %s." % parent)
        proc = subprocess.Popen([pg_ctl, "-D", data, "-l", log, "-w", "-t", str(int(timeout)), "start"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                preexec_fn=_as_user(owner.st_uid, owner.st_gid), cwd=work)
        out, _err = proc.communicate()
        pid = _postmaster_pid(data)
        if proc.returncode != 0:
            raise not_restorable("The restored copy did not start: %s%s" % (out.decode("utf-8", "replace"), log_tail(log)))
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
                    raise not_restorable("The restored copy stopped during recovery: %s%s" % (last, log_tail(log)))
            if time.time() > deadline:
                raise BackupError("The restored copy did not finish recovery in %ss.%s" % (timeout, log_tail(log)),
                                  "Raise the timeout, or check that the WAL up to the backup's stop is available.",
                                  check_ran=True)
            time.sleep(0.2)
        result.update(ok=True, check_ran=True, consistent=True, databases=databases, server_version=version,
                      user=user, port=port, duration=round(time.time() - started, 3),
                      log=log_tail(log, 15).strip().splitlines())
        return result
    finally:
        pid = pid or _postmaster_pid(data)
        if pid:
            _stop(pid, pg_ctl, data, owner)
        if sock is not None:
            shutil.rmtree(sock, ignore_errors=True)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
