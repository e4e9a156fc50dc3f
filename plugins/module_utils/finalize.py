# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Finalize: a stopped backup made complete, in one call on the database host.

In order: its WAL into the backup (optional), the configuration files that
live outside the data directory (config_files.py), the restore check (optional),
backup.json last and durably, the record sent to the repository's copy (when
the copy is there), then retention. Each step is the same code as its own
module (pg_backup_wal, pg_verify_restore, pg_backup_record, pg_backup_copy's
send_record, pg_backup_retention).

A failure before the record is complete leaves a failed backup.json with the
step and the reason, and fails: a run that started a backup always leaves a
record. A failure of retention comes after a complete backup, and says so.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils import connection, repository
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import COMPRESSIONS
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import (
    COMPLETE, FAILED, assemble, parts_of, record_backup, record_part, recorded)
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.backup_wal import backup_wal
from ansible_collections.pgexclusive.backup.plugins.module_utils.config_files import capture_config
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.verify_restore import (
    check_options as drill_check_options, verify_restore_task)
from ansible_collections.pgexclusive.backup.plugins.module_utils.retention import apply_retention
from ansible_collections.pgexclusive.backup.plugins.module_utils.timed_steps import TimedSteps

# The restore check's result as backup.json keeps it.
VERIFY_SUMMARY = ("ok", "duration", "server_version", "check_ran")


def finalize_argument_spec():
    return dict(
        backup_dir=dict(type="path", required=True),
        parts=dict(type="list", elements="dict", default=[]),
        results=dict(type="dict", default={}, removed_in_version="1.0.0", removed_from_collection="pgexclusive.backup"),
        manifest=dict(type="bool", default=False),
        include_wal=dict(type="bool", default=False),
        wal_archive_dir=dict(type="path"),
        verify_restore=dict(type="bool", default=False),
        verify_restore_bindir=dict(type="path"),
        verify_restore_timeout=dict(type="int", default=300),
        verify_restore_work_dir=dict(type="path"),
        verify_restore_checks=dict(type="list", elements="dict", default=[], options=drill_check_options()),
        repository=dict(type="str"),
        ssh_user=dict(type="str"),
        ssh_key=dict(type="path"),
        ssh_options=dict(type="list", elements="str", default=[]),
        dest=dict(type="path"),
        retention=dict(type="int", default=0),
    )


def wal_params(params, facts):
    return dict(
        backup_dir=params["backup_dir"],
        wal_archive_dir=params["wal_archive_dir"],
        start_wal_file=facts.get("start_wal_file"),
        stop_wal_file=facts.get("stop_wal_file"),
        backup_history_file=facts.get("backup_history_file"),
        compression=facts.get("compression") or COMPRESSIONS[0],
    )


def verify_params(params, parts):
    facts = assemble(parts)
    return dict(
        backup_dir=params["backup_dir"],
        data_directory=facts.get("data_directory"),
        bindir=params["verify_restore_bindir"],
        wal_archive_dir=params["wal_archive_dir"],
        work_dir=params["verify_restore_work_dir"],
        timeout=params["verify_restore_timeout"],
        keep=False,
        checks=params["verify_restore_checks"],
        # backup.json is written after the check: the drill gets the facts it will hold.
        record=recorded(facts),
    )


def config_step(params, facts, check_mode):
    """The configuration from outside the data directory (Debian's /etc/postgresql/...), at the stop."""
    return capture_config(facts["config_settings"], facts.get("data_directory"), params["backup_dir"], check_mode)


def config_warnings(captured):
    if not captured:
        return []
    if captured.get("unknown"):
        return ["The login may not read config_file, hba_file and ident_file (pg_read_all_settings, which pg_monitor "
                "includes): a configuration outside the data directory is not in this backup."]
    return ["%s %s (named by %s) was not copied: it is missing, a symbolic link or not a regular file."
            % (entry["what"], entry["path"], entry["named_by"]) for entry in captured["missing"]]


def verify_step(params, parts, check_mode):
    """The restore drill; its result, passed or failed, starts the history of checks in backup.json (a drill part)."""
    try:
        verified = verify_restore_task(verify_params(params, parts), check_mode)
    except BackupError as exc:
        if exc.facts.get("history_entry"):
            parts.append(record_part("drill", {"checks": [exc.facts["history_entry"]]}))
        raise
    if verified.get("history_entry"):
        parts.append(record_part("drill", {"checks": [verified["history_entry"]]}))
    return verified


def retention_params(params, facts):
    return dict(
        dest=params["dest"],
        keep=params["retention"],
        current=facts.get("label"),
        system_identifier=facts.get("system_identifier"),
        data_directory=facts.get("data_directory"),
        host=facts.get("host"),
    )


