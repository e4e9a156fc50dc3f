# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore: the restore engine. One backup of this collection back into a data directory, to a point in time.

Steps, each timed (``durations``): choose the backup (a backup directory, or
the newest complete one of a cluster under ``dest``), check the target (no
postmaster running there, empty; ``force`` renames a non-empty one aside, never
deletes it), lay the backup out (restore_layout.py: plain or tar, gzip or zstd,
tablespaces at their own or remapped paths, pg_wal a real directory, optionally
elsewhere and linked as initdb --waldir does), make it recover (backup_label
kept, and fixed on 15+ while it still says pg_start_backup; recovery.signal;
the recovery settings of restore_target.py appended to postgresql.auto.conf,
archiving off), then optionally start it and wait until it reaches its
target, and report where it stopped.

The restore drill (restore_check.py: the backup role's restore check, and
pg_verify_restore) is this engine run into a throwaway directory, with the
options that keep a server started there from writing anywhere else:
``tablespaces_under`` (every tablespace under one directory),
``confine_to`` (no link of the copy may lead out of that directory) and
``minimal_config`` (the copy's own configuration set aside; the server reads
only the recovery settings and ``settings``). ``record`` gives the backup's
facts when its backup.json is not written yet (the backup role checks a
restore before it writes the record).

What can be known before anything is written is checked first: the target,
the backup, and the WAL from its start to its stop, so that a restore that
cannot succeed leaves the target directory (and what force would set aside)
as it was.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import pwd
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import EMPTY_DIRS
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    LABEL_FILE, TABLESPACE_MAP, parse_backup_label, parse_tablespace_map, restorable_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import DATA_SUBDIR
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import (
    COMPLETE, RECORD_FILE, read_record, scan_backups)
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_wal import segments_between
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_layout import (
    chown_tree, lay_out, links_out_of, real_directory, relink_tablespaces, rewrite_tablespace_map,
    tablespaces_without_copy, write_new)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_server import (
    acting_as, alive, listening, log_tail, postmaster_pid, read_log, running_postmaster, start, stop)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_target import (
    ACTIONS, TARGETS, before_backup_end_error, check_target, explain_recovery_failure, recovery_settings,
    replay_end_in_log, restore_command_for, settings_block, target_before_backup_end)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore_verify import verify_backup
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal import infer_segment_size

CONF = "postgresql.conf"
AUTO_CONF = "postgresql.auto.conf"
# With minimal_config, the copy's own configuration files are moved here, out of the server's reach, for a
# person to read.
LIVE_CONFIG_SUBDIR = "live-config"
MINIMAL_CONFIG_TITLE = "pgexclusive.backup restore: the whole configuration of a throwaway server"
SETTINGS_TITLE = "pgexclusive.backup restore: recovery settings (remove once the restore is done)"


# -- which backup ---------------------------------------------------------------

def latest_complete(records, system_identifier=None):
    """The label of the newest complete backup among ``records`` (label -> backup.json), of one cluster.

    Without ``system_identifier`` the complete backups must all be of one
    cluster; otherwise that is refused, as taking another cluster's backup
    would be.
    """
    complete = {label: r for label, r in records.items() if r and r.get("status") == COMPLETE}
    if system_identifier:
        complete = {label: r for label, r in complete.items()
                    if str(r.get("system_identifier") or "") == str(system_identifier)}
    else:
        clusters = sorted(set(str(r.get("system_identifier")) for r in complete.values()))
        if len(clusters) > 1:
            raise BackupError("The destination holds complete backups of %d clusters (system identifiers %s)."
                              % (len(clusters), ", ".join(clusters)),
                              "Set system_identifier to the cluster to restore, or name the backup directory.")
    if not complete:
        raise BackupError("There is no complete backup%s in the destination." % (
            " of the cluster with system identifier %s" % system_identifier if system_identifier else ""),
            "Check dest and system_identifier (backup.json of each backup names its cluster), or name a backup "
            "directory.")
    return max(complete, key=lambda label: (complete[label].get("finished_at") or "", label))


