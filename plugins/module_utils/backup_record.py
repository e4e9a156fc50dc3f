# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""backup.json: its schema, when a backup may be called complete, and writing it last and durably.

The WAL a backup includes is wal/backup_wal.py's, retention is retention.py's.
Besides the facts of the backup, backup.json keeps the history of its restore
drills (``checks``), appended one entry per drill and never touching the rest.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import fcntl
import json
import os

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import RECORD_FILE, copy_format
from ansible_collections.pgexclusive.backup.plugins.module_utils.durable import atomic_write, fsync_path, fsync_tree
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import (
    write_manifest, write_read_back_manifest)

RECORD_VERSION = 1
COMPLETE = "complete"
FAILED = "failed"
STATUSES = (COMPLETE, FAILED)
# backup.json's fields, in the order written, each with the phases that own it in precedence order: (phase,
# key) takes the field from the key of that phase's result (None: the whole result), and the first part with a
# value gives it. Phases: "run" (what the caller knows of the run itself: label, host, method, compression,
# data_directory), "info" (pg_backup_preflight), "start", "copy" and "stop" (their modules), and finalize's own
# steps "wal", "config", "verify" and "drill".
SCHEMA = (
    ("label", (("run", "label"),)),
    ("host", (("run", "host"),)),
    ("system_identifier", (("copy", "system_identifier"),)),
    ("data_directory", (("copy", "data_directory"), ("run", "data_directory"))),
    ("server_version", (("info", "server_version"),)),
    ("api", (("start", "api"), ("info", "api"))),
    ("method", (("run", "method"),)),
    ("compression", (("run", "compression"),)),
    ("repository", (("copy", "repository"),)),
    ("timeline", (("start", "timeline"),)),
    ("start_lsn", (("start", "start_lsn"),)),
    ("stop_lsn", (("stop", "stop_lsn"),)),
    ("start_wal_file", (("start", "start_wal_file"),)),
    ("stop_wal_file", (("stop", "stop_wal_file"),)),
    ("checkpoint_lsn", (("start", "checkpoint_lsn"),)),
    ("backup_history_file", (("stop", "backup_history_file"),)),
    ("archived", (("stop", "archived"),)),
    ("start_time", (("start", "start_time"),)),
    ("duration", (("stop", "duration"),)),
    ("copy_duration", (("copy", "duration"),)),
    ("bytes", (("copy", "bytes"),)),
    ("outputs", (("copy", "outputs"),)),
    ("output_bytes", (("copy", "output_bytes"),)),
    ("tablespaces", (("copy", "tablespaces"),)),
    ("label_fixed", (("copy", "label_fixed"),)),
    ("restore_hint", (("copy", "restore_hint"),)),
    ("wal_included", (("wal", "wal_files"),)),
    # The configuration from outside the data directory, copied into config/ (config_files.py).
    ("config_files", (("config", None),)),
    ("verify_restore", (("verify", None),)),
    # The history of restore drills: the backup role's own check starts it, later drills append to it.
    ("checks", (("drill", "checks"),)),
)
# The record's keys, in the order they are written (anything else follows, sorted).
ORDER = ("format", "label", "status", "error") + tuple(field for field, _sources in SCHEMA[1:]) + (
    "finished_at", "manifest")


# What a phase hands on to finalize's steps that backup.json does not keep.
HANDED_ON = (
    ("config_settings", (("info", "config_settings"),)),
)


def _owned():
    owned = {}
    for field, owners in SCHEMA + HANDED_ON:
        for phase, key in owners:
            owned.setdefault(phase, []).append((field, key))
    return owned


# phase -> the (field, key) it owns, from SCHEMA and HANDED_ON.
OWNED = _owned()


