# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The safety stop as the modules use it: arm at the start, disarm at the stop, report afterwards.

The start writes the state record (safety_stop/records.py) and, with a lease
(max_duration or heartbeat_timeout above 0; safety_stop/lease.py), leaves
the watchdog (safety_stop/watchdog.py); the copy stops copying when the
lease ends (safety_stop/during_copy.py); the stop marks the record stopped and ends
the lease and the watchdog, or fails when the watchdog has already stopped
this backup (its copy is void); the next start and pg_backup_info report the
runs that ended badly.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import socket
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import libpq_params
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop import watchdog as safety_stop_watchdog
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.lease import (
    BY_HEARTBEAT, end_lease, lease_path, lease_renewed_at, renew_command, renew_interval, start_lease)
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import (
    ABNORMAL, ENDED_WITHOUT_STOP, RUNNING, STOPPED, WHAT_TO_DO, describe_record, effective_outcome, ensure_dir,
    is_watchdog_of, list_records, now_iso, read_record, record_path, update_record, write_record)


def cluster_id(server):
    """Records are kept per cluster: several may run on one host. The system identifier names it."""
    return server.system_identifier or "port-%s" % server.session.params["login_port"]


def state_dir_usable(state_dir, cluster):
    """None when records can be written under ``state_dir``, else why not."""
    try:
        ensure_dir(state_dir)
        ensure_dir("%s/%s" % (state_dir, cluster))
    except (IOError, OSError) as exc:
        return "cannot create %s/%s: %s" % (state_dir, cluster, exc.strerror or exc)
    return None


def require_state_dir(state_dir, cluster, leased):
    """Before anything starts: a lease needs its record, so an unusable state_dir refuses the start."""
    problem = state_dir_usable(state_dir, cluster)
    if problem is None:
        return []
    if leased:
        raise BackupError(
            "The safety stop needs a state record, but %s. Nothing was started." % problem,
            "Set state_dir to a directory the user running the module may create and write "
            "(it defaults to /var/lib/pgexclusive-backup, which needs root: become: true).")
    return ["No state record is kept for this backup: %s. pg_backup_info will not know which run "
            "started it; set state_dir to a writable directory." % problem]


def new_record(params, started, host_now=None):
    started_epoch = time.time() if host_now is None else host_now
    lease = params["max_duration"]
    return dict(
        label=started["label"],
        controller_host=params.get("controller_host"),
        job_id=params.get("job_id") or None,
        database_host=socket.gethostname(),
        api=started["api"],
        start_lsn=started["start_lsn"],
        start_wal_file=started["start_wal_file"],
        server_start_time=started["start_time"],
        started_at=now_iso(started_epoch),
        started_epoch=started_epoch,
        lease=lease or None,
        expires_at=now_iso(started_epoch + lease) if lease else None,
        expires_epoch=started_epoch + lease if lease else None,
        heartbeat_timeout=params.get("heartbeat_timeout") or None,
        outcome=RUNNING,
        watchdog_pid=None,
    )


def watchdog_config(server, path, record):
    return dict(
        connect=dict(libpq_params(server.session.params), application_name="pgexclusive.backup watchdog"),
        record_path=path,
        record=record,
        api=server.api,
    )


def arm(server, params, started):
    """Record the backup this task started and, with a lease, leave its watchdog; return the record."""
    path = record_path(params["state_dir"], cluster_id(server), started["label"])
    record = new_record(params, started)
    if not (record["lease"] or record["heartbeat_timeout"]):
        try:
            write_record(path, record)
        except (IOError, OSError):
            # Without a lease the record is bookkeeping only: the backup goes on without it.
            return path, None
        return path, record
    try:
        if record["heartbeat_timeout"]:
            start_lease(path, record["started_epoch"])
        pid = safety_stop_watchdog.spawn(watchdog_config(server, path, record))
    except Exception as exc:  # noqa: BLE001 - any failure leaves the backup unguarded
        raise BackupError(
            "The backup '%s' started, but its safety stop did not: %s." % (started["label"], exc),
            "The backup is being stopped again; fix the cause (python, psycopg2 and state_dir on the "
            "database host) or set max_duration and heartbeat_timeout to 0 to run without a safety stop.", safety_stop_failed=True)
    return path, dict(record, watchdog_pid=pid)