def choose_backup(backup_dir=None, dest=None, system_identifier=None, allow_incomplete=False):
    """(backup directory, its backup.json) to restore; refuses a backup that is not complete."""
    if bool(backup_dir) == bool(dest):
        raise BackupError("Give either backup_dir or dest, not both and not neither.",
                          "backup_dir restores that backup; dest restores the newest complete backup under it.")
    if dest:
        backup_dir = os.path.join(dest, latest_complete(scan_backups(dest), system_identifier))
    record = read_record(backup_dir)
    if record is None:
        raise BackupError("%s holds no readable %s." % (backup_dir, RECORD_FILE),
                          "Name a backup directory this collection wrote (<dest>/<label>).")
    if record.get("status") != COMPLETE and not allow_incomplete:
        raise BackupError("The backup %s is not complete (status %s: %s)." % (
            backup_dir, record.get("status"), record.get("error") or "no reason recorded"),
            "Restore a complete backup. Only to salvage data, set allow_incomplete: true; such a restore may "
            "not reach consistency.")
    if system_identifier and str(record.get("system_identifier") or "") != str(system_identifier):
        raise BackupError("The backup %s is of the cluster %s, not %s." % (
            backup_dir, record.get("system_identifier"), system_identifier),
            "Name a backup of the cluster to restore, or leave system_identifier out.")
    return backup_dir, record


# -- where to ---------------------------------------------------------------

def aside_name(path, stamp):
    return "%s.pgx-aside-%s" % (path.rstrip("/"), stamp)


def check_target_dir(path, force, stamp, what="target data directory"):
    """Refuse ``path`` when a postmaster runs there, or when not empty (unless ``force``: then rename it aside).

    Returns the name it was set aside under, or None.
    """
    pid = running_postmaster(path)
    if pid:
        raise BackupError("A postmaster (PID %s) runs on the %s %s." % (pid, what, path),
                          "Stop that server first, or restore into another directory; a restore never "
                          "touches a running server's files, not even with force.")
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path) or os.path.islink(path):
        raise BackupError("The %s %s exists and is not a directory." % (what, path),
                          "Give a directory, or a path that does not exist yet.")
    if not os.listdir(path):
        return None
    if not force:
        raise BackupError("The %s %s is not empty." % (what, path),
                          "Give an empty or new directory, or set force: true to rename it aside "
                          "(<path>.pgx-aside-<time>; nothing is deleted).")
    aside = aside_name(path, stamp)
    os.rename(path, aside)
    return aside


def tablespace_targets(map_text, mapping):
    """oid -> where each tablespace of tablespace_map goes: ``mapping`` by oid or by old path, else its old path."""
    mapping = dict((str(k), v) for k, v in (mapping or {}).items())
    return dict((str(e["oid"]), mapping.get(str(e["oid"]), mapping.get(e["path"], e["path"])))
                for e in parse_tablespace_map(map_text))


def needs_label_fix(label_text, major):
    """15+ recovery needs 'streamed' to wait for the end of the backup (DESIGN.md)."""
    return major >= 15 and "BACKUP METHOD: pg_start_backup" in label_text


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def _major(data):
    text = _read(os.path.join(data, "PG_VERSION")) or ""
    try:
        return int(text.strip().split(".")[0])
    except ValueError:
        raise BackupError("The restored copy has no readable PG_VERSION.",
                          "The backup is damaged: keep it aside and restore another one.")


def wal_needed(record):
    """The WAL segments from the backup's start to its stop (one timeline), or [] when backup.json lacks them."""
    start, stop_file = record.get("start_wal_file"), record.get("stop_wal_file")
    size = infer_segment_size(record.get("start_lsn"), start) if start else None
    if not (start and stop_file and size):
        return []
    return segments_between(start, stop_file, size)


def missing_wal(needed, places, included=()):
    """The first of ``needed`` in none of the directories ``places`` and not in ``included``, or None."""
    for name in needed:
        if name not in included and not any(os.path.exists(os.path.join(place, name)) for place in places if place):
            return name
    return None


def wal_in_backup(backup_dir, record):
    """The WAL segments the backup holds itself (include_wal): those backup.json lists (in pg_wal.tar or
    data/pg_wal/), and whatever a plain copy's data/pg_wal/ holds; read before anything is laid out."""
    names = set(record.get("wal_included") or [])
    try:
        names.update(os.listdir(os.path.join(backup_dir, DATA_SUBDIR, "pg_wal")))
    except (IOError, OSError):
        pass   # a tar backup, or a plain one without WAL
    return names


