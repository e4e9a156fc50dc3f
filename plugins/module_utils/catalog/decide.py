# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a backup's state means, and where each cluster stands: pure, no I/O (the catalog reads, this decides).

A backup is untrusted input: backup.json is taken apart field by field
(``clean``), so a record of the wrong types is reported, never crashes a
reader below. ``judge`` turns what the reader saw of one directory of dest into
its problems (each says what is wrong and what to do); a backup is restorable
when it has none. ``clusters`` groups the rows and finds each cluster's newest
restorable backup and newest verified restore, by start LSN, never by a date.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import calendar
import re
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_order import newest_first, record_lsn
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import (
    COMPLETE, FAILED, RECORD_VERSION, incomplete_because)

TEXT_FIELDS = ("label", "status", "error", "host", "data_directory", "server_version", "api", "method", "compression",
               "start_lsn", "stop_lsn", "start_wal_file", "stop_wal_file", "checkpoint_lsn", "backup_history_file",
               "start_time", "finished_at", "restore_hint")
NUMBER_FIELDS = ("format", "timeline", "duration", "copy_duration", "bytes")
KEEP_ASIDE = "Keep it aside for a person to look at, and restore another backup."
CHANGED = ("This collection never writes it so: someone or something changed the record, or another tool wrote it. "
           + KEEP_ASIDE)
# What to do about each kind of problem (docs/catalog.md says what each means).
WHAT_TO_DO = {
    "link": "A backup is a directory in dest itself; run the catalog on the directory the link points at if it "
            "is meant.",
    "no_record": "If no backup or drill runs now, look at what it holds and remove it: it cannot be restored as it is.",
    "unreadable_record": KEEP_ASIDE,
    "unknown_format": "Read it with the version of the collection that wrote it (or a newer one); until then restore "
                      "another backup.",
    "malformed_record": CHANGED,
    "unknown_status": CHANGED,
    "failed": "The run's output says more; take a new backup once the cause is fixed.",
    "incomplete": CHANGED,
    "copy_disagrees": "Someone or something changed this backup or its record after it was taken. " + KEEP_ASIDE,
    "no_manifest": "Take a new backup (tar, rsync and copy write a backup_manifest); a restore of this one can only "
                   "be unproved (verify: false).",
    "manifest_damaged": KEEP_ASIDE,
    "copy_differs": KEEP_ASIDE,
    "drill_failed": "Read the drill's error: if the data was wrong, keep the backup aside and take and drill a new "
                    "one; if the drill's own checks or host were wrong, drill again (playbooks/restore_drill.yml).",
    "wal_missing": "Put the segment back into the archive from another copy of it, or take a new backup (with "
                   "include_wal it carries its own WAL).",
    "wal_unknown": CHANGED,
}
_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.\d+)?(?: ?(?:UTC|GMT|Z|\+00(?::?00)?))$")


def problem(kind, message):
    return {"kind": kind, "message": message, "hint": WHAT_TO_DO[kind]}


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def clean(record):
    """(the fields of backup.json of the types this collection writes, the names of those of another type).

    None for a record that is no JSON object. A field of the wrong type is left out, so every reader below
    sees it as missing.
    """
    if not isinstance(record, dict):
        return None, []
    kept, wrong = {}, []

    def take(field, ok):
        if field in record and record[field] is not None:
            if ok(record[field]):
                kept[field] = record[field]
            else:
                wrong.append(field)

    for field in TEXT_FIELDS:
        take(field, lambda v: isinstance(v, str))
    for field in NUMBER_FIELDS:
        take(field, _is_number)
    take("archived", lambda v: isinstance(v, bool))
    take("system_identifier", lambda v: isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)))
    take("wal_included", lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v))
    take("manifest", lambda v: isinstance(v, dict))
    # The tar method records each output file's bytes by name; the others one number or none.
    take("output_bytes", lambda v: _is_number(v) or (isinstance(v, dict) and all(_is_number(n) for n in v.values())))
    take("repository", lambda v: isinstance(v, str))
    take("checks", lambda v: isinstance(v, list) and all(_is_drill(e) for e in v))
    if "system_identifier" in kept:
        kept["system_identifier"] = str(kept["system_identifier"])
    return kept, sorted(wrong)


