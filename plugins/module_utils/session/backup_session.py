# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Starting and stopping an exclusive backup, across Ansible tasks.

No session survives from one task to the next, so the state of a backup is
what the server keeps: backup_label in the data directory. It is read
through SQL (pg_read_file) so that labels can be checked from any host.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_api
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop import arming as safety_stop
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.archiving import wait_until_archived
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import (
    DEFAULT_STATE_DIR, EXPIRED_STOPPED, RUNNING, STOPPED, describe_record)
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    LABEL_FILE, TABLESPACE_MAP, describe_backup, parse_backup_label, parse_tablespace_map, validate_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import (
    DatabaseError, Session, connection_argument_spec, with_queries)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import (
    backup_history_file, last_segment_before, same_lsn)

FACTS_QUERY = (
    "SELECT current_setting('server_version_num')::int, current_setting('server_version'),"
    " pg_catalog.pg_is_in_recovery(), current_setting('wal_level'), current_setting('archive_mode'),"
    " pg_catalog.pg_size_bytes(current_setting('wal_segment_size')),"
    " EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = %s),"
    " current_user, current_database(),"
    " (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),"
    # State records are kept per cluster, named by its system identifier.
    " CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')"
    " THEN (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) END")
FACT_NAMES = ("version_num", "version", "in_recovery", "wal_level", "archive_mode", "wal_segment_size",
              "extension_installed", "user", "database", "superuser", "system_identifier")
MISSING_PRIVILEGES_QUERY = (
    "SELECT f FROM pg_catalog.unnest(%s::text[]) AS f WHERE NOT pg_catalog.has_function_privilege(f, 'EXECUTE')")
READ_FILES_QUERY = "SELECT pg_catalog.pg_read_file(%s, 0, %s, true), pg_catalog.pg_read_file(%s, 0, %s, true)"
READ_FILE_QUERY = "SELECT pg_catalog.pg_read_file(%s, 0, %s, true)"
READ_LIMIT = 1024 * 1024
SECONDS_SINCE_QUERY = "SELECT extract(epoch FROM pg_catalog.clock_timestamp() - %s::timestamptz)::float8"
DEFAULT_ARCHIVE_TIMEOUT = 300
# Renewals go every quarter of the timeout, over SSH: below this, one slow login would end the lease.
MIN_HEARTBEAT_TIMEOUT = 4


def start_argument_spec():
    spec = connection_argument_spec()
    spec.update(
        label=dict(type="str", required=True),
        fast=dict(type="bool", default=False),
        create_extension=dict(type="bool", default=False),
        max_duration=dict(type="int", default=0),
        heartbeat_timeout=dict(type="int", default=0),
        state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
        controller_host=dict(type="str"),
        job_id=dict(type="str"),
    )
    return spec


def stop_argument_spec():
    spec = connection_argument_spec()
    spec.update(
        label=dict(type="str"),
        start_lsn=dict(type="str"),
        force=dict(type="bool", default=False),
        wait_for_archive=dict(type="bool", default=True),
        archive_timeout=dict(type="int", default=DEFAULT_ARCHIVE_TIMEOUT),
        state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
    )
    return spec


class Server(object):
    """What one connection learns about the server and login_db, once per task."""

    def __init__(self, session):
        self.session = session
        for name, value in zip(FACT_NAMES, session.row(FACTS_QUERY, (backup_api.EXTENSION_NAME,))):
            setattr(self, name, value)
        self.api, self.api_reason = backup_api.choose_api(self.version_num, self.extension_installed, self.database)

    def require_primary(self, action):
        if self.in_recovery:
            raise BackupError(
                "The server is in recovery (a standby, or a copy being restored), so it cannot %s: "
                "exclusive backups run only on a primary." % action,
                "Point login_host/login_port at the primary.")

    def missing_privileges(self, functions):
        """The functions of ``functions`` this user may not execute."""
        if self.superuser:
            return []
        return [row[0] for row in self.session.rows(MISSING_PRIVILEGES_QUERY, (list(functions),))]

    def require_privileges(self, functions, action):
        missing = self.missing_privileges(functions)
        if missing:
            raise BackupError(
                "User %s may not execute %s in database %s, which it needs to %s."
                % (self.user, ", ".join(missing), self.database, action),
                "Connect to database %s as a superuser and run: %s"
                % (self.database, backup_api.grant_statement(missing, self.user)),
                grant=backup_api.grant_statement(missing, self.user))

    def read_backup(self):
        """The backup in progress as parsed backup_label fields plus the raw files, or None."""
        label_text, map_text = self.session.row(
            READ_FILES_QUERY, (LABEL_FILE, READ_LIMIT, TABLESPACE_MAP, READ_LIMIT))
        if label_text is None:
            return None
        backup = parse_backup_label(label_text)
        backup["backup_label"] = label_text
        backup["tablespace_map"] = parse_tablespace_map(map_text)
        return backup

    def seconds_since(self, start_time):
        """Age of a START TIME by the server's clock, which also knows log_timezone's abbreviations."""
        try:
            return round(self.session.value(SECONDS_SINCE_QUERY, (start_time,)), 3)
        except DatabaseError:
            return None


