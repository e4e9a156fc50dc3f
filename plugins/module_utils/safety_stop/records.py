# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The safety stop's state records: one JSON file per cluster and label, on the database host.

A record says who started the backup (controller host, AWX job), when, with
which lease, and how it ended. The start, the stop and the watchdog write it;
pg_backup_info and the next start read it. Records live outside the data
directory, which would otherwise copy them. The lease arithmetic is in
safety_stop/lease.py, what the modules do with both in safety_stop/arming.py.

Standard library and durable.py only: the watchdog process runs this file's
source outside Ansible (see safety_stop/watchdog.py).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import hashlib
import json
import os
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

ABNORMAL = (EXPIRED_STOPPED, EXPIRED_NOT_IN_PROGRESS, EXPIRED_OTHER_LABEL, EXPIRED_UNREACHABLE,
            EXPIRED_ERROR, ENDED_WITHOUT_STOP, WATCHDOG_LOST)

WHAT_TO_DO = {
    EXPIRED_STOPPED: "The lease expired before the run stopped its backup, so the safety stop ended it: "
                     "any copy taken under this label is not usable. With expired_by heartbeat the controller "
                     "stopped renewing it (ansible-playbook killed, AWX job cancelled, or the SSH connection "
                     "lost): check that run's output. With expired_by max_duration the copy took longer than "
                     "the lease: give max_duration more room.",
    EXPIRED_NOT_IN_PROGRESS: "The lease expired, but the backup was no longer in progress and no stop of it "
                             "had been recorded: a stop ended it but its run ended before recording it "
                             "(ansible-playbook killed during the stop), or a restart or another client ended "
                             "it. Any copy taken under this label is not usable: check that run's output and the "
                             "server log.",
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
