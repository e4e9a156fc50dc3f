# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""pg_stop_backup: check the request, read backup_label and the state record, decide (state.py), act on the answer."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time
from collections import namedtuple

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_api
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop import arming as safety_stop
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.archiving import wait_until_archived
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import DEFAULT_STATE_DIR, RUNNING
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    describe_backup, parse_backup_label, validate_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import DatabaseError, connection_argument_spec
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.session.server import on_server, stop_lock
from ansible_collections.pgexclusive.backup.plugins.module_utils.session.state import (
    ALREADY_STOPPED, ENDED_WITHOUT_US, FORCED, NOT_IN_PROGRESS, OURS, OURS_REPLACED, SAFETY_STOPPED, SOMEONE_ELSES,
    decide_stop, expected_start, is_lsn)
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import (
    backup_history_file, last_segment_before)

DEFAULT_ARCHIVE_TIMEOUT = 300

# What one stop found: the backup in progress (or None) and this label's state record (and its path).
Found = namedtuple("Found", "server params label check_mode running path record")


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


@on_server
def stop_backup(server, params, check_mode):
    label = params["label"]
    _check_request(params)
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


def _check_request(params):
    if params.get("start_lsn") is not None and not is_lsn(params["start_lsn"]):
        raise BackupError("start_lsn %r is not a WAL location." % params["start_lsn"],
                          "Pass the start_lsn pg_start_backup returned, e.g. 0/2000028.")
    if params["label"] is not None:
        validate_label(params["label"])
    elif not params["force"]:
        raise BackupError("pg_stop_backup needs to know whose backup it may stop.",
                          "Give the label your pg_start_backup used, or force: true to stop any backup.")
    if params["archive_timeout"] < 0:
        raise BackupError("archive_timeout is %d; it must be a number of seconds, 0 or more."
                          % params["archive_timeout"], "Set archive_timeout to 0 or more.")


def _stop(server, params, label, check_mode):
    """Read, decide, act; outside check mode under the stop lock."""
    running = server.read_backup()
    path, record = safety_stop.record_of(server, params, label) if label is not None else (None, None)
    found = Found(server, params, label, check_mode, running, path, record)
    return _ON_FOUND[decide_stop(running, record, label, params.get("start_lsn"), params["force"])](found)


def _safety_stopped(found):
    safety_stop.refuse_safety_stopped(found.record)


def _not_in_progress(found):
    """Nothing to stop; also when an earlier call of this same stop stopped it: asking again changes nothing."""
    return dict(_stop_facts(found.label), changed=False, in_backup=False)


def _ended_without_us(found):
    _ended_without_stop(found, expected_start(found.params.get("start_lsn"), found.record), "no backup is in progress")


def _ours_replaced(found):
    _ended_without_stop(found, expected_start(found.params.get("start_lsn"), found.record),
                        "the backup in progress under this label started at %s" % found.running.get("start_lsn"))


def _refuse_someone_elses(found):
    running = found.running
    raise BackupError(
        "The backup in progress is %s, not '%s'. Nothing was stopped." % (describe_backup(running), found.label),
        "Stop it only if it is abandoned: force: true stops whatever backup is in progress.",
        other_label=running.get("label"), other_start_time=running.get("start_time"))


def _stop_ours(found):
    return _stop_running(found, forced=False)


def _stop_forced(found):
    return _stop_running(found, forced=True)


def _stop_running(found, forced):
    server, params, running = found.server, found.params, found.running
    result = dict(_stop_facts(running.get("label")), start_lsn=running.get("start_lsn"),
                  start_wal_file=running.get("start_wal_file"), forced=forced, in_backup=True, warnings=[])
    if forced:
        result["warnings"].append("force: true stopped the backup %s%s." % (
            describe_backup(running), "" if found.label is None else ", which is not '%s'" % found.label))
    if found.check_mode:
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
        return _stopped_meanwhile(found, forced, result)
    path, record = safety_stop.record_of(server, params, running.get("label")) if forced else (found.path, found.record)
    result["watchdog_ended"] = safety_stop.disarm(path, record, stop_lsn)
    result.update(_finished_facts(server, running, stop_lsn), changed=True, in_backup=False)
    return result


def _stopped_meanwhile(found, forced, result):
    """The stop statement found the backup gone: another client stopped it since it was read."""
    if not forced:
        _ended_without_stop(found, found.running.get("start_lsn"), "another client stopped it a moment before this stop")
    result["warnings"].append("The backup %s was stopped by another client meanwhile; nothing was stopped."
                              % describe_backup(found.running))
    return dict(result, changed=False, in_backup=found.server.read_backup() is not None)


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
    text = server.read_wal_file(backup_history_file(running["start_wal_file"], running["start_lsn"], server.wal_segment_size))
    return parse_backup_label(text).get("stop_lsn") if text else None


def _ended_without_stop(found, start_lsn, what):
    """This run's backup ended, but not by this stop: its copy is void. Record it, end its watchdog, fail."""
    record = found.record
    watchdog_ended = False
    if not found.check_mode and record is not None and record.get("outcome") == RUNNING:
        watchdog_ended = safety_stop.mark_ended_without_stop(found.path, record)
    raise BackupError(
        "The backup '%s'%s ended without this stop: %s. The server restarted or crashed, or another client "
        "stopped it, while the copy ran; a copy taken under this label is not usable." % (
            found.label, " started at %s" % start_lsn if start_lsn else "", what),
        "Take a new backup. Find out what ended it (the server log around that time: a restart, a crash, or "
        "a SELECT pg_stop_backup() from another session).",
        label=found.label, ended_without_stop=True, watchdog_ended=watchdog_ended, in_backup=False, changed=False)


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


_ON_FOUND = {
    OURS: _stop_ours, FORCED: _stop_forced, SOMEONE_ELSES: _refuse_someone_elses,
    OURS_REPLACED: _ours_replaced, ENDED_WITHOUT_US: _ended_without_us, SAFETY_STOPPED: _safety_stopped,
    ALREADY_STOPPED: _not_in_progress, NOT_IN_PROGRESS: _not_in_progress,
}
