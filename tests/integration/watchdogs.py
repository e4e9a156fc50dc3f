"""Helpers for tests that leave watchdogs behind: find them by their state records, wait, and end them."""

import json
import os
import signal
import time
from pathlib import Path


def records(state_dir):
    """Every state record under ``state_dir`` (all clusters), by label."""
    found = {}
    for path in Path(state_dir).rglob("*.json"):
        record = json.loads(path.read_text())
        found[record["label"]] = dict(record, _path=str(path))
    return found


def record(state_dir, label):
    return records(state_dir).get(label)


def process_state(pid):
    """The state letter of /proc/<pid>/stat ('Z' for a zombie), None once the process is reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def watchdog_running(rec):
    """True when the record's watchdog PID runs and names the record in its command line."""
    pid = rec.get("watchdog_pid")
    if not pid:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return rec["_path"].encode() in argv and state != "Z"


def wait_for(predicate, timeout, explain=None, interval=0.1):
    """Seconds until ``predicate()`` held; AssertionError after ``timeout``, with ``explain()`` if given."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {explain() if explain else predicate}")
        time.sleep(interval)
    return time.monotonic() - started


def end_watchdogs(state_dir, labels=None):
    """Teardown: SIGKILL the watchdogs this test left (of ``labels`` only, if given), by the PID their record names."""
    for label, rec in records(state_dir).items():
        if (labels is None or label in labels) and watchdog_running(rec):
            os.kill(rec["watchdog_pid"], signal.SIGKILL)


def live_processes(what):
    """(pid, /proc/<pid>/<what> split at NUL bytes) of every process that is not a zombie.

    ``what`` is cmdline or environ: tests find the processes a run left (its
    workers, its lease keeper, a copy command) by what they carry.
    """
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            content = Path(f"/proc/{name}/{what}").read_bytes().split(b"\0")
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            yield int(name), content


def processes_with_label(label):
    """PIDs of the processes whose environment carries PGX_LABEL=<label>: a copy command and its shell
    (the fleet's hosts share the controller's /proc)."""
    wanted = f"PGX_LABEL={label}".encode()
    return [pid for pid, environ in live_processes("environ") if wanted in environ]