def check_wal_at_hand(params, backup_dir, record):
    """Refuse a backup whose WAL up to its stop is neither in the archive directory nor in the backup.

    Without it recovery never becomes consistent. Checked before anything is
    laid out; a custom restore_command fetches from where only it knows, so
    its WAL is left to recovery to find.
    """
    if params.get("restore_command"):
        return
    archive = params.get("wal_archive_dir")
    missing = missing_wal(wal_needed(record), [archive], wal_in_backup(backup_dir, record))
    if missing:
        raise BackupError(
            "The WAL segment %s, which the backup needs up to its stop, is neither in the archive (%s) nor "
            "in the backup. Nothing was restored." % (missing, archive or "none given"),
            "Give the WAL archive that holds it (wal_archive_dir or restore_command), or restore a backup "
            "taken with include_wal.", missing_wal=missing)


# libpq's words for a server that is up but will not let this role in; before consistency it says
# "the database system is starting up" / "not yet accepting connections" instead, which is waited out.
REFUSED_LOGIN = ("authentication failed", "no pg_hba.conf entry", "does not exist", "permission denied",
                 "password authentication", "no password supplied")


def refused_login(message):
    """True when a connection error says the server refuses this login, not that it is still starting."""
    text = (message or "").lower()
    return any(words in text for words in REFUSED_LOGIN)


def socket_refused(message):
    """True when the OS, not the server, refused the connection: EACCES on the socket or a directory above it."""
    return "permission denied" in (message or "").lower() and "FATAL" not in (message or "")


def login_role(params, owner_name):
    """The role the restore connects to the restored server as: login_user, else the OS user that owns the
    restored data directory. initdb names the bootstrap superuser after the OS user that ran it, and peer
    authentication admits that OS user as the role of its own name."""
    return params.get("login_user") or owner_name


# -- the engine ---------------------------------------------------------------