def record_part(phase, result, partial=False):
    """``phase``'s part of backup.json, ``{"phase": ..., "facts": {field: value}}``, with every field it owns.

    A value is None where the result says None (a local copy has no repository). A result without a key the
    phase owns is refused: a renamed return key fails the phase instead of dropping a field. A ``partial``
    result (a failed phase's facts, check mode, the deprecated ``results``) holds None for what it lacks.
    """
    if phase not in OWNED:
        raise BackupError("%r is not a phase of backup.json." % phase, "Use one of %s." % ", ".join(sorted(OWNED)))
    facts = {}
    for field, key in OWNED[phase]:
        if key is None:
            facts[field] = result
        elif key in result or partial:
            facts[field] = result.get(key)
        else:
            raise BackupError("The %s phase's result has no %s, which backup.json's %s is taken from." % (phase, key, field),
                              "Return %s from the %s phase, or rename it in backup_record.SCHEMA." % (key, phase))
    return {"phase": phase, "facts": facts}


def assemble(parts):
    """The facts of the parts: each field the value of its first owner, by SCHEMA's precedence, with one.

    Every part must be of a known phase, at most one per phase, and hold exactly the fields its phase
    owns; a phase that did not run has no part.
    """
    by_phase = {}
    for part in parts:
        phase, facts = _checked_part(part)
        if phase in by_phase:
            raise BackupError("Two parts of backup.json are of the %s phase." % phase, "Pass one part per phase.")
        by_phase[phase] = facts
    assembled = {}
    for field, owners in SCHEMA + HANDED_ON:
        for phase, _key in owners:
            value = by_phase.get(phase, {}).get(field)
            if value is not None:
                assembled[field] = value
                break
    return assembled


def _checked_part(part):
    phase = part.get("phase") if isinstance(part, dict) else None
    facts = part.get("facts") if isinstance(part, dict) else None
    if phase not in OWNED or not isinstance(facts, dict):
        raise BackupError("%r is not a part of backup.json." % (part,),
                          "Pass parts as the phases return them in record_part: phase (one of %s) and facts."
                          % ", ".join(sorted(OWNED)))
    owned = set(field for field, _key in OWNED[phase])
    problems = []
    missing, unknown = sorted(owned - set(facts)), sorted(set(facts) - owned)
    if missing:
        problems.append("lacks " + ", ".join(missing))
    if unknown:
        problems.append("has fields its phase does not own: " + ", ".join(unknown))
    if problems:
        raise BackupError("The %s part of backup.json %s." % (phase, "; ".join(problems)),
                          "A part holds every field its phase owns in backup_record.SCHEMA, None for what it does not know.")
    return phase, facts


def recorded(facts):
    """``facts`` without what is only handed on: what backup.json keeps."""
    handed_on = set(field for field, _owners in HANDED_ON)
    return dict((field, value) for field, value in facts.items() if field not in handed_on)


def parts_from_results(results):
    """The parts in the deprecated ``results`` (task -> registered result); a task that did not run gives none."""
    return [record_part(phase, result, partial=True) for phase, result in results.items()
            if phase in OWNED and isinstance(result, dict) and not result.get("skipped")]


def parts_of(params):
    """The parts of a call: ``parts``, or those of the deprecated ``results``, never both."""
    if params.get("parts") and params.get("results"):
        raise BackupError("Both parts and results are given.", "Pass parts only; results is deprecated.")
    return list(params.get("parts") or parts_from_results(params.get("results") or {}))


# What a complete backup must name, and why it is not restorable without it.
REQUIRED = (
    ("label", "no label"),
    ("start_lsn", "no start LSN: this run started no backup"),
    ("stop_lsn", "no stop LSN: this run's stop did not end this backup"),
    ("stop_wal_file", "no stop WAL file: the last WAL segment the backup needs is unknown"),
)
NOT_RECORDED_HINT = ("Nothing in the destination records how this backup ended: make the destination writable "
                     "(space, permissions, a read-only mount) and take a new backup; this run's output says "
                     "what happened.")


def incomplete_because(facts):
    """Why ``facts`` do not describe a restorable backup, in words; None when they do."""
    reasons = [why for key, why in REQUIRED if not facts.get(key)]
    wal_included = facts.get("wal_included")
    if not boolean(facts.get("archived") or False, strict=False) and not (
            isinstance(wal_included, list) and wal_included):
        reasons.append("WAL neither archived nor included: the stop did not see the WAL up to the stop "
                       "archived, and no WAL was put into the backup")
    return "; ".join(reasons) or None


