# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""backup_label: the label a user gives, and the file PostgreSQL writes."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import calendar
import re
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

LABEL_FILE = "backup_label"
TABLESPACE_MAP = "tablespace_map"
MAX_LABEL_BYTES = 1024

# Every character some reader of backup_label could take for the end of a line
# (str.splitlines splits on VT, FF, FS, GS, RS, NEL, U+2028 and U+2029 too) or that
# has no place in a one-line label: the C0 and C1 controls, DEL and the Unicode separators.
_FORBIDDEN = re.compile(u"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

_LINE = re.compile(r"^([A-Z][A-Z ]*[A-Z]): (.*)$")
_WAL_LOCATION = re.compile(r"^([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-F]{24})\)$")


def lines_of(text):
    """The lines PostgreSQL wrote: it ends them with '\\n' only, so only '\\n' splits them."""
    return [line[:-1] if line.endswith("\r") else line for line in (text or "").split("\n")]


def validate_label(label):
    """Refuse labels PostgreSQL or backup_label cannot hold faithfully."""
    if label is None or label == "":
        raise BackupError("The backup label is empty.", "Give a label that names this backup, e.g. 'nightly-2026-11-21'.")
    if "\x00" in label:
        raise BackupError("The backup label contains a NUL byte.", "Remove it.")
    if "\n" in label or "\r" in label:
        raise BackupError(
            "The backup label contains a line break.",
            "backup_label stores the label on one line: remove the line break.")
    bad = _FORBIDDEN.findall(label)
    if bad:
        raise BackupError(
            "The backup label contains the control or line-separator character %s." % ", ".join(
                sorted(set("U+%04X" % ord(char) for char in bad))),
            "Use printable characters only: backup_label stores the label on one line, and a line "
            "separator or control character there would make the label unreadable to the stop.")
    size = len(label.encode("utf-8"))
    if size > MAX_LABEL_BYTES:
        raise BackupError(
            "The backup label is %d bytes long; PostgreSQL accepts at most %d." % (size, MAX_LABEL_BYTES),
            "Shorten the label.")
    return label


def parse_backup_label(text):
    """The fields of a backup_label (or backup history file) as a dict.

    Keys: start_lsn, start_wal_file, stop_lsn, stop_wal_file, checkpoint_lsn,
    method, backup_from, start_time, stop_time, label, timeline,
    stop_timeline; absent lines give absent keys.
    """
    fields = {}
    for line in lines_of(text):
        match = _LINE.match(line)
        if not match:
            continue
        key, value = match.groups()
        if key in ("START WAL LOCATION", "STOP WAL LOCATION"):
            loc = _WAL_LOCATION.match(value)
            if loc:
                prefix = key.split()[0].lower()
                fields[prefix + "_lsn"] = loc.group(1)
                fields[prefix + "_wal_file"] = loc.group(2)
        elif key == "CHECKPOINT LOCATION":
            fields["checkpoint_lsn"] = value
        elif key == "BACKUP METHOD":
            fields["method"] = value
        elif key == "BACKUP FROM":
            fields["backup_from"] = value
        elif key == "START TIME":
            fields["start_time"] = value
        elif key == "STOP TIME":
            fields["stop_time"] = value
        elif key == "LABEL":
            fields["label"] = value
        elif key == "START TIMELINE":
            fields["timeline"] = int(value)
        elif key == "STOP TIMELINE":
            fields["stop_timeline"] = int(value)
    return fields


def restorable_label(text):
    """The backup_label text a restored copy needs.

    PostgreSQL 15+ only waits for the end-of-backup record when the method
    is 'streamed'; with 'pg_start_backup' it would call the copy consistent
    at the backup's start, before the files copied later are repaired by WAL.
    Only ever applied to a copy.
    """
    return re.sub(r"(?m)^BACKUP METHOD: pg_start_backup$", "BACKUP METHOD: streamed", text)


def tablespace(oid, location, name=None):
    """A tablespace as every module reports it: the one shape of the collection.

    ``oid`` is an integer (tablespace_map, pg_tblspc/ and pg_tablespace agree on
    it as a number); ``name`` is None where only the files are read. ``path`` is
    ``location`` again, under the key pg_start_backup's tablespace_map and
    pg_backup_copy's tablespaces returned before the shapes were one.
    """
    return {"oid": int(oid), "name": name, "location": location, "path": location}


def parse_tablespace_map(text):
    """tablespace_map lines '<oid> <path>' as tablespaces (see tablespace()).

    PostgreSQL escapes backslashes and line breaks in the path with a
    backslash; they are unescaped here.
    """
    entries = []
    for line in lines_of(text):
        if not line.strip():
            continue
        oid, _sep, path = line.partition(" ")
        entries.append(tablespace(oid, re.sub(r"\\(.)", r"\1", path)))
    return entries


_START_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (UTC|GMT|[+-]\d\d(?::?\d\d)?)$")


def start_time_epoch(start_time):
    """Seconds since the epoch of a START TIME written in UTC/GMT or a numeric zone.

    PostgreSQL writes the time in log_timezone; an abbreviation such as CET
    cannot be resolved without the server, so it gives None.
    """
    match = _START_TIME.match(start_time or "")
    if not match:
        return None
    stamp, zone = match.groups()
    seconds = calendar.timegm(time.strptime(stamp, "%Y-%m-%d %H:%M:%S"))
    if zone in ("UTC", "GMT"):
        return seconds
    digits = zone[1:].replace(":", "")
    offset = int(digits[:2]) * 3600 + int(digits[2:] or 0) * 60
    return seconds - offset if zone[0] == "+" else seconds + offset


def describe_backup(fields):
    """"'nightly' started 2026-11-21 10:56:35 UTC" for messages."""
    return "'%s' started %s" % (fields.get("label", "?"), fields.get("start_time", "at an unknown time"))