class Restore(object):
    """One restore; ``run`` returns the result dict. ``connect(socket_dir, port)`` is a DB-API connection."""

    def __init__(self, params, connect):
        self.p = params
        self.connect = connect
        self.durations = {}
        self.result = {"changed": False}
        # The step running, or the one that failed: a caller tells a failure before the server started from one after.
        self.step = None
        # Why the restored server could not be asked where it is, the last time it could not.
        self.last_error = None
        # Asked with the owner's uid (peer authentication) until the OS refuses the owner the socket.
        self.as_owner = True

    def _timed(self, step, func, *args):
        self.step = step
        started = time.time()
        try:
            return func(*args)
        finally:
            self.durations[step] = round(time.time() - started, 3)

    def run(self):
        p = self.p
        check_target(p)
        if p.get("record") is not None:
            backup_dir, record = p["backup_dir"], p["record"]
        else:
            backup_dir, record = self._timed("choose", choose_backup, p.get("backup_dir"), p.get("dest"),
                                             p.get("system_identifier"), p.get("allow_incomplete"))
        why = target_before_backup_end(p, record)
        if why:
            raise before_backup_end_error(why)
        if p.get("verify", True):
            self.result["verified"] = self._timed("verify", verify_backup, backup_dir, record,
                                                  _find_tool(p.get("bindir"), "pg_verifybackup"), p.get("timeout") or 3600)
        owner = _owner(p.get("owner") or "postgres")
        pg_ctl = _pg_ctl(p.get("bindir")) if p.get("start", True) else None
        data = p["data_directory"].rstrip("/") or "/"
        self.result.update(backup_dir=backup_dir, label=record.get("label"), data_directory=data,
                           system_identifier=record.get("system_identifier"), target=p.get("target") or "immediate")
        self._timed("check_wal", check_wal_at_hand, p, backup_dir, record)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = self._timed("check_target", self._check_targets, data, stamp)
        self.result.update(set_aside=aside, changed=True, durations=self.durations)
        self._timed("lay_out", self._lay_out, backup_dir, data, owner)
        if not p.get("start", True):
            self.result.update(started=False)
            return self.result
        self._timed("recover", self._recover, pg_ctl, data, owner)
        return self.result

    def _check_targets(self, data, stamp):
        aside = {}
        places = [("data_directory", data)]
        if self.p.get("waldir"):
            places.append(("waldir", self.p["waldir"]))
        for name, path in places:
            moved = check_target_dir(path, self.p.get("force"), stamp, name.replace("_", " "))
            if moved:
                aside[name] = moved
        return aside

    def _lay_out(self, backup_dir, data, owner):
        p = self.p
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        if not os.path.isdir(data):
            os.makedirs(data, 0o700)
        targets = {}
        placed = []

        def tablespace_dir(oid):
            if p.get("tablespaces_under"):
                targets[oid] = os.path.join(p["tablespaces_under"], oid)
            elif not targets:
                # base.tar (or data/) is laid out before any tablespace: its tablespace_map says where they were.
                text = _read(os.path.join(data, TABLESPACE_MAP)) or ""
                targets.update(tablespace_targets(text, p.get("tablespace_mapping")))
            path = targets.get(oid)
            if not path:
                raise BackupError("The backup holds tablespace %s but its tablespace_map does not name it." % oid,
                                  "Give its new path in tablespace_mapping (oid: path).")
            moved = check_target_dir(path, p.get("force"), stamp, "tablespace directory")
            if moved:
                self.result["set_aside"]["tablespace %s" % oid] = moved
            placed.append(path)
            return path

        tblspcs = lay_out(backup_dir, data, tablespace_dir)
        # A copy of a data directory may link these to the live server's (pg_wal of initdb --waldir): each
        # becomes a directory of the copy's own, and only then may pg_wal move to waldir.
        for name in EMPTY_DIRS:
            real_directory(os.path.join(data, name))
        self._place_wal(data)
        relink_tablespaces(data, tblspcs)
        map_file = os.path.join(data, TABLESPACE_MAP)
        if os.path.lexists(map_file):
            text = _read(map_file) or ""
            missing = tablespaces_without_copy(text, tblspcs)
            if missing:
                raise BackupError(
                    "The backup holds no copy of tablespace %s (%s): it cannot be restored on its own."
                    % (missing[0]["oid"], missing[0]["path"]),
                    "Restore a backup taken with the tar, rsync or copy method to a local destination, "
                    "which copy every tablespace.")
            os.unlink(map_file)
            write_new(map_file, rewrite_tablespace_map(text, tblspcs))
        self.result["tablespaces"] = dict(sorted(tblspcs.items()))
        config_files = self._make_it_recover(data)
        if p.get("confine_to"):
            self._confine(data, tblspcs, p["confine_to"])
        for path in [data] + placed + ([p["waldir"]] if p.get("waldir") else []):
            if os.geteuid() == 0:
                chown_tree(path, owner.pw_uid, owner.pw_gid)
            os.chmod(path, 0o700)
        if os.geteuid() == 0:
            for path in config_files:
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def _confine(self, data, tblspcs, inside):
        """Refuse a copy with a link leading out of ``inside``: a server started on it could write there."""
        outside = links_out_of(data, inside) + [
            found for path in sorted(tblspcs.values()) for found in links_out_of(path, inside)]
        if outside:
            raise BackupError(
                "The copy links out of its scratch directory (%s), and a server started on it could write there."
                % ", ".join(outside),
                "What such a link names is not in the backup: leave it out of the backups (exclusive_backup_exclude) "
                "or keep that data inside the data directory.")

    def _place_wal(self, data):
        """pg_wal is a real directory (lay_out); with waldir, its content moves there and pg_wal links to it."""
        pg_wal = os.path.join(data, "pg_wal")
        waldir = self.p.get("waldir")
        if waldir:
            if not os.path.isdir(waldir):
                os.makedirs(waldir, 0o700)
            for name in os.listdir(pg_wal):
                os.rename(os.path.join(pg_wal, name), os.path.join(waldir, name))
            os.rmdir(pg_wal)
            os.symlink(waldir, pg_wal)
        status = os.path.join(pg_wal, "archive_status")
        if not os.path.isdir(status):
            os.mkdir(status, 0o700)
        self.result["waldir"] = waldir or pg_wal

    def _make_it_recover(self, data):
        """backup_label, recovery.signal and the recovery settings; returns the configuration files written
        outside ``data`` (minimal_config), for the server's owner to read."""
        p = self.p
        label_file = os.path.join(data, LABEL_FILE)
        label = _read(label_file)
        if label is None:
            raise BackupError("The restored copy has no backup_label: it is not an exclusive backup of this "
                              "collection, and recovery would not know where to start.",
                              "Restore a backup this collection took; never remove backup_label from a copy.")
        fixed = needs_label_fix(label, _major(data))
        if fixed:
            os.unlink(label_file)
            write_new(label_file, restorable_label(label))
        self.result["label_fixed"] = fixed
        self.result["backup_label"] = parse_backup_label(label)
        for name in ("postmaster.pid", "postmaster.opts", "standby.signal"):
            if os.path.lexists(os.path.join(data, name)):
                os.unlink(os.path.join(data, name))
        if not os.path.lexists(os.path.join(data, "recovery.signal")):
            write_new(os.path.join(data, "recovery.signal"), "")
        command = p.get("restore_command") or restore_command_for(p.get("wal_archive_dir"))
        settings = recovery_settings(p, command) + [
            (k, _conf_value(v)) for k, v in sorted((p.get("settings") or {}).items())]
        written = []
        if p.get("minimal_config"):
            written, settings = replace_config(data, p["minimal_config"], settings)
        else:
            auto = os.path.join(data, AUTO_CONF)
            text = _read(auto) or ""
            if os.path.lexists(auto):
                os.unlink(auto)
            write_new(auto, text + ("" if not text or text.endswith("\n") else "\n")
                      + settings_block(settings, SETTINGS_TITLE))
        self.result["restore_command"] = command
        self.result["settings"] = dict(settings)
        return written

    def _recover(self, pg_ctl, data, owner):
        p = self.p
        log = p.get("log_file") or data + ".restore.log"
        if os.path.lexists(log):
            os.unlink(log)
        write_new(log, "", 0o600)
        if os.geteuid() == 0:
            os.chown(log, owner.pw_uid, owner.pw_gid)
        self.result["log_file"] = log
        rc, out = start(pg_ctl, data, log, _Owner(owner), os.path.dirname(data))
        if rc != 0:
            raise BackupError("The restored server did not start: %s%s" % (out.strip(), log_tail(log)),
                              "Read the log above: the settings (port, memory) or binaries of another major.")
        timeout = p.get("timeout") or 3600
        deadline = time.time() + timeout
        action = p.get("target_action") or "promote"
        started = time.time()
        pid = None
        while True:
            pid = pid or postmaster_pid(data)
            if (pid and not alive(pid)) or (pid is None and time.time() > started + 10):
                return self._ended(log, action)
            state = self._state(data, owner)
            if state is not None:
                in_recovery, paused = state[0], state[1]
                if not in_recovery or (action == "pause" and paused):
                    self._report(state)
                    return None
            if time.time() > deadline:
                raise BackupError("The restored server did not reach its recovery target in %ss.%s%s"
                                  % (timeout, log_tail(log), "\nThe last connection attempt: %s" % self.last_error
                                     if self.last_error else ""),
                                  "It is still running (PID %s) and replaying: raise timeout, or stop it with pg_ctl "
                                  "-D %s stop and check that the WAL up to the target is available." % (pid, data),
                                  timed_out=True)
            time.sleep(0.3)

    def _ended(self, log, action):
        text = read_log(log)
        if action == "shutdown" and "database system is shut down" in text and "recovery stopping" in text:
            self.result.update(started=True, running=False, promoted=False, reached=_stopping_line(text))
            return None
        explained = explain_recovery_failure(text)
        if explained:
            raise BackupError(explained[0] + log_tail(log), explained[1], replay_end=replay_end_in_log(text))
        raise BackupError("The restored server stopped during recovery.%s" % log_tail(log),
                          "Read the log above; the data directory is left as it is for a person to look at.")

    def _state(self, data, owner):
        sock, port = listening(data)
        if not port:
            return None
        role = login_role(self.p, owner.pw_name)
        try:
            conn = self._connect(sock, port, role, owner)
        except Exception as exc:   # still starting or replaying before consistency: psycopg2 raises OperationalError
            self.last_error = str(exc).strip()
            if refused_login(self.last_error):
                raise BackupError(
                    "The restored server runs but refused the restore's connection as role %s (through %s, port %s, "
                    "as OS user %s): %s" % (role, sock or "127.0.0.1", port, owner.pw_name, self.last_error),
                    "Set login_user (the role: restore_login_user) to a role that the restored pg_hba.conf admits "
                    "over the Unix socket from OS user %s. The server is left running: stop it with pg_ctl -D %s "
                    "stop, or connect yourself to see where it is." % (owner.pw_name, data), login_refused=True)
            return None
        try:
            cur = conn.cursor()
            cur.execute("SELECT current_setting('server_version_num')::int")
            # 14 tells a pause asked for from one reached; 10 to 13 (which the drill restores too) only the former.
            paused = ("pg_get_wal_replay_pause_state() = 'paused'" if cur.fetchone()[0] >= 140000
                      else "pg_is_wal_replay_paused()")
            cur.execute("SELECT pg_is_in_recovery(), pg_is_in_recovery() AND " + paused + ", "
                        "pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text, "
                        "CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint()) "
                        "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, "
                        "current_setting('server_version')")
            return cur.fetchone() + (sock, port)
        except Exception:
            return None
        finally:
            conn.close()

    def _connect(self, sock, port, role, owner):
        """A connection as ``role``, made with the owner's uid; with the module's own when the OS refuses the owner
        the socket.

        The owner's uid is what peer authentication needs. On the fleet test
        bed's hosts (a module run over ssh and sudo) the owner's uid was refused
        the socket with EACCES although the server had made it there as that
        same user; root reaches it, and trust or password authentication admit
        root as any role.
        """
        if self.as_owner:
            try:
                with acting_as(_Owner(owner)):
                    return self.connect(sock or "127.0.0.1", port, role)
            except Exception as exc:
                if os.geteuid() != 0 or not socket_refused(str(exc)):
                    raise
                self.as_owner = False
        return self.connect(sock or "127.0.0.1", port, role)

    def _report(self, state):
        in_recovery, paused, lsn, when, timeline, version, sock, port = state
        self.result.update(started=True, running=True, promoted=not in_recovery, paused=bool(paused),
                           reached_lsn=lsn, reached_time=when, timeline=timeline, server_version=version,
                           socket_dir=sock, port=port)


