# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Setting aside the backup_label a crash left in a stopped primary, under every safeguard.

Only on the database host, on a stopped primary, for the live label of a
backup this collection started and that has not ended (its state record),
never on anything that looks like a restored copy or a standby, with the
label typed back as confirmation; the files are renamed, never deleted, so
the step can be undone.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop_records import (
    DEFAULT_STATE_DIR, now_iso, read_record, record_path, update_record)
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import (
    check_label_may_be_set_aside, read_data_directory, set_aside_backup_label, system_identifier)


def clear_argument_spec():
    return dict(
        data_directory=dict(type="path", required=True),
        confirm=dict(type="str", default=""),
        state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
    )


def clear_crashed_backup(params, check_mode):
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
