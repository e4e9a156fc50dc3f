# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The state record of each backup, kept on the host the modules run on (the database host).

One JSON file per cluster and label says who started the backup (controller
host, AWX job), when, with which lease, and how it ended. The start, the stop
and the watchdog write it; pg_backup_info and the next start read it. The
record lives outside the data directory, which would otherwise copy it.

The lease ends at the first of two limits: max_duration after the start, and
heartbeat_timeout after the last renewal. The controller renews by touching
the lease file next to the record (a shell command, no Python on the host:
see renew_command), so the file's modification time, taken by this host's
clock, is the last renewal. The watchdog stops the backup when the lease
ends; the copy stops copying at the same moment.

Standard library and durable.py only: the watchdog process runs this file's
source outside Ansible (see watchdog.py).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import hashlib
import json
import os
import shlex
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.durable import atomic_write

DEFAULT_STATE_DIR = "/var/lib/pgexclusive-backup"

RUNNING = "running"
STOPPED = "stopped"
# The watchdog's outcomes when the lease expired:
EXPIRED_STOPPED = "expired-stopped"          # it stopped the backup carrying this label
EXPIRED_NOT_IN_PROGRESS = "expired-not-in-progress"   # nothing of this label to stop any more
EXPIRED_OTHER_LABEL = "expired-other-label"  # another backup runs: left alone
EXPIRED_UNREACHABLE = "expired-unreachable"  # the server did not answer
EXPIRED_ERROR = "expired-error"              # the stop failed
# The stop found that the backup had ended without it (restart, crash, another client's stop).
ENDED_WITHOUT_STOP = "ended-without-stop"
# Never written: a record still 'running' whose watchdog is gone (host reboot, kill -9).
WATCHDOG_LOST = "watchdog-lost"

# What ended a lease (the record's expired_by):
BY_MAX_DURATION = "max_duration"
BY_HEARTBEAT = "heartbeat"

# Printed by renew_command; anything else (ssh, sudo failing) is a failed renewal.
RENEWED = "pgx-lease-renewed"
ENDED = "pgx-lease-ended"

ABNORMAL = (EXPIRED_STOPPED, EXPIRED_NOT_IN_PROGRESS, EXPIRED_OTHER_LABEL, EXPIRED_UNREACHABLE,
            EXPIRED_ERROR, ENDED_WITHOUT_STOP, WATCHDOG_LOST)

WHAT_TO_DO = {
    EXPIRED_STOPPED: "The lease expired before the run stopped its backup, so the safety stop ended it: "
                     "any copy taken under this label is not usable. With expired_by heartbeat the controller "
                     "stopped renewing it (ansible-playbook killed, AWX job cancelled, or the SSH connection "
                     "lost): check that run's output. With expired_by max_duration the copy took longer than "
                     "the lease: give max_duration more room.",
    EXPIRED_NOT_IN_PROGRESS: "The lease expired, but the backup was no longer in progress (stopped by "
                             "something other than this collection's stop): check that run's output.",
    EXPIRED_OTHER_LABEL: "The lease expired while another label's backup was in progress; that backup "
                         "was left alone. This run's backup had already ended by other means.",
    EXPIRED_UNREACHABLE: "The lease expired but the server did not answer: if it is down with backup_label "
                         "in place, run pg_backup_info with data_directory and follow its advice.",
    EXPIRED_ERROR: "The safety stop failed (see 'error'): check the server with pg_backup_info and stop "
                   "the backup with pg_stop_backup label: <label> if it is still in progress.",
    ENDED_WITHOUT_STOP: "The backup ended before the run's stop (the server restarted or crashed, or another "
                        "client stopped it during the copy): any copy taken under this label is not usable. "
                        "Check the server log of that time, then take a new backup.",
    WATCHDOG_LOST: "The run never recorded a stop and its watchdog is gone (host reboot, killed): check "
                   "with pg_backup_info whether the backup is still in progress, and stop it with "
                   "pg_stop_backup label: <label> if so.",
}


def now_iso(epoch=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if epoch is None else epoch))


def cluster_dir(state_dir, cluster_id):
    return os.path.join(state_dir, str(cluster_id))


def record_path(state_dir, cluster_id, label):
    """Labels may hold '/', quotes or '..': the file is named by a hash of the label."""
    digest = hashlib.sha256(label.encode("utf-8")).hexdigest()[:24]
    return os.path.join(cluster_dir(state_dir, cluster_id), digest + ".json")


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


def ensure_dir(path):
    """Create ``path`` (mode 0700): records name hosts and jobs, which are nobody else's business."""
    try:
        os.makedirs(path, 0o700)
    except OSError as exc:
        if exc.errno != errno.EEXIST or not os.path.isdir(path):
            raise


def write_record(path, record):
    """Atomically: a reader sees the old record or the new one, never half of one."""
    ensure_dir(os.path.dirname(path))
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True))


def read_record(path):
    """The record at ``path``, or None when there is none."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def update_record(path, **changes):
    record = read_record(path)
    if record is None:
        return None
    record.update(changes)
    write_record(path, record)
    return record


def list_records(state_dir, cluster_id):
    """Every record of the cluster, oldest first."""
    directory = cluster_dir(state_dir, cluster_id)
    if not os.path.isdir(directory):
        return []
    records = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json") and not name.startswith("."):
            record = read_record(os.path.join(directory, name))
            if record is not None:
                records.append(record)
    return sorted(records, key=lambda r: r.get("started_epoch") or 0)


def is_watchdog_of(pid, path):
    """True when ``pid`` runs the watchdog of the record at ``path`` (its command line names it).

    A PID can be reused after the watchdog exits; the record path in the
    command line tells our watchdog from an unrelated process.
    """
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = handle.read().split(b"\0")
    except (IOError, OSError):
        return False
    return path.encode("utf-8") in argv


def effective_outcome(record, watchdog_running):
    """The outcome to report: a 'running' record without its watchdog is lost."""
    outcome = record.get("outcome")
    if outcome == RUNNING and (record.get("lease") or record.get("heartbeat_timeout")) and not watchdog_running:
        return WATCHDOG_LOST
    return outcome


def describe_record(record):
    """'started at ... by controller X (AWX job N), lease 60 s until ...' for messages."""
    who = "controller %s" % (record.get("controller_host") or "unknown")
    if record.get("job_id"):
        who += " (AWX job %s)" % record["job_id"]
    text = "started %s by %s" % (record.get("started_at"), who)
    limits = []
    if record.get("heartbeat_timeout"):
        limits.append("renewed by its controller, heartbeat_timeout %s s" % record["heartbeat_timeout"])
    if record.get("lease"):
        limits.append("lease %s s until %s" % (record["lease"], record.get("expires_at")))
    text += ", " + (", ".join(limits) if limits else "no safety stop")
    return text
