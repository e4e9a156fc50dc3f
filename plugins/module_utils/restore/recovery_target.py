# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore_target: the recovery settings of a restore, and what the server's log says went wrong.

Pure functions: the options a user gives become the lines written to the
restored copy's configuration (PostgreSQL docs, "Recovery Target"), checked
before anything is copied; a recovery that stopped is explained from its log.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import calendar
import re
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import parse_lsn

TARGETS = ("immediate", "latest", "time", "lsn", "name", "xid")
ACTIONS = ("promote", "pause", "shutdown")
# The option holding the value of each target that needs one.
TARGET_VALUE = {"time": "target_time", "lsn": "target_lsn", "name": "target_name", "xid": "target_xid"}
RECOVERY_SETTING = {"time": "recovery_target_time", "lsn": "recovery_target_lsn", "name": "recovery_target_name",
                    "xid": "recovery_target_xid"}
SEGMENT = re.compile(r"\b([0-9A-F]{24})\b")


def lsn_or_none(text):
    try:
        return parse_lsn(text)
    except ValueError:
        return None


def quote(value):
    """A configuration file string literal."""
    return "'" + value.replace("'", "''") + "'"


def shell_quote(value):
    return "'" + value.replace("'", "'\"'\"'") + "'"


def restore_command_for(wal_archive_dir):
    """A restore_command that only reads the archive directory.

    Without an archive 'false': the WAL then comes from the copy's pg_wal/
    (include_wal), and PostgreSQL refuses archive recovery with no
    restore_command at all.
    """
    if not wal_archive_dir:
        return "false"
    # % is restore_command's escape character, the shell's quoting keeps spaces.
    return "cp %s/%%f %%p" % shell_quote(wal_archive_dir.rstrip("/") or "/").replace("%", "%%")


def check_target(params):
    """Refuse a target whose value is missing, given for another target, or malformed; returns params."""
    target = params.get("target") or "immediate"
    if target not in TARGETS:
        raise BackupError("Unknown recovery target %r." % target, "Use one of %s." % ", ".join(TARGETS))
    action = params.get("target_action") or "promote"
    if action not in ACTIONS:
        raise BackupError("Unknown recovery target action %r." % action, "Use one of %s." % ", ".join(ACTIONS))
    for kind, option in TARGET_VALUE.items():
        value = params.get(option)
        if kind == target and value in (None, ""):
            raise BackupError("The recovery target %s needs %s." % (target, option),
                              "Set %s, e.g. %s." % (option, EXAMPLE[kind]))
        if kind != target and value not in (None, ""):
            raise BackupError("%s is set, but the recovery target is %s." % (option, target),
                              "Set target to %s to stop there, or leave %s out." % (kind, option))
    if target == "lsn" and lsn_or_none(params["target_lsn"]) is None:
        raise BackupError("target_lsn %r is not an LSN." % params["target_lsn"],
                          "Give it as PostgreSQL prints one, e.g. 0/3000060.")
    if target == "xid" and not str(params["target_xid"]).isdigit():
        raise BackupError("target_xid %r is not a transaction id." % params["target_xid"],
                          "Give the number txid_current() returned, e.g. 1234.")
    if target == "time" and "\n" in params["target_time"]:
        raise BackupError("target_time holds a line break.", "Give one timestamp, e.g. 2026-11-21 14:03:00+00.")
    timeline = params.get("target_timeline")
    if timeline not in (None, "", "latest", "current") and not str(timeline).isdigit():
        raise BackupError("target_timeline %r is neither latest, current nor a timeline number." % timeline,
                          "Leave it out (latest), or give current or a number such as 2.")
    return params


EXAMPLE = {"time": "'2026-11-21 14:03:00+00'", "lsn": "0/3000060", "name": "a name given to pg_create_restore_point()",
           "xid": "1234"}