def open_server(params):
    return Server(Session(params))


def start_facts(backup, api):
    return dict(
        label=backup.get("label"),
        api=api,
        start_lsn=backup.get("start_lsn"),
        start_wal_file=backup.get("start_wal_file"),
        checkpoint_lsn=backup.get("checkpoint_lsn"),
        timeline=backup.get("timeline"),
        start_time=backup.get("start_time"),
        backup_label=backup.get("backup_label"),
        tablespace_map=backup.get("tablespace_map", []),
    )


def _on_server(run):
    """Run ``run(server, params, check_mode)`` on a server opened for it, with the statements sent attached."""
    def wrapper(params, check_mode):
        server = open_server(params)
        return with_queries(server.session, lambda: run(server, params, check_mode))
    return wrapper


def _ensure_api(server, params, check_mode):
    """The API to start with, creating the extension when asked to."""
    if server.api != backup_api.NONE:
        return server.api
    if not (params["create_extension"] and server.version_num >= backup_api.FIRST_WITHOUT_NATIVE):
        raise BackupError(server.api_reason, backup_api.extension_hint(server.database)
                          if server.version_num >= backup_api.FIRST_WITHOUT_NATIVE else None)
    if not server.superuser:
        raise BackupError(
            "create_extension needs a superuser, and %s is not one." % server.user,
            backup_api.extension_hint(server.database))
    if check_mode:
        server.session.would_run(backup_api.CREATE_EXTENSION_SQL)
    else:
        try:
            server.session.rows(backup_api.CREATE_EXTENSION_SQL)
        except DatabaseError as exc:
            raise BackupError(
                "CREATE EXTENSION %s failed in database %s: %s" % (backup_api.EXTENSION_NAME, server.database, exc.primary),
                "Install the extension's files on the server (make install with PGXS), then retry.")
    return backup_api.EXTENSION


def _refuse_other_backup(server, params, backup, action):
    _path, record = safety_stop.record_of(server, params, backup.get("label") or "")
    whose = ("; this collection's state record says: %s" % describe_record(record)) if record else (
        "; no state record on this host names it (started a moment ago and not recorded yet, or by another "
        "tool, another host, or without a state_dir)")
    raise BackupError(
        "Another exclusive backup is in progress: %s%s. Nothing was %s." % (describe_backup(backup), whose, action),
        "Wait for it to finish, or stop it with pg_stop_backup label: '%s' if it is abandoned." % backup.get("label"),
        other_label=backup.get("label"), other_start_time=backup.get("start_time"), other_record=record)