def check_options(params):
    """Options that cannot work are refused before any step runs."""
    if not (params["parts"] or params["results"]):
        raise BackupError("Finalize needs the parts of the backup's record.",
                          "Pass parts: the record_part each phase module returned, and the run's own part.")
    if params["include_wal"] and not params["wal_archive_dir"]:
        raise BackupError("include_wal needs wal_archive_dir.", "Set wal_archive_dir to the WAL archive's directory.")
    if params["retention"] < 0:
        raise BackupError("retention is %d; it must be 0 (keep everything) or more." % params["retention"],
                          "Set retention to the number of complete backups of this cluster to keep.")
    if params["retention"] and not params["dest"]:
        raise BackupError("retention needs dest, the directory that holds the backups.", "Set dest.")
    if params["verify_restore"] and connection.psycopg2 is None:
        raise BackupError("The restore check needs psycopg2 on this host.",
                          "Install python3-psycopg2 on the database host, or set verify_restore to false.")


def finalize(params, check_mode):
    """pg_backup_finalize: WAL, restore check, record, repository, retention; a failed record on failure."""
    check_options(params)
    parts = parts_of(params)
    facts = assemble(parts)
    steps = TimedSteps()
    result = dict(changed=not check_mode, wal_files=None, wal_location=None, config_files=None, verify=None,
                  sent=None, retention=None, removed=[])
    try:
        if params["include_wal"]:
            wal = steps.run("wal", backup_wal, wal_params(params, facts), check_mode)
            parts.append(record_part("wal", wal))
            result.update(wal_files=wal["wal_files"], wal_location=wal["location"])
        # Sent to a repository with the record (repository.send_record sends the whole backup directory).
        if facts.get("config_settings") is not None:
            captured = steps.run("config", config_step, params, facts, check_mode)
            parts.append(record_part("config", captured))
            result.update(config_files=captured, warnings=config_warnings(captured))
        if params["verify_restore"]:
            verified = steps.run("verify_restore", verify_step, params, parts, check_mode)
            parts.append(record_part("verify", dict((key, verified.get(key)) for key in VERIFY_SUMMARY)))
            result["verify"] = verified
        written = steps.run("record", record_backup, record_params(params, parts, COMPLETE), check_mode)
        result.update(record=written["record"], path=written.get("path"), manifest=written["manifest"])
        if params["repository"] and not check_mode:
            result["sent"] = steps.run("send_record", repository.send_record, params["backup_dir"],
                                       params["repository"], params["ssh_user"], params["ssh_key"],
                                       params["ssh_options"])
    except BackupError as exc:
        raise failed(exc, steps, params, parts, check_mode)
    if params["retention"]:
        try:
            plan = steps.run("retention", apply_retention, retention_params(params, facts), check_mode)
        except BackupError as exc:
            exc.msg = "The backup in %s is complete, but retention failed: %s" % (params["backup_dir"], exc.msg)
            exc.facts.update(complete=True, record=result["record"], record_written=True, durations=steps.durations)
            raise
        result.update(retention=dict((k, v) for k, v in plan.items() if k != "changed"), removed=plan["removed"])
    result.update(complete=True, durations=steps.durations)
    return result


def record_params(params, parts, status, error=None):
    """The record step's parameters; with a repository on another host, the manifest is read back from it."""
    remote = repository.Repository.parse(params["repository"], params["ssh_user"], params["ssh_key"],
                                         params["ssh_options"]) if params["repository"] else None
    return dict(backup_dir=params["backup_dir"], status=status, parts=parts, manifest=params["manifest"],
                facts={} if error is None else {"error": error}, remote=remote)


def failed(exc, steps, params, parts, check_mode):
    """``exc`` from ``steps.current``, after backup.json says failed, naming the step; the record's fate attached.

    The record step writes its own failed record when the facts or the fsync fail it; the other steps'
    failures are recorded here. When even that cannot be written, the error says so.
    """
    error = "%s: %s" % (steps.current, exc)
    record = exc.facts.get("record")
    if not (steps.current == "record" and exc.facts.get("path")):
        try:
            written = record_backup(record_params(params, parts, FAILED, error), check_mode)
            record = written["record"]
            exc.facts["path"] = written.get("path")
        except BackupError as unrecorded:
            exc.facts.update(record_written=False, record_error=unrecorded.msg)
            record = None
    exc.msg = "The backup is not complete: its %s step failed: %s" % (steps.current, exc.msg)
    exc.facts.update(complete=False, step=steps.current, record=record, durations=steps.durations)
    exc.facts.setdefault("record_written", record is not None and not check_mode)
    return exc
