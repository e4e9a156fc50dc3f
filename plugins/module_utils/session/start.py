# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""pg_start_backup: check the request, read backup_label, decide (state.py), act on the answer."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from collections import namedtuple

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_api
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop import arming as safety_stop
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import (
    DEFAULT_STATE_DIR, describe_record)
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import describe_backup, validate_label
from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import DatabaseError, connection_argument_spec
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.session.server import on_server, stop_lock
from ansible_collections.pgexclusive.backup.plugins.module_utils.session.state import (
    GONE_AT_ONCE, OURS_IN_PROGRESS, SOMEONE_ELSES, STARTABLE, STARTED, decide_start, decide_started)

# Renewals go every quarter of the timeout, over SSH: below this, one slow login would end the lease.
MIN_HEARTBEAT_TIMEOUT = 4

# What one start works with, whatever it finds.
Start = namedtuple("Start", "server params label api created check_mode keeps_records")


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


@on_server
def start_backup(server, params, check_mode):
    label = validate_label(params["label"])
    _check_durations(params)
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
        leased = params["max_duration"] > 0 or params["heartbeat_timeout"] > 0
        result["warnings"] += safety_stop.require_state_dir(params["state_dir"], safety_stop.cluster_id(server), leased)
    # Check mode writes nothing, and without a usable state_dir there are no records to keep.
    start = Start(server, params, label, api, created, check_mode, keeps_records=not check_mode and not result["warnings"])
    running = server.read_backup()
    return _ON_FOUND[decide_start(running, label)](start, running, result)


def _check_durations(params):
    if params["max_duration"] < 0:
        raise BackupError("max_duration is %d; it must be 0 (no safety stop) or a number of seconds."
                          % params["max_duration"], "Set max_duration to 0 or more.")
    if params["heartbeat_timeout"] != 0 and params["heartbeat_timeout"] < MIN_HEARTBEAT_TIMEOUT:
        raise BackupError(
            "heartbeat_timeout is %d; it must be 0 (the controller does not renew the lease) or at least %d "
            "seconds." % (params["heartbeat_timeout"], MIN_HEARTBEAT_TIMEOUT),
            "Set heartbeat_timeout to 0 or to %d or more (the role's default is 60)." % MIN_HEARTBEAT_TIMEOUT)


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


def _start(start, _running, result):
    """No backup is in progress: start this one."""
    sql, args = backup_api.START_SQL[start.api], (start.label, start.params["fast"])
    if start.check_mode:
        start.server.session.would_run(sql, args)
        result.update(start_facts({"label": start.label}, start.api), changed=True)
        return result
    try:
        start.server.session.rows(sql, args)
    except DatabaseError as exc:
        if not backup_api.is_concurrent_start_error(exc.primary):
            raise
        return _lost_race(start, result)
    started = start.server.read_backup()
    return _ON_STARTED[decide_started(started, start.label)](start, started, result)


def _already_started(start, running, result):
    """Same label again: the record and watchdog of the run that started it stay as they are."""
    _path, record = safety_stop.record_of(start.server, start.params, start.label)
    result.update(start_facts(running, start.api), changed=start.created, state_record=record)
    return _report_earlier_failures(start, result)


def _refuse_other_backup(start, backup, _result):
    _path, record = safety_stop.record_of(start.server, start.params, backup.get("label") or "")
    whose = ("; this collection's state record says: %s" % describe_record(record)) if record else (
        "; no state record on this host names it (started a moment ago and not recorded yet, or by another "
        "tool, another host, or without a state_dir)")
    raise BackupError(
        "Another exclusive backup is in progress: %s%s. Nothing was started or stopped." % (describe_backup(backup), whose),
        "Wait for it to finish, or stop it with pg_stop_backup label: '%s' if it is abandoned." % backup.get("label"),
        other_label=backup.get("label"), other_start_time=backup.get("start_time"), other_record=record)


def _lost_race(start, result):
    """Another client's start ran at the same moment; backup_label says whose won."""
    winner = start.server.read_backup() or {"label": "(still starting)", "start_time": "just now"}
    if decide_start(winner, start.label) != OURS_IN_PROGRESS:
        _refuse_other_backup(start, winner, result)
    result.update(start_facts(winner, start.api), changed=False)
    return result


def _gone_at_once(start, started, _result):
    # The label-guarded stop ends this run's backup if it is still there, and nobody else's.
    stopped_again = _stop_again(start)
    raise BackupError(
        "pg_start_backup succeeded, but backup_label now reads %s%s."
        % (describe_backup(started) if started else "nothing",
           "; this run's backup was stopped again" if stopped_again else ""),
        "Another client stopped or replaced this backup at once; check pg_backup_info and retry.",
        changed=True, stopped_again=stopped_again)


def _arm(start, started, result):
    """This run's backup is in progress: arm its safety stop and keep its record, when there are records."""
    result.update(start_facts(started, start.api), changed=True)
    if not start.keeps_records:
        result["state_record"] = None
        return result
    try:
        path, record = safety_stop.arm(start.server, start.params, result)
    except BackupError as exc:
        _stop_again(start)
        exc.facts.update(start_facts(started, start.api), changed=True, stopped_again=True)
        raise
    result.update(state_record=record, state_record_path=path, heartbeat=safety_stop.heartbeat_facts(path, record))
    return _report_earlier_failures(start, result)


def _report_earlier_failures(start, result):
    """Only a start that succeeds reports them: a failed module's warnings are not shown."""
    if start.keeps_records:
        earlier = safety_stop.unreported_failures(start.server, start.params, result["label"])
        result["earlier_failures"] = earlier
        result["warnings"] += [safety_stop.failure_warning(item) for item in earlier]
    return result


def _stop_again(start):
    """Stop this run's backup again at once, label-guarded; True when it was stopped."""
    with stop_lock(start.server.session):
        return backup_api.end_this_backup(start.server.session.value, start.api, start.label, None, DatabaseError)[0]


_ON_FOUND = {STARTABLE: _start, OURS_IN_PROGRESS: _already_started, SOMEONE_ELSES: _refuse_other_backup}
_ON_STARTED = {STARTED: _arm, GONE_AT_ONCE: _gone_at_once}