@_on_server
def start_backup(server, params, check_mode):
    label = validate_label(params["label"])
    if params["max_duration"] < 0:
        raise BackupError("max_duration is %d; it must be 0 (no safety stop) or a number of seconds."
                          % params["max_duration"], "Set max_duration to 0 or more.")
    if params["heartbeat_timeout"] != 0 and params["heartbeat_timeout"] < MIN_HEARTBEAT_TIMEOUT:
        raise BackupError(
            "heartbeat_timeout is %d; it must be 0 (the controller does not renew the lease) or at least %d "
            "seconds." % (params["heartbeat_timeout"], MIN_HEARTBEAT_TIMEOUT),
            "Set heartbeat_timeout to 0 or to %d or more (the role's default is 60)." % MIN_HEARTBEAT_TIMEOUT)
    leased = params["max_duration"] > 0 or params["heartbeat_timeout"] > 0
    server.require_primary("start a backup")
    if server.wal_level == "minimal":
        raise BackupError("wal_level is minimal: a backup could not be restored from the WAL it writes.",
                          "Set wal_level = replica (or logical) and restart PostgreSQL.")
    created = server.api == backup_api.NONE
    api = _ensure_api(server, params, check_mode)
    if created and check_mode:
        # The functions do not exist yet, so privileges and backup_label cannot be asked about.
        server.session.would_run(backup_api.START_SQL[api], (label, params["fast"]))
        return dict(start_facts({"label": label}, api), changed=True)
    server.require_privileges((backup_api.START_FUNCTION[api], backup_api.READ_FILE_FUNCTION), "start a backup")
    result = {"warnings": [], "max_duration": params["max_duration"]}
    if not check_mode:
        result["warnings"] += safety_stop.require_state_dir(
            params["state_dir"], safety_stop.cluster_id(server), leased)
    # Check mode writes nothing, and without a usable state_dir there are no records to keep.
    keeps_records = not check_mode and not result["warnings"]
    running = server.read_backup()
    if running is not None:
        if running.get("label") != label:
            _refuse_other_backup(server, params, running, "started or stopped")
        # Same label again: the record and watchdog of the run that started it stay as they are.
        _path, record = safety_stop.record_of(server, params, label)
        result.update(start_facts(running, api), changed=created, state_record=record)
        return _report_earlier_failures(server, params, result, keeps_records)
    if check_mode:
        server.session.would_run(backup_api.START_SQL[api], (label, params["fast"]))
        result.update(start_facts({"label": label}, api), changed=True)
        return result
    try:
        server.session.rows(backup_api.START_SQL[api], (label, params["fast"]))
    except DatabaseError as exc:
        if not backup_api.is_concurrent_start_error(exc.primary):
            raise
        winner = server.read_backup() or {"label": "(still starting)", "start_time": "just now"}
        if winner.get("label") == label:
            result.update(start_facts(winner, api), changed=False)
            return result
        _refuse_other_backup(server, params, winner, "started or stopped")
    started = server.read_backup()
    if started is None or started.get("label") != label:
        # The label-guarded stop ends this run's backup if it is still there, and nobody else's.
        stopped_again = _stop_again(server, api, label)
        raise BackupError(
            "pg_start_backup succeeded, but backup_label now reads %s%s."
            % (describe_backup(started) if started else "nothing",
               "; this run's backup was stopped again" if stopped_again else ""),
            "Another client stopped or replaced this backup at once; check pg_backup_info and retry.",
            changed=True, stopped_again=stopped_again)
    result.update(start_facts(started, api), changed=True)
    if not keeps_records:
        result["state_record"] = None
        return result
    try:
        path, record = safety_stop.arm(server, params, result)
    except BackupError as exc:
        _stop_again(server, api, label)
        exc.facts.update(start_facts(started, api), changed=True, stopped_again=True)
        raise
    result.update(state_record=record, state_record_path=path, heartbeat=safety_stop.heartbeat_facts(path, record))
    return _report_earlier_failures(server, params, result, keeps_records)


def _report_earlier_failures(server, params, result, keeps_records):
    """Only a start that succeeds reports them: a failed module's warnings are not shown."""
    if keeps_records:
        earlier = safety_stop.unreported_failures(server, params, result["label"])
        result["earlier_failures"] = earlier
        result["warnings"] += [safety_stop.failure_warning(item) for item in earlier]
    return result


def _stop_again(server, api, label):
    """Stop this run's backup again at once, label-guarded; True when it was stopped."""
    with stop_lock(server.session):
        return backup_api.end_this_backup(server.session.value, api, label, None, DatabaseError)[0]


def stop_lock(session):
    """Hold the collection's advisory lock: the watchdog and other stops wait until the outcome is recorded."""
    return backup_api.stop_lock(session.value, DatabaseError)


