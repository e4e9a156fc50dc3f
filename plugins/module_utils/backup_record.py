# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""backup.json, the WAL a backup needs, and retention: the backup directory's bookkeeping.

Pure functions where possible; the few that touch files take paths. The
modules pg_backup_record, pg_backup_wal and pg_backup_retention are one call
each into this file.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import errno
import json
import os
import shutil
import stat
import subprocess

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import (
    COMPRESSIONS, DATA_SUBDIR, TAR_COMPRESS_ARG, tar_name)
from ansible_collections.pgexclusive.backup.plugins.module_utils.durable import atomic_write, fsync_path, fsync_tree
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import write_manifest
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal import segment_name, segment_number

RECORD_FILE = "backup.json"
RECORD_VERSION = 1
COMPLETE = "complete"
FAILED = "failed"
STATUSES = (COMPLETE, FAILED)
# backup.json's fields, in the order written: each is the first value found among its sources, (task, key)
# in the results of the run's tasks as registered; key None takes the whole result. "run" holds what the
# caller knows of the run itself (label, host, method, compression, data_directory).
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
    ("tablespaces", (("copy", "tablespaces"),)),
    ("label_fixed", (("copy", "label_fixed"),)),
    ("restore_hint", (("copy", "restore_hint"),)),
    ("wal_included", (("wal", "wal_files"),)),
    ("verify_restore", (("verify", None),)),
)
# The record's keys, in the order they are written (anything else follows, sorted).
ORDER = ("format", "label", "status", "error") + tuple(field for field, _sources in SCHEMA[1:]) + (
    "finished_at", "manifest")


def facts_from_results(results):
    """backup.json's facts picked out of the run's task results by SCHEMA; a task that did not run gives none."""
    facts = {}
    for field, sources in SCHEMA:
        for task, key in sources:
            result = results.get(task)
            if not isinstance(result, dict) or result.get("skipped"):
                continue
            value = result if key is None else result.get(key)
            if value is not None:
                facts[field] = value
                break
    return facts


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