def _is_drill(entry):
    return (isinstance(entry, dict) and isinstance(entry.get("ok"), bool) and isinstance(entry.get("time"), str)
            and isinstance(entry.get("check_ran", True), bool) and isinstance(entry.get("error", ""), str))


def latest_drill(record):
    """The last entry of backup.json's ``checks`` history: ok, time, check_ran, error; None when never drilled."""
    checks = (record or {}).get("checks") or []
    if not checks:
        return None
    last = checks[-1]
    return {"ok": last["ok"], "time": last["time"], "check_ran": last.get("check_ran", True),
            "error": last.get("error")}


def judge(seen):
    """The problems of one directory of dest, from what the reader ``seen`` (catalog/read.py::observe) there.

    ``seen`` holds ``entry`` ("directory" | "link"), ``link_to``, ``record`` (cleaned, None: none read),
    ``record_error`` (None, "missing" or why it could not be read), ``wrong_fields``, and for a complete
    record: ``copy`` (how the copy disagrees with it), ``manifest`` ("missing", why it is damaged, or None),
    ``files`` (how the files differ from the manifest, when checked) and ``wal`` ({missing: segment} or
    {error: why}, when an archive was given and the backup holds no WAL of its own).
    """
    if seen.get("entry") == "link":
        return [problem("link", "A symbolic link (to %s), not a backup directory: not followed." % seen.get("link_to"))]
    if seen.get("record_error") == "missing":
        return [problem("no_record", "No backup.json: a backup still being taken, a drill's throwaway directory, or a "
                                     "run that died before it recorded anything.")]
    record = seen.get("record")
    if record is None:
        return [problem("unreadable_record", "backup.json cannot be read: %s." % (seen.get("record_error") or "unknown"))]
    if record.get("format") != RECORD_VERSION:
        return [problem("unknown_format", "backup.json is of format %s; this version reads format %d."
                        % (record.get("format", "none given"), RECORD_VERSION))]
    found = []
    if seen.get("wrong_fields"):
        found.append(problem("malformed_record", "backup.json has fields of a type this collection never writes: %s."
                             % ", ".join(seen["wrong_fields"])))
    status = record.get("status")
    if status == FAILED:
        return found + [problem("failed", "The backup failed: %s." % (record.get("error") or "no error recorded").rstrip("."))]
    if status != COMPLETE:
        return found + [problem("unknown_status", "backup.json's status is %s, neither complete nor failed."
                                % (status or "missing"))]
    why = incomplete_because(record)
    if why:
        found.append(problem("incomplete", "backup.json says complete, but it names %s." % why))
    if seen.get("copy"):
        found.append(problem("copy_disagrees", "The copy is not what backup.json claims: %s." % seen["copy"].rstrip(".")))
    if seen.get("manifest") == "missing":
        found.append(problem("no_manifest", "No backup_manifest: nothing proves the copy's files are those the backup "
                                            "wrote."))
    elif seen.get("manifest"):
        found.append(problem("manifest_damaged", "The backup_manifest is damaged: %s." % seen["manifest"].rstrip(".")))
    if seen.get("files"):
        found.append(problem("copy_differs", "%s." % seen["files"].rstrip(".")))
    drill = latest_drill(record)
    if drill and not drill["ok"] and drill["check_ran"]:
        found.append(problem("drill_failed", "The latest restore drill (%s) failed: %s." % (
            drill["time"], (drill.get("error") or "no error recorded").rstrip("."))))
    wal = seen.get("wal") or {}
    if wal.get("missing"):
        found.append(problem("wal_missing", "The WAL segment %s, which the backup needs from its start to its stop, is "
                                            "not in the archive %s." % (wal["missing"], wal.get("archive"))))
    elif wal.get("error"):
        found.append(problem("wal_unknown", "Which WAL the backup needs cannot be told: %s." % wal["error"].rstrip(".")))
    return found


def needs_copy_checks(record):
    """Whether the copy, manifest and WAL of a backup are worth reading: only a complete record's are."""
    return bool(record) and record.get("format") == RECORD_VERSION and record.get("status") == COMPLETE