@_on_server
def stop_backup(server, params, check_mode):
    label = params["label"]
    if params.get("start_lsn") is not None and not same_lsn(params["start_lsn"], params["start_lsn"]):
        raise BackupError("start_lsn %r is not a WAL location." % params["start_lsn"],
                          "Pass the start_lsn pg_start_backup returned, e.g. 0/2000028.")
    if label is not None:
        validate_label(label)
    elif not params["force"]:
        raise BackupError("pg_stop_backup needs to know whose backup it may stop.",
                          "Give the label your pg_start_backup used, or force: true to stop any backup.")
    if params["archive_timeout"] < 0:
        raise BackupError("archive_timeout is %d; it must be a number of seconds, 0 or more."
                          % params["archive_timeout"], "Set archive_timeout to 0 or more.")
    server.require_primary("stop a backup")
    if server.api == backup_api.NONE:
        running = server.read_backup()
        if running is None:
            return dict(_stop_facts(label), changed=False, in_backup=False)
        raise BackupError("A backup is in progress (%s), but %s" % (describe_backup(running), server.api_reason),
                          "Set login_db to the database where the extension is installed.")
    server.require_privileges((backup_api.STOP_FUNCTION[server.api], backup_api.READ_FILE_FUNCTION), "stop a backup")
    if check_mode:
        return _stop(server, params, label, check_mode)
    # The stop statement and the wait for the archive after it share archive_timeout.
    deadline = time.monotonic() + params["archive_timeout"]
    with stop_lock(server.session):
        result = _stop(server, params, label, check_mode)
    if not result["changed"]:
        return result
    return _wait_for_archive(server, params, result, deadline)


def _stop(server, params, label, check_mode):
    """Read, check the backup, stop and record; outside check mode under the stop lock."""
    running = server.read_backup()
    path, record = safety_stop.record_of(server, params, label) if label is not None else (None, None)
    # The backup this run started: the start LSN it was given, else the one its state record holds.
    expected_start = params.get("start_lsn") or (
        record.get("start_lsn") if record is not None and record.get("outcome") == RUNNING else None)
    if running is None:
        if record is not None and record.get("outcome") == EXPIRED_STOPPED:
            safety_stop.refuse_safety_stopped(record)
        if record is not None and record.get("outcome") == STOPPED and (
                not params.get("start_lsn") or same_lsn(record.get("start_lsn"), params["start_lsn"])):
            # Stopped by an earlier call of this same stop: asking again changes nothing.
            return dict(_stop_facts(label), changed=False, in_backup=False)
        if label is not None and (params.get("start_lsn") or expected_start):
            _ended_without_stop(path, record, label, expected_start, check_mode, "no backup is in progress")
        return dict(_stop_facts(label), changed=False, in_backup=False)
    # Without a label, force is set (checked above): any backup is someone else's.
    forced = running.get("label") != label
    if forced and not params["force"]:
        raise BackupError(
            "The backup in progress is %s, not '%s'. Nothing was stopped." % (describe_backup(running), label),
            "Stop it only if it is abandoned: force: true stops whatever backup is in progress.",
            other_label=running.get("label"), other_start_time=running.get("start_time"))
    if not forced and expected_start and not same_lsn(running.get("start_lsn"), expected_start):
        _ended_without_stop(path, record, label, expected_start, check_mode,
                            "the backup in progress under this label started at %s" % running.get("start_lsn"))
    result = dict(_stop_facts(running.get("label")), start_lsn=running.get("start_lsn"),
                  start_wal_file=running.get("start_wal_file"), forced=forced, in_backup=True, warnings=[])
    if forced:
        result["warnings"].append("force: true stopped the backup %s%s." % (
            describe_backup(running), "" if label is None else ", which is not '%s'" % label))
    if check_mode:
        backup_api.would_stop(server.session.would_run, server.api, running.get("label"), running.get("start_lsn"),
                              params["archive_timeout"])
        result.update(changed=True)
        return result
    # The backup is checked again by the stop statement itself: a client outside this
    # collection may have stopped it, and another started one, since the read above.
    try:
        stop_lsn = backup_api.guarded_stop(server.session.value, server.api, running.get("label"),
                                           running.get("start_lsn"), params["archive_timeout"], DatabaseError)
    except backup_api.StopCutShort as cut:
        if not cut.ended:
            _refuse_unended(running, params["archive_timeout"])
        # The backup ended; the extension's stop was still waiting for the archive, which the wait after reports.
        stop_lsn = _stop_lsn_of(server, running)
        result["archive_wait_cut"] = True
    if stop_lsn is None and not result["archive_wait_cut"]:
        if not forced:
            _ended_without_stop(path, record, label, running.get("start_lsn"), check_mode,
                                "another client stopped it a moment before this stop")
        result["warnings"].append("The backup %s was stopped by another client meanwhile; nothing was stopped."
                                  % describe_backup(running))
        return dict(result, changed=False, in_backup=server.read_backup() is not None)
    if forced:
        path, record = safety_stop.record_of(server, params, running.get("label"))
    result["watchdog_ended"] = safety_stop.disarm(path, record, stop_lsn)
    result.update(_finished_facts(server, running, stop_lsn), changed=True, in_backup=False)
    return result


