# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore_wal: the WAL a restore will replay, listed before anything is laid out, and the gaps in it.

Recovery that meets a missing segment ends there, without an error, even
when later segments are archived: ``latest`` would promote at the gap, and a
time target past it would end short. So the archive (and the WAL the backup
holds itself) is listed from the backup's start on, along the timeline that
recovery will follow (the backup's, or a later one through its .history
file), and a segment missing before the target is named before anything is
written. A custom restore_command fetches from where only it knows: its WAL
cannot be listed, and the result says so.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import (
    infer_segment_size, parse_lsn, segment_name, segment_number)


def history_name(timeline):
    return "%08X.history" % timeline


def parse_history(text):
    """[(parent timeline, switch point as an int)] of a timeline history file, oldest first."""
    entries = []
    for line in (text or "").splitlines():
        fields = line.strip().split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            entries.append((int(fields[0]), parse_lsn(fields[1])))
        except (IndexError, ValueError):
            raise BackupError("The timeline history file in the WAL archive has a line that is not "
                              "'<timeline> <switch point> <reason>': %r." % line.strip(),
                              "Check the archive: PostgreSQL writes these files on promotion.")
    return entries


def target_timeline(wanted, backup_timeline, names):
    """The timeline recovery will follow: ``wanted`` (recovery_target_timeline: latest, current or a number)
    against the backup's timeline; for latest, as PostgreSQL finds it, the last of the timelines after the
    backup's whose history files the archive holds one after another."""
    if wanted in (None, "", "latest"):
        timeline = backup_timeline
        while history_name(timeline + 1) in names:
            timeline += 1
        return timeline
    if wanted == "current":
        return backup_timeline
    return int(wanted)


def chain(timeline, history):
    """[(timeline, first LSN on it)] from the first timeline to ``timeline``, from its history entries."""
    links = [(parent, 0) for parent, _switch in history[:1]]
    links += [(history[i + 1][0], history[i][1]) for i in range(len(history) - 1)]
    return links + [(timeline, history[-1][1] if history else 0)]


def timeline_of_segment(links, segno, segment_size):
    """The timeline whose copy of segment ``segno`` recovery reads: the newest one begun at or before it."""
    found = None
    for timeline, begin in links:
        if begin // segment_size <= segno:
            found = timeline
    return found


def find_gap(names, start_wal_file, segment_size, links, last_segno=None):
    """(the first missing segment or None, the newest segment on the way) from the backup's start on.

    ``names`` is the archive listing (and the backup's own WAL), ``links``
    chain()'s list, ``last_segno`` the segment number of an LSN target (later
    segments do not matter to it). (None, None) when nothing is on the way.
    """
    first = segment_number(start_wal_file, segment_size)[1]
    present = set()
    for name in names:
        try:
            present.add(segment_number(name, segment_size))
        except ValueError:
            continue   # .history, .backup, .partial and the like: not a segment recovery restores
    on_the_way = [segno for tli, segno in present
                  if segno >= first and tli == timeline_of_segment(links, segno, segment_size)]
    if not on_the_way:
        return None, None
    newest = max(on_the_way)

    def name_of(segno):
        return segment_name(timeline_of_segment(links, segno, segment_size), segno, segment_size)

    last = newest if last_segno is None else min(last_segno, newest)
    gap = next((name_of(segno) for segno in range(first, last + 1)
                if (timeline_of_segment(links, segno, segment_size), segno) not in present), None)
    return gap, name_of(newest)


def not_checked(reason):
    return {"checked": False, "reason": reason}


def plan(params, record, list_wal):
    """What recovery will find in the archive: a dict for the result (``wal_gap_check``).

    ``list_wal()`` returns (the names in the archive and the backup's own
    WAL, {timeline: the text of its history file}), as listing() reads them;
    it is called only when the WAL is to be listed. ``checked`` false says why
    the WAL could not be listed; otherwise ``gap`` names the first segment
    missing before the target (None without one), ``newest_segment`` the
    newest segment on recovery's way, ``timeline`` the timeline it follows.
    """
    if params.get("restore_command"):
        return not_checked("a custom restore_command fetches WAL from where only it knows: its WAL cannot be "
                           "listed, so a gap in it is not looked for")
    target = params.get("target") or "immediate"
    if target == "immediate":
        return not_checked("the target %s needs only the WAL up to the backup's stop, checked on its own" % target)
    start = record.get("start_wal_file")
    size = infer_segment_size(record.get("start_lsn"), start) if start else None
    if not size:
        return not_checked("backup.json does not tell the backup's start WAL file and LSN")
    backup_timeline, first = segment_number(start, size)
    names, histories = list_wal()
    timeline = target_timeline(params.get("target_timeline"), backup_timeline, names)
    history = []
    if timeline != backup_timeline:
        if timeline not in histories:
            return not_checked("the archive holds no readable history file of timeline %d: PostgreSQL itself "
                               "decides" % timeline)
        history = parse_history(histories[timeline])
    links = chain(timeline, history)
    if timeline_of_segment(links, first, size) != backup_timeline:
        return not_checked("timeline %d branched off before the backup started: PostgreSQL itself decides" % timeline)
    last_segno = parse_lsn(params["target_lsn"]) // size if target == "lsn" else None
    gap, newest = find_gap(names, start, size, links, last_segno)
    return {"checked": True, "timeline": timeline, "gap": gap, "newest_segment": newest,
            "allowed": bool(gap and params.get("allow_wal_gap"))}


def gap_error(found, params, archive):
    """The refusal of a restore whose target lies past a gap in the archive."""
    target = params.get("target")
    if target == "latest":
        what, before = "latest", "the newest archived WAL"
    elif target == "lsn":
        what, before = "target_lsn %s" % params["target_lsn"], "its target"
    else:
        what = "target_%s %s" % (target, params["target_" + target])
        before = "the newest archived WAL (where a %s target lies is known only once replay finds it)" % target
    return BackupError(
        "The WAL archive (%s) has a gap: the segment %s is missing, and later segments (up to %s) are there. "
        "Recovery to %s would end at the gap, before %s. Nothing was restored."
        % (archive or "none given", found["gap"], found["newest_segment"], what, before),
        "Put %s back into the archive (from the server's pg_wal or another copy of the archive) and restore "
        "again, or set allow_wal_gap: true (the role: restore_allow_wal_gap) to end the restore at the gap on "
        "purpose." % found["gap"], wal_gap=found["gap"], wal_gap_check=found)


def listing(archive, included):
    """(every name in the archive directory and in ``included``, {timeline: text} of its history files)."""
    names = set(included or ())
    histories = {}
    if archive:
        try:
            found = os.listdir(archive)
        except (IOError, OSError) as exc:
            raise BackupError("The WAL archive %s cannot be listed: %s. Nothing was restored."
                              % (archive, exc.strerror or exc),
                              "Give a readable wal_archive_dir: the restore lists it for gaps before it writes.")
        names.update(found)
        for name in found:
            if name.endswith(".history") and len(name) == 16:
                try:
                    with open(os.path.join(archive, name)) as handle:
                        histories[int(name[:8], 16)] = handle.read()
                except (IOError, OSError, ValueError):
                    continue   # an unreadable history file: recovery cannot follow that timeline either
    return names, histories
