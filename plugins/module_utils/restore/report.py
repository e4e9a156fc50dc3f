# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 7, report: where the restored server stopped, and why there, in the result.

``ended_at_lsn`` and ``ended_at_time`` are the last WAL location replayed and
the commit time of the last transaction replayed; ``ended_because`` says
whether the target was reached or, for latest, the WAL ran out: at the end
of the archive, at a gap that allow_wal_gap accepted, or at the end of what
a custom restore_command returned (not listed for gaps).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.recovery_target import ended_because


def run(job):
    if not job.p.get("start", True):
        job.result.update(started=False)
        return
    because = ended_because(job.p.get("target") or "immediate", job.result.get("wal_gap_check"))
    if "reached" in job.state:
        end = job.state.get("replay_end") or {}
        job.result.update(started=True, running=False, promoted=False, reached=job.state["reached"],
                          ended_at_lsn=end.get("lsn"), ended_at_time=end.get("last_commit"), ended_because=because)
        return
    in_recovery, paused, lsn, when, timeline, version, sock, port = job.state["server"]
    job.result.update(started=True, running=True, promoted=not in_recovery, paused=bool(paused),
                      reached_lsn=lsn, reached_time=when, timeline=timeline, server_version=version,
                      socket_dir=sock, port=port, ended_at_lsn=lsn, ended_at_time=when, ended_because=because)
