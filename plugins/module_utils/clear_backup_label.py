# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""pg_clear_backup_label: setting aside the backup_label a crash left in a stopped primary, under every safeguard.

Only on the database host, on a stopped primary, for the live label of a
backup this collection started and that has not ended (its state record),
never on anything that looks like a restored copy or a standby, with the
label typed back as confirmation; the files are renamed, never deleted, so
the step can be undone.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import LABEL_FILE, TABLESPACE_MAP
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import BACKUP_FILES
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import (
    postmaster_running, read_data_directory, system_identifier)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import (
    DEFAULT_STATE_DIR, EXPIRED_UNREACHABLE, RUNNING, now_iso, read_record, record_path, update_record)
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import same_lsn


def clear_argument_spec():
    return dict(
        data_directory=dict(type="path", required=True),
        confirm=dict(type="str", default=""),
        state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
    )


def clear_backup_label(params, check_mode):
    path = params["data_directory"]
    facts, backup = read_data_directory(path)
    if backup is None:
        return dict(changed=False, label=None, moved=[], files=facts,
                    msg="No backup_label in %s: nothing to set aside." % path)
    label = backup.get("label")
    cluster = system_identifier(path)
    state_path = record_path(params["state_dir"], cluster, label) if cluster and label else None
    record = read_record(state_path) if state_path else None
    check_label_may_be_set_aside(facts, backup, record, params["confirm"])
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if check_mode:
        would = ["%s/%s.pgexclusive-%s" % (path, name, stamp) for name, present in
                 (("backup_label", True), ("tablespace_map", facts["tablespace_map"])) if present]
        return dict(changed=True, label=label, moved=would, files=facts, state_record=record)
    moved = set_aside_backup_label(path, stamp)
    update_record(state_path, label_set_aside=moved, label_set_aside_at=now_iso())
    return dict(changed=True, label=label, moved=moved, files=facts, state_record=read_record(state_path),
                msg="backup_label of '%s' moved to %s; the server can be started (crash recovery from its "
                    "last checkpoint). The backup itself is void." % (label, moved[0]))


# backup_label must stay wherever it belongs to a copy: removing it there corrupts the copy.
MUST_STAY = ("backup_label must stay. Never remove backup_label there; start the server and let recovery "
             "consume it.")
# Outcomes of a state record that leave the label live: the backup is running, or the safety
# stop found the server down (a crash before the lease expired). Every other outcome says the
# backup ended, and the label of an ended backup exists only in its copies.
LIVE_OUTCOMES = (RUNNING, EXPIRED_UNREACHABLE)


def check_label_may_be_set_aside(facts, backup, record, confirm):
    """Raise BackupError unless backup_label may be moved aside: the last checks before touching the primary.

    Only the live label this collection started, in a stopped primary: anything
    that looks like a copy or a standby is refused first.
    """
    label = backup.get("label")
    path = facts["path"]
    if facts["signal_files"]:
        raise BackupError(
            "%s is a restored copy or a standby (%s present): its backup_label tells recovery where the backup "
            "ends. Nothing was changed." % (path, " and ".join(facts["signal_files"])), MUST_STAY)
    if backup.get("method") == "streamed":
        raise BackupError(
            "backup_label in %s says BACKUP METHOD: streamed: this is a copy (a restored backup, or a standby "
            "made by pg_basebackup), not the primary's live label. Nothing was changed." % path, MUST_STAY)
    found = _backup_files_near(path)
    if found:
        raise BackupError(
            "%s is a restored backup (%s found): its backup_label is the copy's. Nothing was changed."
            % (path, ", ".join(found)), MUST_STAY)
    if postmaster_running(facts):
        raise BackupError(
            "The server of %s is running (postmaster.pid names live process %d). Nothing was changed."
            % (path, facts["postmaster_pid"]),
            "A running primary ends its backup with pg_stop_backup label: '%s'; this step is only for a "
            "stopped one." % label)
    if record is None:
        raise BackupError(
            "backup_label names '%s', which this collection did not start on this host (no state record). "
            "Nothing was changed." % label,
            "Find out which tool started it and follow its instructions; pg_backup_info's advice says what "
            "a start of this server needs.")
    if record.get("outcome") not in LIVE_OUTCOMES:
        raise BackupError(
            "The backup '%s' ended (state record outcome %s), so the backup_label in %s is a copy's, not the "
            "primary's live one. Nothing was changed." % (label, record.get("outcome"), path), MUST_STAY)
    if not same_lsn(record.get("start_lsn"), backup.get("start_lsn")):
        raise BackupError(
            "backup_label in %s starts at %s, but the backup '%s' this collection started began at %s: it is "
            "another backup's label (a copy of an earlier one, or a start by hand). Nothing was changed."
            % (path, backup.get("start_lsn"), label, record.get("start_lsn")), MUST_STAY)
    if confirm != label:
        raise BackupError(
            "Setting backup_label aside needs explicit confirmation. Nothing was changed.",
            "Check pg_backup_info's advice first, then set confirm to the label exactly: '%s'." % label,
            label=label)


def _backup_files_near(path):
    """The backup files in the data directory or in the directory that holds it."""
    parent = os.path.dirname(os.path.abspath(path).rstrip(os.sep)) or os.sep
    # A data directory holding one of a backup directory's own files, or lying in one, is a restored backup.
    return [os.path.join(where, name) for where in (path, parent) for name in BACKUP_FILES
            if os.path.lexists(os.path.join(where, name))]


def set_aside_backup_label(path, stamp):
    """Rename backup_label (and tablespace_map) to <name>.pgexclusive-<stamp>: kept, never deleted."""
    moved = []
    for name in (LABEL_FILE, TABLESPACE_MAP):
        source = os.path.join(path, name)
        if os.path.exists(source):
            target = "%s.pgexclusive-%s" % (source, stamp)
            os.rename(source, target)
            moved.append(target)
    return moved