def record_argument_spec():
    return dict(
        backup_dir=dict(type="path", required=True),
        status=dict(type="str", choices=list(STATUSES), required=True),
        facts=dict(type="dict", default={}),
        results=dict(type="dict", default={}),
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
    facts = dict(facts_from_results(params.get("results") or {}), **params["facts"])
    facts.setdefault("finished_at", datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"))
    record = build_record(facts, params["status"])
    if check_mode:
        return dict(changed=True, record=record, manifest=None)
    manifest = failure = None
    if record["status"] == COMPLETE:
        try:
            manifest = _make_durable(backup_dir, facts, params["manifest"])
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


def _make_durable(backup_dir, facts, with_manifest):
    """Write the manifest of a plain copy, then fsync every file and directory of the backup.

    With a remote rsync target the copy is not here: the walk covers what is
    (the record's own directory), the remote side is rsync's to make durable.
    """
    manifest = None
    try:
        if with_manifest and os.path.isdir(os.path.join(backup_dir, DATA_SUBDIR)):
            missing = [k for k in ("timeline", "start_lsn", "stop_lsn") if not facts.get(k)]
            if missing:
                raise BackupError("The manifest needs %s in facts." % ", ".join(missing),
                                  "Pass the start and stop results.")
            manifest = write_manifest(backup_dir, facts["timeline"], facts["start_lsn"], facts["stop_lsn"])
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


# -- WAL ---------------------------------------------------------------------

def _segment_number(name, segment_size):
    try:
        return segment_number(name, segment_size)
    except ValueError:
        raise BackupError("%r is not a WAL segment name." % (name,), "Expect 24 hexadecimal digits.")


def segments_between(start, stop, segment_size):
    """Every WAL segment name from ``start`` to ``stop`` inclusive (one timeline)."""
    tli, first = _segment_number(start, segment_size)
    stop_tli, last = _segment_number(stop, segment_size)
    if stop_tli != tli:
        raise BackupError(
            "The backup starts on timeline %d and stops on timeline %d." % (tli, stop_tli),
            "A promotion happened during the backup: take a new backup.")
    if last < first:
        raise BackupError("The stop WAL file %s comes before the start WAL file %s." % (stop, start),
                          "Pass the WAL files of one backup.")
    return [segment_name(tli, n, segment_size) for n in range(first, last + 1)]


def include_wal(archive_dir, backup_dir, target_dir, start_wal_file, stop_wal_file, history_file=None):
    """Copy the segments from start to stop (and the history file) out of the archive into ``target_dir``.

    ``target_dir`` lies inside ``backup_dir``, and every file lands there or
    nowhere: a copy's pg_wal may be a link to the live server's WAL directory,
    where old segments would be archived again. Fails naming the first missing
    segment before anything is written: a backup that claims to be
    self-contained must be.
    """
    first = os.path.join(archive_dir, start_wal_file)
    if not os.path.isfile(first):
        raise BackupError(
            "WAL segment %s is not in the archive %s." % (start_wal_file, archive_dir),
            "include_wal reads the WAL archive the server's archive_command writes (uncompressed): "
            "check exclusive_backup_wal_archive_dir and archiving.")
    segment_size = os.path.getsize(first)
    names = segments_between(start_wal_file, stop_wal_file, segment_size)
    if history_file:
        names.append(history_file)
    for name in names:
        if not os.path.isfile(os.path.join(archive_dir, name)):
            raise BackupError("WAL file %s is not in the archive %s." % (name, archive_dir),
                              "Wait for archiving (pg_stat_archiver) and check archive_command.")
    target_fd = open_inside(backup_dir, target_dir)
    try:
        for name in names:
            _copy_into(os.path.join(archive_dir, name), target_fd, name, target_dir)
    finally:
        os.close(target_fd)
    return names


def open_inside(backup_dir, target_dir):
    """A descriptor of ``target_dir``, created (0700) as needed, never through a symbolic link.

    Each component below ``backup_dir`` is opened relative to the one before
    with O_NOFOLLOW, so no link, and no link swapped in meanwhile, can lead
    the writes out of the backup: realpath(target) stays inside
    realpath(backup_dir).
    """
    rel = os.path.relpath(os.path.normpath(target_dir), os.path.normpath(backup_dir))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        raise BackupError("%s is not inside the backup directory %s. Nothing was written." % (target_dir, backup_dir),
                          "Pass a target inside the backup directory.")
    try:
        fd = os.open(os.path.realpath(backup_dir), os.O_RDONLY | os.O_DIRECTORY)
    except (IOError, OSError) as exc:
        raise BackupError("Cannot read the backup directory %s: %s." % (backup_dir, exc.strerror or exc),
                          "Give the directory of a finished copy, <dest>/<label>.")
    path = backup_dir
    try:
        for part in ([] if rel == os.curdir else rel.split(os.sep)):
            path = os.path.join(path, part)
            child = _subdirectory(fd, part, path, backup_dir)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _subdirectory(dir_fd, name, path, backup_dir):
    """A descriptor of the directory ``name`` in ``dir_fd``, created (0700) when missing; a link is refused."""
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
        if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
            raise BackupError(
                "%s is a symbolic link (to %s): writing through it would leave the backup directory %s. "
                "Nothing was written." % (path, os.path.realpath(path), backup_dir),
                "The copy must hold a real directory there, never a link to the live server's files: "
                "take a new backup with a copy that does not keep that link.")
        # O_NOFOLLOW: a link swapped in since the check fails here instead of being followed.
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except (IOError, OSError) as exc:
        raise BackupError("Cannot create %s in the backup: %s." % (path, exc.strerror or exc),
                          "Check space and permissions in the backup directory.")


def _copy_into(src, dir_fd, name, target_dir):
    """Create ``name`` in ``dir_fd`` (never over an existing file or link) with ``src``'s content, mode and times."""
    try:
        st = os.stat(src)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as out, open(src, "rb") as handle:
            shutil.copyfileobj(handle, out, 1 << 20)
            os.fchmod(out.fileno(), stat.S_IMODE(st.st_mode))
            out.flush()
            os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
    except (IOError, OSError) as exc:
        raise BackupError("Cannot copy %s into %s: %s." % (src, target_dir, exc.strerror or exc),
                          "include_wal writes into an empty WAL directory of the backup and never replaces a "
                          "file: check what is already there, and space and permissions.")


def wal_argument_spec():
    return dict(
        backup_dir=dict(type="path", required=True),
        wal_archive_dir=dict(type="path", required=True),
        start_wal_file=dict(type="str", required=True),
        stop_wal_file=dict(type="str", required=True),
        backup_history_file=dict(type="str"),
        compression=dict(type="str", choices=list(COMPRESSIONS), default="none"),
    )


def backup_wal(params, check_mode):
    """pg_backup_wal: the WAL into data/pg_wal/ (plain), pg_wal.tar (tar) or pg_wal/ (command)."""
    if check_mode:
        return dict(changed=True, wal_files=[], location=None)
    backup_dir = params["backup_dir"]
    try:
        present = os.listdir(backup_dir)
    except (IOError, OSError) as exc:
        raise BackupError("Cannot read the backup directory %s: %s." % (backup_dir, exc.strerror or exc),
                          "Give the directory of a finished copy, <dest>/<label>.")
    plain = DATA_SUBDIR in present
    tarred = not plain and any(n.startswith("base.tar") for n in present)
    target = os.path.join(backup_dir, DATA_SUBDIR, "pg_wal") if plain else os.path.join(backup_dir, "pg_wal")
    output = os.path.join(backup_dir, tar_name("pg_wal", params["compression"]))
    if tarred and os.path.lexists(output):
        raise BackupError("%s already exists. Nothing was written." % output,
                          "include_wal writes pg_wal.tar once, into a backup that has none.")
    files = include_wal(params["wal_archive_dir"], backup_dir, target, params["start_wal_file"],
                        params["stop_wal_file"], params["backup_history_file"])
    if not tarred:
        return dict(changed=True, wal_files=files, location=os.path.relpath(target, backup_dir))
    argv = ["tar", "-C", target, "-cf", output] + TAR_COMPRESS_ARG[params["compression"]] + sorted(files)
    try:
        rc = subprocess.call(argv)
    except (IOError, OSError) as exc:
        raise BackupError("tar of the WAL could not run: %s" % exc, "Install tar (and zstd for zstd).")
    if rc != 0:
        raise BackupError("tar of the WAL failed with exit code %d: %s" % (rc, " ".join(argv)),
                          "Check space and permissions in the backup directory.")
    try:
        shutil.rmtree(target)
    except (IOError, OSError) as exc:
        raise BackupError("%s is packed into %s, but could not be removed: %s." % (target, output, exc),
                          "Remove it by hand; the backup itself is fine.")
    return dict(changed=True, wal_files=files, location=os.path.basename(output))


# -- retention ----------------------------------------------------------------

def same_cluster(record, cluster):
    """True when backup.json names ``cluster``: its system identifier, and data directory and host when given.

    A record without a system identifier (written before it was recorded) is
    nobody's: it is never taken for this cluster's.
    """
    if not record.get("system_identifier") or str(record["system_identifier"]) != str(cluster["system_identifier"]):
        return False
    if cluster.get("data_directory") and os.path.normpath(record.get("data_directory") or "") != os.path.normpath(
            cluster["data_directory"]):
        return False
    return not cluster.get("host") or record.get("host") == cluster["host"]


def retention_plan(records, keep, current, cluster):
    """Which labels to remove, and why the others stay.

    ``records`` maps label -> backup.json content (None: unreadable). Only
    complete backups of ``cluster`` (see same_cluster) are candidates; all but
    the newest ``keep`` of them go, never ``current``. Failed or unreadable
    backups are left alone (reported, not removed: someone may be looking at
    them), as are other clusters' and unidentified ones. ``keep`` 0 keeps
    everything; at least 1 otherwise, so the newest complete backup always stays.
    """
    if keep < 0:
        raise BackupError("keep is %d; it must be 0 (keep everything) or more." % keep,
                          "Set keep to the number of complete backups of this cluster to keep.")
    plan = dict(removed=[], kept=[], failed_backups=[], other_clusters=[], unidentified=[])
    ours = []
    for label, record in sorted(records.items()):
        if not record or record.get("status") != COMPLETE:
            plan["failed_backups"].append(label)
        elif not record.get("system_identifier"):
            plan["unidentified"].append(label)
        elif not same_cluster(record, cluster):
            plan["other_clusters"].append(label)
        else:
            ours.append((record.get("finished_at") or "", label))
    ours.sort(reverse=True)
    for position, (_finished, label) in enumerate(ours):
        remove = keep > 0 and position >= keep and label != current
        plan["removed" if remove else "kept"].append(label)
    plan["removed"].sort()
    plan["kept"].sort()
    return plan


def retention_argument_spec():
    return dict(
        dest=dict(type="path", required=True),
        keep=dict(type="int", required=True),
        current=dict(type="str", required=True),
        system_identifier=dict(type="str", required=True),
        data_directory=dict(type="path"),
        host=dict(type="str"),
    )


def apply_retention(params, check_mode):
    """pg_backup_retention: remove this cluster's complete backups beyond the newest ``keep``."""
    try:
        records = scan_backups(params["dest"])
    except (IOError, OSError) as exc:
        raise BackupError("Cannot read the backups in %s: %s." % (params["dest"], exc.strerror or exc),
                          "Run as a user who may read the destination (become: true).")
    plan = retention_plan(records, params["keep"], params["current"], params)
    if not check_mode:
        for done, label in enumerate(plan["removed"]):
            _remove_backup(params["dest"], label, plan["removed"][:done])
    return dict(plan, changed=bool(plan["removed"]))


def _remove_backup(dest, label, removed):
    """backup.json goes first: a backup half removed must never still claim to be complete."""
    path = os.path.join(dest, label)
    try:
        os.unlink(os.path.join(path, RECORD_FILE))
        fsync_path(path)
        shutil.rmtree(path)
    except (IOError, OSError) as exc:
        raise BackupError(
            "Retention could not remove the backup %s: %s." % (path, exc),
            "Its backup.json is gone if the removal started, so nothing takes it for a complete backup; "
            "remove the rest by hand once the cause (permissions, a busy mount) is fixed.", removed=removed)


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
