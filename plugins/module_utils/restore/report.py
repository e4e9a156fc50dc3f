# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 7, report: where the restored server stopped, in the result."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type


def run(job):
    if not job.p.get("start", True):
        job.result.update(started=False)
        return
    if "reached" in job.state:
        job.result.update(started=True, running=False, promoted=False, reached=job.state["reached"])
        return
    in_recovery, paused, lsn, when, timeline, version, sock, port = job.state["server"]
    job.result.update(started=True, running=True, promoted=not in_recovery, paused=bool(paused),
                      reached_lsn=lsn, reached_time=when, timeline=timeline, server_version=version,
                      socket_dir=sock, port=port)
