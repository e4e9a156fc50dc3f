# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""backup_label: the label a user gives, and the file PostgreSQL writes."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import re

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

LABEL_FILE = "backup_label"
TABLESPACE_MAP = "tablespace_map"
MAX_LABEL_BYTES = 1024

_LINE = re.compile(r"^([A-Z][A-Z ]*[A-Z]): (.*)$")
_WAL_LOCATION = re.compile(r"^([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-F]{24})\)$")


def validate_label(label):
    """Refuse labels PostgreSQL or backup_label cannot hold faithfully."""
    if label is None or label == "":
        raise BackupError("The backup label is empty.", "Give a label that names this backup, e.g. 'nightly-2026-11-21'.")
    if "\n" in label or "\r" in label:
        raise BackupError(
            "The backup label contains a line break.",
            "backup_label stores the label on one line: remove the line break.")
    if "\x00" in label:
        raise BackupError("The backup label contains a NUL byte.", "Remove it.")
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
    for line in text.splitlines():
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
    at the backup's start (DESIGN.md). Only ever applied to a copy.
    """
    return re.sub(r"(?m)^BACKUP METHOD: pg_start_backup$", "BACKUP METHOD: streamed", text)