def build_record(facts, status):
    """The backup.json document: the given facts, the status, the format version.

    Keys with value None are dropped so a failed record holds what is known.
    A complete record is built only from facts that show a restorable backup;
    otherwise the record says failed, and its error says what is missing.
    """
    if status not in STATUSES:
        raise BackupError("Unknown backup status %r." % status, "Use complete or failed.")
    record = dict((k, v) for k, v in facts.items() if v is not None)
    why = incomplete_because(record) if status == COMPLETE else None
    if why:
        status, record["error"] = FAILED, why
    record["status"] = status
    record["format"] = RECORD_VERSION
    ordered = dict((k, record[k]) for k in ORDER if k in record)
    for key in sorted(record):
        if key not in ordered:
            ordered[key] = record[key]
    return ordered


def write_record(backup_dir, record):
    """backup.json, atomically and on stable storage: a reader sees no record or a whole one."""
    path = os.path.join(backup_dir, RECORD_FILE)
    try:
        return atomic_write(path, json.dumps(record, indent=2) + "\n", 0o644)
    except (IOError, OSError) as exc:
        raise BackupError("backup.json could NOT be written in %s: %s." % (backup_dir, exc.strerror or exc),
                          NOT_RECORDED_HINT, record=record)


def read_record(backup_dir):
    try:
        with open(os.path.join(backup_dir, RECORD_FILE)) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def scan_backups(dest):
    """label -> backup.json for every directory of ``dest`` that holds one."""
    found = {}
    if not os.path.isdir(dest):
        return found
    for name in sorted(os.listdir(dest)):
        path = os.path.join(dest, name)
        if os.path.isdir(path) and not os.path.islink(path) and os.path.isfile(os.path.join(path, RECORD_FILE)):
            found[name] = read_record(path)
    return found


def record_argument_spec():
    return dict(
        backup_dir=dict(type="path", required=True),
        status=dict(type="str", choices=list(STATUSES), required=True),
        facts=dict(type="dict", default={}),
        parts=dict(type="list", elements="dict", default=[]),
        results=dict(type="dict", default={}, removed_in_version="1.0.0", removed_from_collection="pgexclusive.backup"),
        manifest=dict(type="bool", default=False),
    )