def replace_config(data, config_dir, settings):
    """The whole configuration of a throwaway server: nothing of the copy's own applies.

    The copy's postgresql.conf and postgresql.auto.conf may include files, name
    a data_directory or an external_pid_file, preload libraries this host
    cannot load, archive or clean up the archive, and ask for more memory than
    a second server gets: they move to ``config_dir``/live-config (a link
    moves as a link, what it names is neither read nor changed).
    postgresql.conf is written whole from ``settings`` (name, quoted value)
    plus hba_file and ident_file in ``config_dir``, which admit local
    connections only: the caller's socket directory must be private, as its
    server's port is (no TCP listener). postgresql.auto.conf is left empty.

    Returns (the files written in ``config_dir``, the settings written).
    """
    aside = os.path.join(config_dir, LIVE_CONFIG_SUBDIR)
    if not os.path.isdir(aside):
        os.makedirs(aside, 0o700)
    for name in (CONF, AUTO_CONF):
        if os.path.lexists(os.path.join(data, name)):
            os.rename(os.path.join(data, name), os.path.join(aside, name))
    hba = os.path.join(config_dir, "pg_hba.conf")
    ident = os.path.join(config_dir, "pg_ident.conf")
    write_new(hba, "local all all trust\n")
    write_new(ident, "")
    settings = list(settings) + [("hba_file", _conf_value(hba)), ("ident_file", _conf_value(ident))]
    write_new(os.path.join(data, CONF), settings_block(settings, MINIMAL_CONFIG_TITLE))
    write_new(os.path.join(data, AUTO_CONF), "")
    return [hba, ident], settings