def _refuse_unended(running, seconds):
    raise BackupError(
        "The stop of the backup %s did not return within archive_timeout (%s seconds), and the backup is still "
        "in progress: the stop statement was cancelled before it ended the backup." % (describe_backup(running), seconds),
        "Find what held the stop on the server (pg_stat_activity, pg_locks), then stop the backup with "
        "pg_stop_backup label: '%s'. A safety stop, if this backup has one, ends it when its lease runs out."
        % running.get("label"),
        in_backup=True, changed=False, label=running.get("label"))


def _stop_lsn_of(server, running):
    """The stop LSN of a backup whose stop was cut short in its archive wait, from its history file in pg_wal; or None."""
    name = backup_history_file(running["start_wal_file"], running["start_lsn"], server.wal_segment_size)
    text = server.session.value(READ_FILE_QUERY, ("pg_wal/" + name, READ_LIMIT))
    return parse_backup_label(text).get("stop_lsn") if text else None


def _ended_without_stop(path, record, label, start_lsn, check_mode, what):
    """This run's backup ended, but not by this stop: its copy is void. Record it, end its watchdog, fail."""
    watchdog_ended = False
    if not check_mode and record is not None and record.get("outcome") == RUNNING:
        watchdog_ended = safety_stop.mark_ended_without_stop(path, record)
    raise BackupError(
        "The backup '%s'%s ended without this stop: %s. The server restarted or crashed, or another client "
        "stopped it, while the copy ran; a copy taken under this label is not usable." % (
            label, " started at %s" % start_lsn if start_lsn else "", what),
        "Take a new backup. Find out what ended it (the server log around that time: a restart, a crash, or "
        "a SELECT pg_stop_backup() from another session).",
        label=label, ended_without_stop=True, watchdog_ended=watchdog_ended, in_backup=False, changed=False)


def _wait_for_archive(server, params, result, deadline):
    # Without a stop LSN (a cut stop whose history file is gone) only the history file is known.
    wal_files = [name for name in (result["backup_history_file"], result["stop_wal_file"]) if name]
    if not params["wait_for_archive"] or server.archive_mode == "off":
        reason = "archive_mode is off" if server.archive_mode == "off" else "wait_for_archive is false"
        result["warnings"].append(
            "The backup is stopped without waiting for the WAL archive (%s): the copy can only be restored "
            "with every WAL file from %s to %s, which you must keep yourself."
            % (reason, result["start_wal_file"], result["stop_wal_file"]))
        return result
    try:
        wait_until_archived(server.session, wal_files, params["archive_timeout"], deadline)
    except BackupError as exc:
        exc.facts.update(result)
        exc.facts.pop("warnings")
        raise
    result["archived"] = True
    return result


def _stop_facts(label):
    return dict(label=label, stop_lsn=None, stop_wal_file=None, backup_history_file=None,
                archived=False, duration=None, archive_wait_cut=False)


def _finished_facts(server, running, stop_lsn):
    return dict(
        stop_lsn=stop_lsn,
        stop_wal_file=last_segment_before(running["timeline"], stop_lsn, server.wal_segment_size) if stop_lsn else None,
        backup_history_file=backup_history_file(running["start_wal_file"], running["start_lsn"],
                                                server.wal_segment_size),
        duration=server.seconds_since(running.get("start_time")),
    )