def heartbeat_facts(path, record):
    """What the controller needs to renew the lease (pg_start_backup's action plugin), or None without one."""
    if record is None or not record.get("heartbeat_timeout"):
        return None
    timeout = record["heartbeat_timeout"]
    return dict(lease_file=lease_path(path), timeout=timeout, interval=renew_interval(timeout),
                renew_command=renew_command(path))


def record_of(server, params, label):
    """(path, record) of ``label``; the record is None also when state_dir cannot be read.

    A stop must never fail over its bookkeeping: the backup's own state is on the server.
    """
    path = record_path(params["state_dir"], cluster_id(server), label)
    try:
        return path, read_record(path)
    except (IOError, OSError, ValueError):
        return path, None


def disarm(path, record, stop_lsn):
    """After a normal stop: the record says stopped, and the watchdog is ended; True when it was running."""
    if record is None or record.get("outcome") != RUNNING:
        return False
    try:
        update_record(path, outcome=STOPPED, stop_lsn=stop_lsn, ended_at=now_iso())
        end_lease(path)
    except (IOError, OSError):
        # Left running, the watchdog finds the label gone at expiry and records at least that.
        return False
    pid = record.get("watchdog_pid")
    return bool(pid) and safety_stop_watchdog.end(pid, path)


def mark_ended_without_stop(path, record):
    """The backup ended without this collection's stop: say so in its record and end its watchdog.

    The watchdog has nothing left to guard; left alive it would only wake at
    expiry to find nothing. True when it was running and was ended.
    """
    try:
        update_record(path, outcome=ENDED_WITHOUT_STOP, ended_at=now_iso())
        end_lease(path)
    except (IOError, OSError):
        return False
    pid = record.get("watchdog_pid")
    return bool(pid) and safety_stop_watchdog.end(pid, path)


def refuse_safety_stopped(record):
    """The watchdog ended this label's backup before the run's own stop: whatever was copied is void."""
    facts = dict(label=record["label"], safety_stopped=True, stop_lsn=record.get("stop_lsn"), state_record=record)
    if record.get("expired_by") == BY_HEARTBEAT:
        raise BackupError(
            "The backup '%s' was already stopped by its safety stop: nothing renewed its lease for "
            "heartbeat_timeout (%s s) after %s, before this stop. Any copy taken under this label is not usable."
            % (record["label"], record.get("heartbeat_timeout"), record.get("lease_renewed_at")),
            "Take a new backup. The controller that started it stopped renewing: it was killed or cut off, or "
            "pg_start_backup ran in another ansible-playbook run than this stop (use max_duration then).", **facts)
    raise BackupError(
        "The backup '%s' was already stopped by its safety stop: its lease of %s s expired at %s, "
        "before this stop. Any copy taken under this label is not usable." % (
            record["label"], record.get("lease"), record.get("expires_at")),
        "Take a new backup; give max_duration more room than the copy needs (it took longer than %s s)."
        % record.get("lease"), **facts)


def report(record, path):
    """A record as pg_backup_info and the next start report it."""
    alive = bool(record.get("watchdog_pid")) and is_watchdog_of(record["watchdog_pid"], path)
    outcome = effective_outcome(record, alive)
    renewed = lease_renewed_at(path) if record.get("outcome") == RUNNING else None
    return dict(record, watchdog_running=alive, effective_outcome=outcome,
                lease_renewed_at=now_iso(renewed) if renewed else record.get("lease_renewed_at"),
                what_to_do=WHAT_TO_DO.get(outcome, "").replace("<label>", record.get("label", "")) or None)


def all_reports(state_dir, cluster):
    return [report(record, record_path(state_dir, cluster, record["label"]))
            for record in list_records(state_dir, cluster)]


def unreported_failures(server, params, in_progress_label):
    """Runs that ended badly and that no start has reported yet; each is reported once, here."""
    cluster = cluster_id(server)
    found = []
    for item in all_reports(params["state_dir"], cluster):
        if item["effective_outcome"] not in ABNORMAL or item.get("reported_at") \
                or item["label"] == in_progress_label:
            continue
        found.append(item)
        update_record(record_path(params["state_dir"], cluster, item["label"]), reported_at=now_iso())
    return found


def failure_warning(item):
    return "An earlier backup '%s' (%s) ended as %s. %s" % (
        item["label"], describe_record(item), item["effective_outcome"], item["what_to_do"])