def parse_time(text):
    """Seconds since the epoch of a UTC time as backup_label ('2026-11-21 10:56:35 UTC') or backup.json
    ('2026-11-21T10:56:35Z') write it; None for anything else (a time zone this does not know)."""
    match = _TIME.match(text) if isinstance(text, str) else None
    if not match:
        return None
    try:
        return float(calendar.timegm(time.strptime("%s %s" % match.groups(), "%Y-%m-%d %H:%M:%S")))
    except ValueError:
        return None


def utc(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)) if seconds is not None else None


def stop_time(record):
    """When backup mode ended: the start plus the time in backup mode, else when the record was written."""
    start = parse_time(record.get("start_time"))
    if start is not None and _is_number(record.get("duration")):
        return start + record["duration"]
    return parse_time(record.get("finished_at"))


def row(label, path, seen, problems):
    """The catalog's row of one directory of dest."""
    record = seen.get("record") or {}
    stopped = stop_time(record)
    return {
        "label": label, "path": path, "status": record.get("status") if record else None,
        "cluster": cluster_of(record), "method": record.get("method"), "compression": record.get("compression"),
        "start_time": record.get("start_time"), "stop_time": utc(stopped), "duration": record.get("duration"),
        "copy_duration": record.get("copy_duration"), "bytes": record.get("bytes"),
        "output_bytes": _total(record.get("output_bytes")), "timeline": record.get("timeline"),
        "start_lsn": record.get("start_lsn"), "stop_lsn": record.get("stop_lsn"),
        "start_wal_file": record.get("start_wal_file"), "stop_wal_file": record.get("stop_wal_file"),
        "wal_included": bool(record.get("wal_included")), "wal_checked": "wal" in seen, "drill": latest_drill(record),
        "restorable": not problems, "problems": problems,
    }


def _total(sizes):
    return sum(sizes.values()) if isinstance(sizes, dict) else sizes


def cluster_of(record):
    return {"system_identifier": (record or {}).get("system_identifier"), "host": (record or {}).get("host"),
            "data_directory": (record or {}).get("data_directory")}


def _key(cluster):
    return (cluster["system_identifier"], cluster["host"], cluster["data_directory"])


def clusters(rows, records, now):
    """Per cluster (system identifier, host, data directory): its backups newest first and where it stands.

    A failed run may have recorded no system identifier (it failed before its copy read pg_control): it joins
    the one cluster of the same host and data directory, when there is exactly one. ``records`` maps label ->
    cleaned backup.json, for the order by start LSN. Directories that name no cluster form one group whose
    system identifier is None.
    """
    known = sorted(set(_key(r["cluster"]) for r in rows if r["cluster"]["system_identifier"]), key=str)
    groups = dict((key, []) for key in known)
    for r in rows:
        key = _key(r["cluster"])
        if key[0] is None:
            same_place = [k for k in known if k[1:] == key[1:]] if any(key[1:]) else []
            key = same_place[0] if len(same_place) == 1 else (None, None, None)
        groups.setdefault(key, []).append(r)
    result = []
    for key, members in groups.items():
        by_label = dict((r["label"], r) for r in members)
        with_lsn = dict((label, records.get(label) or {}) for label in by_label)
        # Without a start LSN nothing says where a backup lies: those follow, by name.
        ordered = [by_label[label] for label in newest_first(with_lsn) if record_lsn(with_lsn[label]) is not None]
        ordered += [by_label[label] for label in sorted(by_label) if record_lsn(with_lsn[label]) is None]
        good = [r for r in ordered if r["restorable"]]
        verified = [r for r in good if r["drill"] and r["drill"]["ok"]]
        result.append({
            "system_identifier": key[0], "host": key[1], "data_directory": key[2],
            "backups": [r["label"] for r in ordered],
            "newest_restorable": good[0]["label"] if good else None,
            "newest_restorable_stop_time": good[0]["stop_time"] if good else None,
            "newest_restorable_age": _age(now, parse_time(good[0]["stop_time"])) if good else None,
            "newest_verified": verified[0]["label"] if verified else None,
            "newest_verified_at": verified[0]["drill"]["time"] if verified else None,
            "newest_verified_age": _age(now, parse_time(verified[0]["drill"]["time"])) if verified else None,
        })
    result.sort(key=lambda c: (c["system_identifier"] is None, str(c["system_identifier"]), str(c["host"]),
                               str(c["data_directory"])))
    return result


def _age(now, then):
    return None if then is None else round(now - then, 3)
