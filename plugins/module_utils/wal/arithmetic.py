# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""WAL locations and WAL file names: the one place that does their arithmetic.

Mirrors PostgreSQL's xlog_internal.h so the names computed here are the names
the server writes into pg_wal/ and hands to archive_command.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import re

_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
# PostgreSQL accepts power-of-two segment sizes from 1 MB to 1 GB.
SEGMENT_SIZES = tuple(1024 * 1024 << shift for shift in range(11))


def parse_lsn(text):
    """'0/2000028' -> 33554472."""
    match = _LSN.match(text or "")
    if not match:
        raise ValueError("not a WAL location: %r" % (text,))
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def same_lsn(one, other):
    """LSNs compare as numbers: newer releases print them zero-padded (0/02000028). False for a non-LSN."""
    try:
        return parse_lsn(one) == parse_lsn(other)
    except ValueError:
        return False


def _segments_per_id(segment_size):
    return 0x100000000 // segment_size


def segment_name(timeline, segno, segment_size):
    per_id = _segments_per_id(segment_size)
    return "%08X%08X%08X" % (timeline, segno // per_id, segno % per_id)


def segment_number(wal_file, segment_size):
    """(timeline, segment number) of a WAL file name: the inverse of segment_name."""
    match = _SEGMENT.match(wal_file or "")
    if not match:
        raise ValueError("not a WAL segment name: %r" % (wal_file,))
    timeline, log_id, seg = (int(part, 16) for part in match.groups())
    return timeline, log_id * _segments_per_id(segment_size) + seg


def segment_of(timeline, lsn, segment_size):
    """The file holding the byte at ``lsn`` (XLByteToSeg, as backup_label names it)."""
    return segment_name(timeline, parse_lsn(lsn) // segment_size, segment_size)


def last_segment_before(timeline, lsn, segment_size):
    """The file holding the last byte before ``lsn`` (XLByteToPrevSeg).

    This is what pg_walfile_name() returns: a stop location on a segment
    boundary needs only the segment that ends there.
    """
    return segment_name(timeline, (parse_lsn(lsn) - 1) // segment_size, segment_size)


def backup_history_file(start_wal_file, start_lsn, segment_size):
    """<start segment>.<offset of the start in it, 8 hex>.backup, written by the stop."""
    return "%s.%08X.backup" % (start_wal_file, parse_lsn(start_lsn) % segment_size)


def timeline_of(wal_file):
    return int(wal_file[:8], 16)


def infer_segment_size(lsn, wal_file):
    """The segment size under which ``lsn`` lies in ``wal_file``, or None.

    Lets a stopped server's backup_label be checked against pg_wal/ without
    reading the binary pg_control.
    """
    if not _SEGMENT.match(wal_file or ""):
        return None
    timeline = timeline_of(wal_file)
    for size in SEGMENT_SIZES:
        if segment_of(timeline, lsn, size) == wal_file:
            return size
    return None


def archived_according_to(last_archived_wal, wal_file):
    """True when the archiver reporting ``last_archived_wal`` has archived ``wal_file``.

    The archiver takes ready files in name order, so within one timeline a
    name at or past ``wal_file`` means ``wal_file`` is done. Another timeline
    (or a timeline history file) proves nothing.
    """
    if not last_archived_wal or last_archived_wal[:8] != wal_file[:8]:
        return False
    if not _SEGMENT.match(last_archived_wal[:24]):
        return False
    return last_archived_wal >= wal_file
