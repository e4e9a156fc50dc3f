# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The restore driver: one backup of this collection back into a data directory, to a point in time, as phases.

choose -> prove -> check targets -> lay out -> configure -> recover -> report,
each in its own file of this package and each timed (``durations``). What can
be known before anything is written comes first (the backup, its proof, every
target path), so that a restore that cannot succeed leaves the targets (and
what force would set aside) as they were; check mode runs exactly those
phases and stops before the lay-out. A failure carries the phase it happened
in (``phase``).

The restore drill (restore/verify_restore.py: the backup role's restore check, and
pg_verify_restore) is this engine run into a throwaway directory, with the
options that keep a server started there from writing anywhere else:
``tablespaces_under`` (every tablespace under one directory),
``confine_to`` (no link of the copy may lead out of that directory) and
``minimal_config`` (the copy's own configuration set aside; the server reads
only the recovery settings and ``settings``). ``record`` gives the backup's
facts when its backup.json is not written yet (the backup role checks a
restore before it writes the record).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import (
    check_targets, choose, configure, debian, lay_out, prove, recover, report)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.recovery_target import ACTIONS, TARGETS
from ansible_collections.pgexclusive.backup.plugins.module_utils.timed_steps import TimedSteps

PHASES = (("choose", choose.run), ("prove", prove.run), ("list_wal", recover.list_wal), ("check_targets", check_targets.run),
          ("lay_out", lay_out.run), ("configure", configure.run), ("recover", recover.run), ("report", report.run))
# Check mode: what can be known without writing anything.
LAST_CHECK_PHASE = "check_targets"


class Restore(object):
    """One restore; ``run`` returns the result dict. ``connect(socket_dir, port)`` is a DB-API connection."""

    def __init__(self, params, connect):
        self.p = params
        self.connect = connect
        self.durations = {}
        self.result = {"changed": False, "durations": self.durations}
        # The phase running, or the one that failed: a caller tells a failure before the server started from one after.
        self.step = None
        # Why the restored server could not be asked where it is, the last time it could not.
        self.last_error = None
        # Asked with the owner's uid (peer authentication) until the OS refuses the owner the socket.
        self.as_owner = True
        # A Debian cluster (debian_cluster) names the data directory and is started with pg_ctlcluster.
        self.debian = debian.cluster_for(params)
        self.data = (params.get("data_directory") or "").rstrip("/") or "/"
        self.stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        # What the phases find, for the phases after them.
        self.backup_dir = self.record = self.owner = self.pg_ctl = self.state = self.server = None
        self.label_files = {}
        self.to_set_aside = []
        self.tablespace_targets = {}
        # <data directory>.tablespaces when the default holds a tablespace: the lay-out creates it.
        self.tablespaces_dir = None
        self.placed = []
        self.tablespaces = {}

    def run(self, until=None):
        """Run the phases in order, through ``until`` when given."""
        steps = TimedSteps(self.durations)
        for name, phase in PHASES:
            self.step = name
            try:
                steps.run(name, phase, self)
            except BackupError as exc:
                exc.facts.setdefault("phase", name)
                raise
            if name == until:
                break
        return self.result

    def _state(self, data, owner):
        return recover.server_state(self, data, owner)

    def _connect(self, sock, port, role, owner):
        return recover.connect(self, sock, port, role, owner)


def restore_argument_spec():
    return dict(
        backup_dir=dict(type="path"),
        dest=dict(type="path"),
        system_identifier=dict(type="str"),
        allow_incomplete=dict(type="bool", default=False),
        allow_wal_gap=dict(type="bool", default=False),
        verify=dict(type="bool", default=True),
        data_directory=dict(type="path"),
        debian_cluster=dict(type="str"),
        waldir=dict(type="path"),
        tablespace_mapping=dict(type="dict", default={}),
        force=dict(type="bool", default=False),
        owner=dict(type="str", default="postgres"),
        target=dict(type="str", default="immediate", choices=list(TARGETS)),
        target_time=dict(type="str"),
        target_lsn=dict(type="str"),
        target_name=dict(type="str"),
        target_xid=dict(type="str"),
        target_inclusive=dict(type="bool", default=True),
        target_timeline=dict(type="str"),
        target_action=dict(type="str", default="promote", choices=list(ACTIONS)),
        wal_archive_dir=dict(type="path"),
        restore_command=dict(type="str"),
        settings=dict(type="dict", default={}),
        start=dict(type="bool", default=True),
        bindir=dict(type="path"),
        log_file=dict(type="path"),
        login_user=dict(type="str"),
        timeout=dict(type="int", default=3600),
    )


def restore_task(params, check_mode, connect=None):
    """pg_backup_restore's task. Check mode runs the phases up to the check of the targets, and changes nothing."""
    if connect is None:
        from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import connect_socket
        connect = connect_socket
    engine = Restore(params, connect)
    try:
        if check_mode:
            engine.run(until=LAST_CHECK_PHASE)
            return dict(engine.result, changed=True, msg="Check mode: nothing restored.")
        return engine.run()
    except BackupError as exc:
        # What was done before the failure: where the restore went and what force set aside.
        for key in ("backup_dir", "data_directory", "set_aside", "durations"):
            if key in engine.result:
                exc.facts.setdefault(key, engine.result[key])
        raise