def record_backup(params, check_mode):
    """pg_backup_record: backup.json last, after every other output is on stable storage.

    A complete record needs facts that show a restorable backup, the manifest
    (when asked for) and an fsync of the whole backup directory; when any of
    that fails the record says failed, with why, and the module fails. A
    failed record is written even when the copy never created the directory:
    a run that started a backup always leaves a backup.json (the caller
    records only runs that started one).
    """
    backup_dir = params["backup_dir"]
    facts = dict(recorded(assemble(parts_of(params))), **params["facts"])
    facts.setdefault("finished_at", datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"))
    record = build_record(facts, params["status"])
    if check_mode:
        return dict(changed=True, record=record, manifest=None)
    manifest = failure = None
    if record["status"] == COMPLETE:
        try:
            manifest = _make_durable(backup_dir, facts, params["manifest"], params.get("remote"))
            record = build_record(dict(facts, manifest=manifest), COMPLETE)
        except BackupError as exc:
            failure = exc
            record = build_record(dict(facts, error=exc.msg), FAILED)
    if record["status"] == FAILED:
        _ensure_backup_dir(backup_dir, record)
    path = write_record(backup_dir, record)
    if failure is not None:
        failure.facts.update(record=record, path=path)
        raise failure
    if record["status"] != params["status"]:
        raise BackupError(
            "The backup in %s is not complete, so backup.json says failed: %s." % (backup_dir, record["error"]),
            "A backup is complete only when this run's stop ended the backup it started (stop LSN and WAL file "
            "known) and its WAL is archived or included: see this run's earlier tasks for why not, and take "
            "a new backup.", record=record, path=path)
    return dict(changed=True, record=record, path=path, manifest=manifest)


def _make_durable(backup_dir, facts, with_manifest, remote=None):
    """Write the manifest of a plain or tar copy, then fsync every file and directory of the backup.

    With a repository on another host (``remote``) the copy is not here: its
    manifest is read back from the repository (manifest.write_read_back_manifest)
    into ``backup_dir``, whose files send_record then puts beside the copy;
    the walk covers what is here (the record's own directory), the remote
    side is rsync's or ssh's to make durable. This runs after the stop, so
    reading a copy back for its checksums keeps no server in backup mode.
    """
    manifest = None
    try:
        if with_manifest and (copy_format(backup_dir) or remote):
            missing = [k for k in ("timeline", "start_lsn", "stop_lsn") if not facts.get(k)]
            if missing:
                raise BackupError("The manifest needs %s in facts." % ", ".join(missing),
                                  "Pass the start and stop results.")
            wal_range = (facts["timeline"], facts["start_lsn"], facts["stop_lsn"])
            if remote:
                manifest = write_read_back_manifest(backup_dir, remote, facts.get("outputs") or (), *wal_range)
            else:
                manifest = write_manifest(backup_dir, *wal_range)
        fsync_tree(backup_dir)
    except (IOError, OSError) as exc:
        raise BackupError("The backup in %s could not be made durable: %s." % (backup_dir, exc),
                          "Check the destination (space, permissions, I/O errors in the kernel log) and take "
                          "a new backup.")
    return manifest


def _ensure_backup_dir(backup_dir, record):
    """The directory of a failed record, created (0700) when the run failed before its copy made it."""
    if os.path.isdir(backup_dir):
        return
    try:
        os.makedirs(backup_dir, 0o700)
        fsync_path(os.path.dirname(os.path.abspath(backup_dir)))
    except (IOError, OSError) as exc:
        raise BackupError("backup.json could NOT be written in %s: %s." % (backup_dir, exc.strerror or exc),
                          NOT_RECORDED_HINT, record=record)


def check_entry(started_at, ok, duration, checks=(), error=None, check_ran=True):
    """One restore drill as backup.json's ``checks`` history keeps it.

    ``checks`` are the user's checks as the drill judged them (name, ok,
    returned, and the SQL error of one that failed to run); ``check_ran``
    false says the drill stopped before a server started on the copy, which
    says nothing about the backup.
    """
    entry = {"time": started_at, "ok": bool(ok), "check_ran": bool(check_ran), "duration": duration,
             "checks": [dict((k, c[k]) for k in ("name", "ok", "returned", "error") if k in c) for c in checks]}
    if error:
        entry["error"] = error
    return entry


def append_check(backup_dir, entry):
    """Add ``entry`` to the ``checks`` history of ``backup_dir``'s backup.json; nothing else of it changes.

    Two drills of one backup may end at once: the read and the rewrite happen
    under a lock on the backup directory (not on backup.json, which the atomic
    write replaces), so neither entry is lost.
    """
    try:
        lock = os.open(backup_dir, os.O_RDONLY)
    except OSError as exc:
        raise not_appended(backup_dir, exc)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = read_record(backup_dir)
        if record is None:
            raise BackupError("%s holds no readable backup.json to add the drill's result to." % backup_dir,
                              "Drill a backup this collection wrote (<dest>/<label>).")
        record["checks"] = list(record.get("checks") or []) + [entry]
        atomic_write(os.path.join(backup_dir, RECORD_FILE), json.dumps(record, indent=2) + "\n", 0o644)
        return record
    except (IOError, OSError) as exc:
        raise not_appended(backup_dir, exc)
    finally:
        os.close(lock)


def not_appended(backup_dir, exc):
    return BackupError("The drill's result could not be added to backup.json in %s: %s." % (
        backup_dir, getattr(exc, "strerror", None) or exc),
        "The drill's own result stands; make the backup directory writable (a read-only mount, permissions) "
        "to keep a history of drills in backup.json.")