class _Owner(object):
    def __init__(self, entry):
        self.st_uid, self.st_gid = entry.pw_uid, entry.pw_gid


def _stopping_line(text):
    lines = [line for line in text.splitlines() if "recovery stopping" in line]
    return lines[-1].split("recovery stopping", 1)[1].strip() if lines else None


def _conf_value(value):
    if isinstance(value, bool):
        return "'on'" if value else "'off'"
    return "'" + str(value).replace("'", "''") + "'"


def _owner(name):
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise BackupError("There is no OS user %s to own the restored data directory." % name,
                          "Set owner to the OS user PostgreSQL runs as (usually postgres).")
    if os.geteuid() != 0 and os.geteuid() != entry.pw_uid:
        raise BackupError("Only root can give the restored files to %s." % name,
                          "Run the restore as root (become: true) or as %s." % name)
    return entry


def _find_tool(bindir, name):
    """``name`` in ``bindir``, else on the PATH; None when neither has it."""
    dirs = [bindir] if bindir else os.environ.get("PATH", "").split(os.pathsep)
    return next((os.path.join(d, name) for d in dirs if os.path.isfile(os.path.join(d, name))), None)


def _pg_ctl(bindir):
    path = _find_tool(bindir, "pg_ctl")
    if not path:
        raise BackupError("There is no pg_ctl in %s." % (bindir or "the PATH"),
                          "Set bindir to the directory of pg_ctl and postgres of the backup's major version.")
    return path


