# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The safety stop's lease: the lease file next to each state record, and when the lease ends.

The lease ends at the first of two limits: max_duration after the start, and
heartbeat_timeout after the last renewal. The controller renews by touching
the lease file (a shell command, no Python on the host: see renew_command),
so the file's modification time, taken by this host's clock, is the last
renewal. The watchdog stops the backup when the lease ends; the copy stops
copying at the same moment.

Standard library and safety_stop/records.py only: the watchdog process runs
this file's source outside Ansible (see safety_stop/watchdog.py).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import shlex

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import RUNNING, now_iso

# What ended a lease (the record's expired_by):
BY_MAX_DURATION = "max_duration"
BY_HEARTBEAT = "heartbeat"

# Printed by renew_command; anything else (ssh, sudo failing) is a failed renewal.
RENEWED = "pgx-lease-renewed"
ENDED = "pgx-lease-ended"


def lease_path(path):
    """The lease file of the record at ``path``; list_records skips it (not .json)."""
    return path[:-len(".json")] + ".lease" if path.endswith(".json") else path + ".lease"


def renew_command(path):
    """The shell command that renews the lease of the record at ``path``; it prints RENEWED or ENDED.

    touch -c never creates the file: once the stop or the watchdog removed
    it, a late renewal cannot bring the lease back.
    """
    lease = shlex.quote(lease_path(path))
    return "if [ -e %s ]; then touch -c %s && echo %s; else echo %s; fi" % (lease, lease, RENEWED, ENDED)


def renewal_outcome(stdout):
    """RENEWED, ENDED or None (failed) from renew_command's output."""
    words = (stdout or "").split()
    for outcome in (RENEWED, ENDED):
        if outcome in words:
            return outcome
    return None


def renew_interval(heartbeat_timeout):
    """Four renewals per timeout: one lost renewal, or a slow one, does not end the lease."""
    return max(1.0, heartbeat_timeout / 4.0)


def start_lease(path, epoch):
    """Create the lease file, renewed at ``epoch`` (the start)."""
    lease = lease_path(path)
    with open(lease, "w"):
        pass
    os.chmod(lease, 0o600)
    os.utime(lease, (epoch, epoch))


def lease_renewed_at(path):
    """Epoch of the last renewal, or None when the lease file is gone."""
    try:
        return os.stat(lease_path(path)).st_mtime
    except OSError:
        return None


def end_lease(path):
    """Remove the lease file: the controller's next renewal finds the backup ended and stops renewing."""
    try:
        os.unlink(lease_path(path))
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def lease_end(record, renewed_epoch):
    """(epoch, BY_...) at which the record's lease ends, or None when it has no limit.

    A lease file that is gone counts as never renewed: whoever removed it
    ended the renewals.
    """
    ends = []
    if record.get("expires_epoch"):
        ends.append((record["expires_epoch"], BY_MAX_DURATION))
    if record.get("heartbeat_timeout"):
        renewed = renewed_epoch if renewed_epoch is not None else record["started_epoch"]
        ends.append((renewed + record["heartbeat_timeout"], BY_HEARTBEAT))
    return min(ends) if ends else None


def lease_lost(record, renewed_epoch, now):
    """Why this backup may no longer be copied, or None while its lease holds and it is still running."""
    if record is None:
        return "its state record is gone"
    if record.get("outcome") != RUNNING:
        if record.get("expired_by"):
            return expiry_reason(record, record["expired_by"], record.get("lease_renewed_at"))
        return "its state record says %s" % record.get("outcome")
    end = lease_end(record, renewed_epoch)
    if end is None or now < end[0]:
        return None
    return expiry_reason(record, end[1], now_iso(renewed_epoch or record["started_epoch"]))


def expiry_reason(record, expired_by, renewed_at):
    if expired_by == BY_HEARTBEAT:
        return ("the controller stopped renewing its lease: the last renewal was at %s and heartbeat_timeout "
                "is %s s" % (renewed_at, record["heartbeat_timeout"]))
    return "its lease of %s s (max_duration) ended at %s" % (record.get("lease"), record.get("expires_at"))
