# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a start or a stop finds means: pure decisions, no I/O.

Each function is given what was read (the server's backup_label, parsed, and
this label's state record) and names the situation; start.py and stop.py act
on each answer with one small function.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import (
    EXPIRED_STOPPED, RUNNING, STOPPED)
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import parse_lsn, same_lsn

# Both a start and a stop: the backup in progress carries another label.
SOMEONE_ELSES = "someone else's"

# A start, before its statement.
STARTABLE = "startable"
OURS_IN_PROGRESS = "ours in progress"
# A start, after its statement.
STARTED = "started"
GONE_AT_ONCE = "gone at once"

# A stop, under the stop lock.
OURS = "ours"
FORCED = "forced"
OURS_REPLACED = "ours replaced"
ENDED_WITHOUT_US = "ended without us"
SAFETY_STOPPED = "safety stopped"
ALREADY_STOPPED = "already stopped"
NOT_IN_PROGRESS = "not in progress"


def is_lsn(text):
    """True when ``text`` is a WAL location such as 0/2000028."""
    try:
        parse_lsn(text)
    except ValueError:
        return False
    return True


def decide_start(running, label):
    """What the backup in progress (or None) means to a start of ``label``."""
    if running is None:
        return STARTABLE
    if running.get("label") == label:
        return OURS_IN_PROGRESS
    return SOMEONE_ELSES


def decide_started(started, label):
    """What backup_label read right after this run's start statement means."""
    if started is not None and started.get("label") == label:
        return STARTED
    return GONE_AT_ONCE


def expected_start(start_lsn, record):
    """The start LSN of the backup this run started: the one it was given, else the one its running record holds."""
    return start_lsn or (record.get("start_lsn") if record is not None and record.get("outcome") == RUNNING else None)


def decide_stop(running, record, label, start_lsn, force):
    """What the backup in progress (or None) and ``label``'s state record mean to a stop.

    ``label`` is None only with ``force``: then any backup is someone else's.
    """
    expected = expected_start(start_lsn, record)
    if running is None:
        outcome = record.get("outcome") if record is not None else None
        if outcome == EXPIRED_STOPPED:
            return SAFETY_STOPPED
        if outcome == STOPPED and (not start_lsn or same_lsn(record.get("start_lsn"), start_lsn)):
            return ALREADY_STOPPED
        if label is not None and expected:
            return ENDED_WITHOUT_US
        return NOT_IN_PROGRESS
    if running.get("label") != label:
        return FORCED if force else SOMEONE_ELSES
    if expected and not same_lsn(running.get("start_lsn"), expected):
        return OURS_REPLACED
    return OURS