def recovery_settings(params, restore_command):
    """(name, value) pairs, values as written in postgresql.auto.conf, for the recovery ``params`` ask for.

    Archiving is always off: the restored server never writes into the WAL
    archive (nor runs the original's archive_command) until someone turns it
    back on.
    """
    target = params.get("target") or "immediate"
    settings = [("restore_command", quote(restore_command)), ("archive_mode", "'off'"),
                ("archive_command", "''")]
    if target == "immediate":
        settings.append(("recovery_target", "'immediate'"))
    elif target != "latest":
        settings.append((RECOVERY_SETTING[target], quote(str(params[TARGET_VALUE[target]]))))
        settings.append(("recovery_target_inclusive", "'on'" if params.get("target_inclusive", True) else "'off'"))
    if params.get("target_timeline") not in (None, ""):
        settings.append(("recovery_target_timeline", quote(str(params["target_timeline"]))))
    if target != "latest":
        settings.append(("recovery_target_action", quote(params.get("target_action") or "promote")))
    return settings


def settings_block(settings, title):
    """Lines to append to postgresql.auto.conf: read last, they win over anything before them."""
    return "# %s\n" % title + "".join("%s = %s\n" % pair for pair in settings)


_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d+)?\s*(Z|UTC|GMT|[+-]\d\d(?::?\d\d)?)$")


def time_epoch(text):
    """Seconds since the epoch of '2026-11-21 14:03:00[.123][+01[:00]|UTC|Z]'; None without a zone one can read."""
    match = _TIME.match((text or "").strip())
    if not match:
        return None
    day, clock, fraction, zone = match.groups()
    seconds = calendar.timegm(time.strptime(day + " " + clock, "%Y-%m-%d %H:%M:%S")) + float(fraction or 0)
    if zone in ("Z", "UTC", "GMT"):
        return seconds
    digits = zone[1:].replace(":", "")
    offset = int(digits[:2]) * 3600 + int(digits[2:] or 0) * 60
    return seconds - offset if zone[0] == "+" else seconds + offset


def target_before_backup_end(params, record):
    """Why the target lies before the backup's end (where recovery first becomes consistent), or None.

    Such a target cannot be reached: the copy is only usable from the
    backup's stop LSN on. LSN targets compare with the stop LSN; time
    targets with the backup's start (its end time is not recorded exactly),
    and PostgreSQL's own refusal covers the rest.
    """
    target = params.get("target")
    if target == "lsn" and record.get("stop_lsn"):
        wanted, stop = lsn_or_none(params["target_lsn"]), lsn_or_none(record["stop_lsn"])
        if wanted is not None and stop is not None and wanted < stop:
            return "target_lsn %s is before the backup's stop LSN %s" % (params["target_lsn"], record["stop_lsn"])
    if target == "time":
        wanted, started = time_epoch(params["target_time"]), time_epoch(record.get("start_time"))
        if wanted is not None and started is not None and wanted < started:
            return "target_time %s is before the backup started (%s)" % (params["target_time"], record["start_time"])
    return None


def before_backup_end_error(why):
    return BackupError(
        "The recovery target cannot be reached from this backup: %s. A restored copy is consistent only from "
        "the end of its backup on." % why,
        "Restore an older backup (one that ended before the target), or choose a target after this backup's "
        "stop (backup.json: stop_lsn, start_time).")


def missing_segments_in_log(log_text):
    """WAL segment names the restore_command could not find, from the server's log, in order, once each."""
    names = []
    for line in log_text.splitlines():
        lowered = line.lower()
        if "no such file" in lowered or "cannot stat" in lowered or "not found" in lowered:
            for name in SEGMENT.findall(line):
                if name not in names:
                    names.append(name)
    return names


_RESTORED = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
_REDO_DONE = re.compile(r"redo done at ([0-9A-Fa-f]+/[0-9A-Fa-f]+)")
_LAST_COMMIT = re.compile(r"last completed transaction was at log time (.+?)\s*$", re.M)


def replay_end_in_log(log_text):
    """Where replay ended, as the log tells: {'segment': the last segment restored from the archive,
    'lsn': the 'redo done at' LSN, 'last_commit': the time of the last transaction replayed}; a key is
    left out when the log does not tell (WAL read from pg_wal/ is not logged per segment)."""
    found = {}
    for key, pattern in (("segment", _RESTORED), ("lsn", _REDO_DONE), ("last_commit", _LAST_COMMIT)):
        matches = pattern.findall(log_text)
        if matches:
            found[key] = matches[-1].strip()
    return found