def restore_argument_spec():
    return dict(
        backup_dir=dict(type="path"),
        dest=dict(type="path"),
        system_identifier=dict(type="str"),
        allow_incomplete=dict(type="bool", default=False),
        verify=dict(type="bool", default=True),
        data_directory=dict(type="path", required=True),
        waldir=dict(type="path"),
        tablespace_mapping=dict(type="dict", default={}),
        force=dict(type="bool", default=False),
        owner=dict(type="str", default="postgres"),
        target=dict(type="str", default="immediate", choices=list(TARGETS)),
        target_time=dict(type="str"),
        target_lsn=dict(type="str"),
        target_name=dict(type="str"),
        target_xid=dict(type="str"),
        target_inclusive=dict(type="bool", default=True),
        target_timeline=dict(type="str"),
        target_action=dict(type="str", default="promote", choices=list(ACTIONS)),
        wal_archive_dir=dict(type="path"),
        restore_command=dict(type="str"),
        settings=dict(type="dict", default={}),
        start=dict(type="bool", default=True),
        bindir=dict(type="path"),
        log_file=dict(type="path"),
        login_user=dict(type="str"),
        timeout=dict(type="int", default=3600),
    )


def restore_task(params, check_mode, connect=None):
    """pg_restore's task. Check mode chooses the backup, checks the target and the WAL, and changes nothing."""
    if check_mode:
        check_target(params)
        backup_dir, record = choose_backup(params.get("backup_dir"), params.get("dest"),
                                           params.get("system_identifier"), params.get("allow_incomplete"))
        why = target_before_backup_end(params, record)
        if why:
            raise before_backup_end_error(why)
        check_wal_at_hand(params, backup_dir, record)
        pid = running_postmaster(params["data_directory"])
        if pid:
            raise BackupError("A postmaster (PID %s) runs on the target data directory %s." % (
                pid, params["data_directory"]), "Stop that server first, or restore into another directory; a "
                "restore never touches a running server's files, not even with force.")
        return dict(changed=True, backup_dir=backup_dir, label=record.get("label"), data_directory=params["data_directory"],
                    msg="Check mode: nothing restored.")
    if connect is None:
        from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import connect_socket
        connect = connect_socket
    engine = Restore(params, connect)
    try:
        return engine.run()
    except BackupError as exc:
        # What was done before the failure: where the restore went and what force set aside.
        for key in ("backup_dir", "data_directory", "set_aside", "durations"):
            if key in engine.result:
                exc.facts.setdefault(key, engine.result[key])
        raise


def stop_restored(data, bindir, owner="postgres"):
    """Stop the server a restore started on ``data`` (fast), by its PID; for drills and tests."""
    pid = postmaster_pid(data)
    if pid and alive(pid):
        stop(pid, _pg_ctl(bindir), data, _Owner(_owner(owner)), mode="fast")