def where_replay_ended(end):
    """' (the last segment replayed was ...; redo ended at ...; ...)' from replay_end_in_log(), or ''."""
    where = []
    if end.get("segment"):
        where.append("the last segment replayed was %s" % end["segment"])
    if end.get("lsn"):
        where.append("redo ended at %s" % end["lsn"])
    if end.get("last_commit"):
        where.append("the last transaction replayed committed at %s" % end["last_commit"])
    return (" (" + "; ".join(where) + ")") if where else ""


def end_of_wal(wal_gap_check):
    """Why recovery found no more WAL, from restore_wal.plan()'s ``wal_gap_check``: for the result's
    ``ended_because`` and the messages, which claim all archived WAL replayed only when the archive was listed."""
    found = wal_gap_check or {}
    if found.get("gap"):
        return "gap at segment %s" % found["gap"]
    if found.get("checked"):
        return "end of archived WAL"
    return "end of the WAL recovery found (not listed for gaps: %s)" % (found.get("reason") or "not checked")


def ended_because(target, wal_gap_check):
    """Why a recovery that ended well ended where it did: its target, or (latest) the end of the WAL."""
    return end_of_wal(wal_gap_check) if target == "latest" else "target reached"


def past_the_archive(log_text, wal_gap_check=None):
    """(message, hint) for a target past the WAL recovery found: where replay ended, why, and what to do."""
    end = replay_end_in_log(log_text)
    found = wal_gap_check or {}
    where = where_replay_ended(end)
    if found.get("gap"):
        return ("The recovery target is past a gap in the archived WAL: recovery ended at the missing segment %s "
                "(allow_wal_gap accepted ending there), before reaching the target%s." % (found["gap"], where),
                "Put %s back into the archive and restore again, with force: true to set this attempt aside; or "
                "choose a target before the gap (at or before the last transaction replayed)." % found["gap"])
    if found.get("checked"):
        message = ("The recovery target is past the last archived WAL: recovery replayed all of it and ended before "
                   "reaching the target%s." % where)
    else:
        message = ("The recovery target is past the last WAL recovery found: it ended before reaching the target%s. "
                   "The WAL was not listed for gaps (%s)." % (where, found.get("reason") or "not checked"))
    return (message,
            "Choose a target within the archived WAL (at or before the last transaction replayed), or latest to "
            "restore everything archived; or put the WAL after %s into the archive (check that archiving works) "
            "and restore again, with force: true to set this attempt aside."
            % (end.get("segment") or "the last segment replayed"))


def explain_recovery_failure(log_text, wal_gap_check=None):
    """(message, hint) for a restored server that stopped during recovery, from its log; None when unknown.

    ``wal_gap_check`` is what the archive listing found before recovery (restore_wal.plan())."""
    missing = missing_segments_in_log(log_text)
    last = missing[-1] if missing else None
    if "before consistent recovery point" in log_text:
        return ("The recovery target lies before the end of the backup, where the restored copy first becomes "
                "consistent: PostgreSQL refused it.",
                "Restore an older backup (one that ended before the target), or choose a later target.")
    if "recovery ended before configured recovery target was reached" in log_text:
        return past_the_archive(log_text, wal_gap_check)
    if last and ("WAL ends before end of online backup" in log_text or "checkpoint record" in log_text
                 or "redo" in log_text or "could not find" in log_text):
        return ("The restore needs the WAL segment %s, which restore_command did not find." % last,
                "Put %s into the archive (or the backup's pg_wal/), or restore a backup whose WAL is all archived."
                % last)
    if "WAL ends before end of online backup" in log_text:
        return ("The WAL ends before the end of the backup: a segment up to the backup's stop is missing.",
                "Check that every segment from the backup's start_wal_file to its stop_wal_file is in the archive "
                "or in the backup (include_wal).")
    return None
