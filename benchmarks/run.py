"""Benchmarks of the exclusive_backup role against raw tar and pg_basebackup, and over SSH at fleet scale.

    .venv/bin/python benchmarks/run.py                      # both benchmarks, 3 repetitions: docs/benchmarks.md
    .venv/bin/python benchmarks/run.py --bench local --scale 20   # the local one on 300 MB, about 5x faster
    .venv/bin/python benchmarks/run.py --bench fleet        # only the fleet: its section of docs/benchmarks.md
    .venv/bin/python benchmarks/run.py --quick --out /tmp/b.md   # minutes: proves the harness works

local: two PostgreSQL 15 clusters of the same size are built with the test
bed: one filled by ``pgbench -i`` (compresses about 20x) and one filled with
random bytea rows (does not compress). Every repetition runs every variant
once, in the same order, so a slow minute of the machine hits all variants
alike; the table reports medians. Time in backup mode is measured from
outside: a thread watches the live ``backup_label`` (the file exists exactly
while an exclusive backup is in progress) every few milliseconds. On a fresh,
empty cluster it also runs the role with pipelining off and with every option
on, and ansible-playbook with one debug task and with one ping module; two and
four clusters take one play each.

Every ansible-playbook run of the local benchmark has the pgx_task_times
callback (benchmarks/callback_plugins: each task's wall time per host) and, as
the database host's Python, a wrapper that logs each Python process and its
module: the remote Python processes of a run are counted, not assumed, and the
empty cluster's role run is broken down task by task (issue 11's targets).

fleet: playbooks/backup.yml over SSH with become on 1, 3 and 6 database hosts
of the fleet test bed (tests/fleet), forks as many as hosts, tar streamed
into the repository host; the host counts take turns in every repetition.
Time in backup mode is each backup's ``duration`` in its backup.json.
"""

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.append(str(REPO / "tests" / "integration"))  # after tests/: its conftest is the one imported

import conftest  # noqa: E402  links the collection into tests/output for ansible-playbook
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import DEFAULT_STATE_DIR  # noqa: E402
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import system_identifier  # noqa: E402
from fleet import Fleet  # noqa: E402
from testbed import Cluster, provide, stop_all  # noqa: E402
from runner import ANSIBLE_PLAYBOOK  # noqa: E402
from testbed.osuser import as_postgres  # noqa: E402

MAJOR = 15
PLAYBOOK = REPO / "playbooks" / "backup.yml"
BENCHMARKS = ("local", "fleet")
FLEET_HOSTS = (1, 3, 6)
QUICK_FLEET_HOSTS = (1, 2)
HEADER = ("# Benchmarks\n\n"
          "Written by `benchmarks/run.py` (see benchmarks/README.md); do not edit the measured part by hand.\n\n")
FLEET_HEADING = "## Scale: fleet over SSH"
NOTES_HEADING = "## Notes"
# Role variants: (name, role variables). The first is the reference for the backup-mode target.
ROLE_VARIANTS = [
    ("role tar", {"exclusive_backup_method": "tar"}),
    ("role tar gzip", {"exclusive_backup_method": "tar", "exclusive_backup_compression": "gzip"}),
    ("role tar zstd", {"exclusive_backup_method": "tar", "exclusive_backup_compression": "zstd"}),
    ("role tar zstd, parallel 2", {"exclusive_backup_method": "tar", "exclusive_backup_compression": "zstd",
                                   "exclusive_backup_parallel": 2}),
    ("role tar gzip, parallel 2", {"exclusive_backup_method": "tar", "exclusive_backup_compression": "gzip",
                                   "exclusive_backup_parallel": 2}),
    ("role rsync", {"exclusive_backup_method": "rsync"}),
    ("role copy", {"exclusive_backup_method": "copy"}),
    ("role copy, parallel 2", {"exclusive_backup_method": "copy", "exclusive_backup_parallel": 2}),
]
QUICK_ROLE_VARIANTS = ("role tar", "role tar zstd", "role copy, parallel 2")
# Every option of the role that adds work on the database host: the WAL, the restore check, retention, and a
# plain copy (copy method) so that a backup_manifest is written.
EVERY_OPTION = "role copy, every option on"
# Clusters in one play, forks as many: the first two are the pgbench and random clusters, the others are
# pgbench clusters of the same scale.
MULTI_COUNTS = (2, 4)
STARTUP_VARIANTS = ("ansible-playbook, one debug task", "ansible-playbook, one ping module")
CALLBACKS = REPO / "benchmarks" / "callback_plugins"
# The Python the role runs on the "database host" (ansible_python_interpreter): the real one, run by a
# wrapper that logs one line per process into $PGX_MODULE_LOG, so every role run counts its module
# executions (remote Python processes) and the time they spent in Python. Pipelining hands the AnsiballZ
# payload over on stdin, without pipelining Ansible names the file: either way the payload's module_fqn
# line names the module. bash's EPOCHREALTIME is time.time() without starting a process.
COUNTING_PYTHON = r"""#!/bin/bash
t0=$EPOCHREALTIME
if [ $# -eq 0 ]; then
    payload=%(tmp)s/payload.$$
    cat > "$payload"
    module=$(grep -a -m1 -o "^module_fqn='[^']*'" "$payload")
    t1=$EPOCHREALTIME
    %(python)s < "$payload"
    rc=$?
    rm -f "$payload"
else
    # A module file (no pipelining); anything else (python -c ...) counts as a process of no module.
    module=
    if [ -f "$1" ]; then
        module=$(grep -a -m1 -o "^module_fqn='[^']*'" -- "$1" 2>/dev/null)
    fi
    t1=$EPOCHREALTIME
    %(python)s "$@"
    rc=$?
fi
t2=$EPOCHREALTIME
if [ -n "$PGX_MODULE_LOG" ]; then
    echo "$t0 $t1 $t2 $rc ${module:-?}" >> "$PGX_MODULE_LOG"
fi
exit $rc
"""


class BackupModeWatch:
    """Seconds during which ``backup_label`` existed in a live data directory."""

    def __init__(self, data_dir, interval=0.002):
        self.path = data_dir / "backup_label"
        self.interval = interval
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        since = None
        while not self._stop.is_set():
            now = time.monotonic()
            present = self.path.exists()
            if present and since is None:
                since = now
            elif not present and since is not None:
                self.seconds += now - since
                since = None
            time.sleep(self.interval)
        if since is not None:
            self.seconds += time.monotonic() - since


def run_checked(argv, ok=(0,), **kwargs):
    """Run ``argv`` and return its wall time; a failure stops the benchmark (a broken variant has no time)."""
    argv = [str(a) for a in argv]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    seconds = time.monotonic() - started
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    return seconds


def psql(cluster, sql, dbname="postgres"):
    run_checked(as_postgres([cluster.inst.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h",
                             cluster.socket_dir, "-p", cluster.port, "-U", "postgres", "-d", dbname, "-c", sql]))


def data_bytes(cluster):
    """Bytes a backup copies: the data directory without pg_wal's segments."""
    total = 0
    for root, dirs, files in os.walk(cluster.data_dir):
        if Path(root) == cluster.data_dir:
            dirs[:] = [d for d in dirs if d != "pg_wal"]
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def fill_pgbench(cluster, scale):
    run_checked(as_postgres([cluster.inst.tool("pgbench"), "-i", "-q", "-s", scale, "-h", cluster.socket_dir,
                             "-p", cluster.port, "-U", "postgres", "postgres"]))


def fill_random(cluster, target_bytes):
    """Random bytea rows (1 KiB each, stored inline, never compressible) up to ``target_bytes`` of data directory."""
    psql(cluster, "CREATE EXTENSION IF NOT EXISTS pgcrypto; CREATE TABLE noise (id bigint, payload bytea)")
    first = 0
    while True:
        missing = target_bytes - data_bytes(cluster)
        # A row takes about 1.1 KiB on disk with its share of page and index overhead.
        rows = min(200000, missing // 1100)
        if rows < 100:
            break
        psql(cluster, f"INSERT INTO noise SELECT g, gen_random_bytes(1024) FROM generate_series({first}, "
                      f"{first + rows - 1}) g")
        first += rows
        psql(cluster, "CHECKPOINT")


def settle(cluster):
    """Same starting point for every variant: dirty pages on disk, WAL switched and archived."""
    psql(cluster, "CHECKPOINT")
    run_checked(["sync"])


class Bench:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.out = work / "out"
        self.samples = {}      # (dataset, variant) -> [seconds]
        self.modes = {}        # (dataset, variant) -> [seconds in backup mode]
        self.sizes = {}        # (dataset, variant) -> bytes written
        self.runs = {}         # (dataset, variant) -> [what an ansible-playbook run did: see playbook()]
        self.counter = 0
        self.python = work / "bin" / "python"
        self.python.parent.mkdir(parents=True, exist_ok=True)
        self.python.write_text(COUNTING_PYTHON % {"python": shlex.quote(sys.executable),
                                                  "tmp": shlex.quote(str(self.python.parent))})
        self.python.chmod(0o755)

    def target(self, name):
        self.counter += 1
        path = self.out / f"{self.counter:04d}-{name.replace(' ', '_').replace(',', '')}"
        path.mkdir(parents=True)
        return path

    def note(self, dataset, variant, seconds, mode=None, size=None, run=None):
        self.samples.setdefault((dataset, variant), []).append(seconds)
        if mode is not None:
            self.modes.setdefault((dataset, variant), []).append(mode)
        if size is not None:
            self.sizes[(dataset, variant)] = size
        if run is not None:
            self.runs.setdefault((dataset, variant), []).append(run)
        print(f"  {dataset:8} {variant:34} {seconds:7.2f} s" + (f"  backup mode {mode:6.2f} s" if mode else "")
              + (f"  {len(run['processes'])} Python process(es)" if run else ""), flush=True)

    @staticmethod
    def written(path):
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())

    def done_with(self, path):
        shutil.rmtree(path)

    # -- variants ---------------------------------------------------------

    def raw_tar(self, dataset, cluster):
        """GNU tar of the same files the backup copies, to the same disk: the single-stream floor."""
        settle(cluster)
        dest = self.target("raw-tar")
        seconds = run_checked(["tar", "-C", cluster.data_dir, "-cf", dest / "base.tar", "--anchored",
                               "--exclude=./pg_wal/*", "."], ok=(0, 1))
        self.note(dataset, "raw tar", seconds, size=self.written(dest))
        self.done_with(dest)

    def basebackup(self, dataset, cluster, name, extra):
        settle(cluster)
        dest = self.target(name)
        # --no-sync: no variant here fsyncs its output, so none pays for it.
        seconds = run_checked([cluster.inst.tool("pg_basebackup"), "-h", cluster.socket_dir, "-p", cluster.port,
                               "-U", "postgres", "-D", dest / "backup", "-c", "fast", "--no-sync", *extra])
        self.note(dataset, name, seconds, size=self.written(dest))
        self.done_with(dest)

    @staticmethod
    def inventory(python, dest, clusters, wal_archive=False):
        """One local host per cluster; ``wal_archive``: its archive for include_wal and the restore check."""
        hosts = {}
        for i, cluster in enumerate(clusters):
            hosts[f"pg{i + 1}"] = {
                "ansible_connection": "local",
                "ansible_python_interpreter": str(python),
                "exclusive_backup_dest": str(dest / f"pg{i + 1}"),
                "exclusive_backup_login_unix_socket": str(cluster.socket_dir),
                "exclusive_backup_login_port": cluster.port,
                "exclusive_backup_login_db": cluster.backup_db,
            }
            if wal_archive:
                hosts[f"pg{i + 1}"]["exclusive_backup_wal_archive_dir"] = str(cluster.archive_dir)
        return hosts

    def playbook(self, dest, hosts, playbook, role_vars, forks=1, pipelining=True):
        """ansible-playbook with the task-times callback and the counting Python; its wall time and what it ran.

        Returns (seconds, run): run holds the launch and exit times, the
        callback's events and the Python processes the hosts ran (started,
        Python started, ended, exit code, module), all on time.time()'s clock.
        """
        inventory = dest / "inventory.json"
        inventory.write_text(json.dumps({"postgresql": {"hosts": hosts}}))
        extra = dest / "vars.json"
        extra.write_text(json.dumps(role_vars))
        tasks_log, modules_log = dest / "tasks.jsonl", dest / "modules.log"
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=conftest.COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1",
                   ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_PIPELINING="1" if pipelining else "0",
                   ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_FORKS=str(forks),
                   ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS), ANSIBLE_CALLBACKS_ENABLED="pgx_task_times",
                   PGX_TASK_TIMES=str(tasks_log), PGX_MODULE_LOG=str(modules_log))
        launched = time.time()
        seconds = run_checked([ANSIBLE_PLAYBOOK, "-i", inventory, playbook, "-e", f"@{extra}"], env=env,
                              cwd=str(REPO))
        exited = time.time()
        events = [json.loads(line) for line in tasks_log.read_text().splitlines()] if tasks_log.exists() else []
        processes = []
        if modules_log.exists():
            for line in modules_log.read_text().splitlines():
                t0, t1, t2, rc, module = line.split(" ", 4)
                processes.append({"started": float(t0), "python": float(t1), "ended": float(t2), "rc": int(rc),
                                  "module": module_name(module)})
        processes.sort(key=lambda p: p["started"])
        if not any(e["event"] == "result" for e in events):
            raise SystemExit(f"{playbook}: the pgx_task_times callback recorded no task (is it enabled?)")
        return seconds, {"launched": launched, "exited": exited, "hosts": len(hosts), "pipelining": pipelining,
                         "events": events, "processes": processes}

    def role(self, dataset, clusters, name, role_vars, forks=1, pipelining=True):
        """ansible-playbook playbooks/backup.yml over ``clusters`` (one inventory host each)."""
        for cluster in clusters:
            settle(cluster)
        dest = self.target(name)
        hosts = self.inventory(self.python, dest, clusters,
                               wal_archive=bool(role_vars.get("exclusive_backup_include_wal")))
        watches = [BackupModeWatch(c.data_dir) for c in clusters]
        for watch in watches:
            watch.__enter__()
        try:
            seconds, run = self.playbook(dest, hosts, PLAYBOOK, role_vars, forks=forks, pipelining=pipelining)
        finally:
            for watch in watches:
                watch.__exit__()
        for host in hosts:
            records = list((dest / host).glob("*/backup.json"))
            status = [json.loads(r.read_text()).get("status") for r in records]
            if status != ["complete"]:
                raise SystemExit(f"{name} on {host}: backup.json says {status}, expected one complete backup")
        if not run["processes"]:
            raise SystemExit(f"{name}: the counting Python logged no process; the module count would be wrong")
        size = sum(self.written(dest / h) for h in hosts)
        self.note(dataset, name, seconds, mode=max(w.seconds for w in watches), size=size, run=run)
        self.done_with(dest)

    def startup(self, dataset, cluster, name):
        """ansible-playbook with one task on the same inventory host: its fixed start-up, and one minimal module."""
        dest = self.target(name)
        task = ({"ansible.builtin.debug": {"msg": "start-up"}} if "debug" in name else {"ansible.builtin.ping": {}})
        playbook = dest / "playbook.json"
        # JSON is YAML: the same play as playbooks/backup.yml's head, with one task.
        playbook.write_text(json.dumps([{"name": name, "hosts": "postgresql", "gather_facts": False,
                                         "tasks": [dict(name="The one task", **task)]}]))
        seconds, run = self.playbook(dest, self.inventory(self.python, dest, [cluster]), playbook, {})
        self.note(dataset, name, seconds, run=run)
        self.done_with(dest)


def module_name(fqn_line):
    """``module_fqn='ansible_collections.ns.coll.plugins.modules.x'`` (or ``ansible.modules.x``) -> x."""
    match = re.search(r"'([^']*)'", fqn_line)
    return match.group(1).rsplit(".", 1)[-1] if match else "?"


def breakdown(run):
    """Where one single-host run's wall time went, from its launch to its exit, in seconds.

    Each task is timed from the moment it was queued for the host to its
    result; a task ran a module when a Python process started within it.
    """
    results = [e for e in run["events"] if e["event"] == "result"]
    playbook_start = next((e["t"] for e in run["events"] if e["event"] == "playbook"), run["launched"])
    for result in results:
        result["start"] = result["start"] or result["end"]
    first = min(r["start"] for r in results)
    last = max(r["end"] for r in results)
    tasks = []
    for result in results:
        procs = [p for p in run["processes"] if result["start"] <= p["started"] <= result["end"]]
        kind = "module" if procs else ("skipped" if result["status"] == "skipped" else "controller")
        tasks.append({"name": result["name"], "action": result["action"], "status": result["status"], "kind": kind,
                      "seconds": result["end"] - result["start"],
                      "python": sum(p["ended"] - p["python"] for p in procs),
                      "wrapper": sum(p["python"] - p["started"] for p in procs),
                      "modules": [p["module"] for p in procs]})
    parts = {
        "start-up": playbook_start - run["launched"],
        "parse": first - playbook_start,
        "tail": run["exited"] - last,
        "wall": run["exited"] - run["launched"],
    }
    for kind in ("module", "controller", "skipped"):
        chosen = [t for t in tasks if t["kind"] == kind]
        parts[f"{kind} tasks"] = sum(t["seconds"] for t in chosen)
        parts[f"{kind} count"] = len(chosen)
    parts["python"] = sum(t["python"] for t in tasks)
    parts["wrapper"] = sum(t["wrapper"] for t in tasks)
    parts["between"] = (last - first) - sum(t["seconds"] for t in tasks)
    return parts, tasks


class FleetScale:
    """playbooks/backup.yml over SSH with become on the first N database hosts of one fleet, forks N.

    One fleet of the largest N serves every N, so every host count backs up
    the same clusters and the counts can take turns within a repetition; the
    hosts left out of a run sit idle.
    """

    def __init__(self, fleet, out):
        self.fleet = fleet
        self.out = out
        self.runs = []         # {"hosts", "rep", "seconds", "backup_mode": {host: s}, "controller_cpu", "load"}
        self.bytes = {}        # host -> bytes its backups copy (backup.json)

    def run(self, count, rep):
        hosts = self.fleet.db_hosts[:count]
        for fleet_host in hosts:
            settle(fleet_host.cluster)
        work = self.out / f"{len(self.runs) + 1:04d}-fleet-{count}"
        work.mkdir(parents=True)
        inventory = self.fleet.write_inventory(work / "inventory.json", **self.fleet.repository_vars())
        # SSH connections of the run's own, as a scheduled job opens them: none kept open by the run before.
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=conftest.COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1",
                   ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_PIPELINING="1",
                   ANSIBLE_SSH_CONTROL_PATH_DIR=str(work / "cp"))
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds = run_checked([ANSIBLE_PLAYBOOK, "-i", inventory, PLAYBOOK, "-f", count,
                               "--limit", ",".join(h.name for h in hosts)], env=env, cwd=str(REPO))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # ansible-playbook, its forks and its ssh clients: the share of the work that stays on the controller
        # when the hosts are machines of their own.
        controller = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        modes = self.check_and_clear(hosts)
        shutil.rmtree(work)
        self.runs.append({"hosts": count, "rep": rep + 1, "seconds": seconds, "backup_mode": modes,
                          "controller_cpu": controller, "load": load})
        print(f"  fleet    {count} host(s), forks {count:<2}          {seconds:7.2f} s  backup mode "
              f"{min(modes.values()):6.2f}–{max(modes.values()):6.2f} s  controller CPU {controller:5.2f} s",
              flush=True)

    def check_and_clear(self, hosts):
        """Each host's time in backup mode, once every server is out of it and each host's backup is complete."""
        busy = [h.name for h in self.fleet.db_hosts if h.cluster.in_backup()]
        if busy:
            raise SystemExit(f"still in backup mode after the run: {', '.join(busy)}")
        backups = sorted(self.fleet.repository_dir.iterdir())
        records = []
        for backup in backups:
            record = backup / "backup.json"
            records.append(json.loads(record.read_text()) if record.exists() else {"label": backup.name})
        complete = {r.get("host"): r for r in records if r.get("status") == "complete"}
        if len(records) != len(hosts) or set(complete) != {h.name for h in hosts}:
            found = [{key: r.get(key) for key in ("label", "host", "status", "error")} for r in records]
            raise SystemExit(f"{len(hosts)} host(s): expected one complete backup per host in the repository, "
                             f"found {json.dumps(found)}")
        for backup in backups:
            shutil.rmtree(backup)
        for fleet_host in hosts:
            # dest keeps each run's record on the database host.
            shutil.rmtree(fleet_host.dest)
            self.bytes[fleet_host.name] = complete[fleet_host.name]["bytes"]
        return {name: record["duration"] for name, record in complete.items()}


def median(values):
    return statistics.median(values) if values else None


def machine():
    mem = "?"
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return cpu, mem


def describe_disk(path):
    return subprocess.run(["df", "-h", "--output=source,fstype,size,avail,target", str(path)],
                          capture_output=True, text=True, check=False).stdout.strip()


def tool_version(argv):
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.splitlines()[0].strip()


def fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def report(bench, args, sizes, clusters, started, reps_done):
    """The local benchmark's part of the report, from the title to its targets."""
    cpu, mem = machine()
    pg_version = tool_version([clusters[0].inst.tool("postgres"), "--version"])
    lines = [
        "## Machine",
        "",
        f"- CPU: {os.cpu_count()} cores (`nproc`), {cpu}",
        f"- memory: {mem}",
        f"- PostgreSQL: {pg_version}, test bed settings (shared_buffers 32MB, fsync off, archiving on)",
        f"- tools: {tool_version(['tar', '--version'])}, {tool_version(['zstd', '--version'])}, "
        f"{tool_version(['rsync', '--version'])}",
        f"- Python {platform.python_version()}, {tool_version([str(Path(sys.executable).parent / 'ansible'), '--version'])}",
        "- disk (source and backups on the same file system):",
        "",
        "```",
        describe_disk(bench.work),
        "```",
        "",
        "## Run",
        "",
        f"- pgbench scale {args.scale}; {reps_done} of {args.reps} repetition(s) of every variant, interleaved; "
        "medians below",
        "- bytes a backup copies (data directory without pg_wal segments): "
        + ", ".join(f"{name} {size / 1024 / 1024:.0f} MiB" for name, size in sizes.items() if name != "empty"),
        "- every ansible-playbook run: local connection, pipelining on unless the variant says off, the "
        "benchmark's pgx_task_times callback (benchmarks/callback_plugins) and, as the database host's Python, "
        "a bash wrapper that logs each Python process it starts and its module (remote Python processes: "
        "module executions on the database host, summed over hosts; the safety stop's watchdog, which "
        "pg_start_backup starts with the same interpreter directly, is not among them)",
        f"- clusters in one play (`all`): {', '.join(clusters_in_play(sizes, n) for n in MULTI_COUNTS)}, "
        "forks as many as clusters, role tar",
        f"- load average (1 min) when the report was written: {os.getloadavg()[0]:.1f}; "
        f"wall time of the whole run: {(time.monotonic() - started) / 60:.1f} min",
        "",
    ]
    for dataset in [*sizes, "all"]:
        raw = median(bench.samples.get((dataset, "raw tar"), []))
        plain = median(bench.samples.get((dataset, "pg_basebackup plain"), []))
        lines += [f"## {dataset}", "",
                  "| variant | median s | min–max s | in backup mode s | × raw tar | × pg_basebackup plain | "
                  "output MiB | remote Python processes |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for (ds, variant), values in bench.samples.items():
            if ds != dataset:
                continue
            med = median(values)
            mode = median(bench.modes.get((ds, variant), []))
            size = bench.sizes.get((ds, variant))
            runs = bench.runs.get((ds, variant))
            procs = "–" if not runs else "/".join(sorted({str(len(r["processes"])) for r in runs}))
            lines.append(
                f"| {variant} | {fmt(med)} | {fmt(min(values))}–{fmt(max(values))} | {fmt(mode)} | "
                f"{fmt(med / raw if raw else None)} | {fmt(med / plain if plain else None)} | "
                f"{fmt(size / 1024 / 1024 if size else None, 0)} | {procs} |")
        lines.append("")
    lines += time_section(bench)
    lines += targets(bench, sizes)
    return HEADER + "\n".join(lines) + "\n"


def clusters_in_play(sizes, count):
    names = [n for n in sizes if n != "empty"]
    names += [f"pgbench-{i}" for i in range(1, count - len(names) + 1)]
    return f"{count} ({' + '.join(names[:count])})"


def median_run(bench, key):
    """The run of ``key`` whose wall time is the median (the lower one of two middles)."""
    runs, values = bench.runs.get(key, []), bench.samples.get(key, [])
    if not runs:
        return None
    order = sorted(range(len(values)), key=values.__getitem__)
    return runs[order[(len(order) - 1) // 2]]


def modules_of(run):
    return ", ".join(p["module"] for p in run["processes"]) if run and run["processes"] else "none"


PIPELINING_ON, PIPELINING_OFF = ("empty", "role tar"), ("empty", "role tar, pipelining off")


def time_section(bench):
    """The role on the empty cluster: ansible-playbook's start-up, one minimal module, and the median runs task by task."""
    def med(key):
        return median(bench.samples.get(key, []))

    lines = ["## Role on an empty cluster: where the time goes", "",
             "Medians; a run's breakdown is that of its median run (the callback's times: a task counts from "
             "being queued for the host to its result; a task ran a module when a Python process started in it).",
             "", "| what | median s | remote Python processes | their time in Python s (median run) | modules run |",
             "| --- | ---: | ---: | ---: | --- |"]
    for variant in (*STARTUP_VARIANTS, "role tar", "role tar, pipelining off", EVERY_OPTION):
        run = median_run(bench, ("empty", variant))
        if run is not None:
            python = sum(p["ended"] - p["python"] for p in run["processes"])
            lines.append(f"| {variant} | {fmt(med(('empty', variant)))} | {len(run['processes'])} | {fmt(python)} | "
                         f"{modules_of(run)} |")
    lines.append("")
    on, off = median_run(bench, PIPELINING_ON), median_run(bench, PIPELINING_OFF)
    if on is None or off is None:
        return lines
    (on_parts, on_tasks), (off_parts, off_tasks) = breakdown(on), breakdown(off)
    debug, ping = med(("empty", STARTUP_VARIANTS[0])), med(("empty", STARTUP_VARIANTS[1]))
    rows = [
        ("launch to playbook start (Python, Ansible's imports, plugins, inventory)", "start-up"),
        ("playbook start to the first task queued (playbook, role, argument specs)", "parse"),
        ("tasks that ran a module", "module tasks", "module count"),
        ("… of which the Python processes on the host (interpreter, AnsiballZ, imports, the work)", "python"),
        ("… of which the counting wrapper (benchmark only: reads the payload, finds the module)", "wrapper"),
        ("tasks on the controller only (set_fact, assert, debug, include, …)", "controller tasks",
         "controller count"),
        ("skipped tasks", "skipped tasks", "skipped count"),
        ("between tasks (strategy, includes, results)", "between"),
        ("last result to exit (stats, end of play)", "tail"),
        ("wall time of the run", "wall"),
    ]
    lines += ["| role tar, empty cluster, median run | pipelining on s | pipelining off s |", "| --- | ---: | ---: |"]
    for label, key, *count in rows:
        name = label if not count else f"{label}: on {on_parts[count[0]]}, off {off_parts[count[0]]}"
        lines.append(f"| {name} | {fmt(on_parts[key])} | {fmt(off_parts[key])} |")
    if debug is not None and ping is not None:
        lines.append(f"| for scale: ansible-playbook with one debug task, with one ping module (medians) | "
                     f"{fmt(debug)}, {fmt(ping)} | – |")
    faster = "on" if med(PIPELINING_ON) <= med(PIPELINING_OFF) else "off"
    lines += ["", f"Pipelining: on {fmt(med(PIPELINING_ON))} s, off {fmt(med(PIPELINING_OFF))} s (medians): "
              f"{faster} is faster, by {abs(med(PIPELINING_OFF) - med(PIPELINING_ON)):.2f} s "
              f"({max(med(PIPELINING_OFF), med(PIPELINING_ON)) / min(med(PIPELINING_OFF), med(PIPELINING_ON)):.2f}×).",
              "", "| task of the role tar run (median run; the role's tasks without its name) | action | status "
                  "| pipelining on s | Python s | pipelining off s | Python s |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    # Task names may carry the run's label: the two runs match task by task when their actions do.
    same = [(t["action"], t["status"]) for t in on_tasks] == [(t["action"], t["status"]) for t in off_tasks]
    for i, task in enumerate(on_tasks):
        other = off_tasks[i] if same else None
        name = task["name"].split(" : ", 1)[-1].replace("|", "\\|")
        lines.append(f"| {name} | {task['action']} | {task['status']} | {fmt(task['seconds'])} | "
                     f"{fmt(task['python']) if task['modules'] else '–'} | "
                     f"{fmt(other['seconds']) if other else '–'} | "
                     f"{fmt(other['python']) if other and other['modules'] else '–'} |")
    lines.append("")
    return lines


def targets(bench, sizes):
    """Issue 11's speed targets, computed from this run's medians."""
    def med(dataset, variant):
        return median(bench.samples.get((dataset, variant), []))

    def mode(dataset, variant):
        return median(bench.modes.get((dataset, variant), []))

    lines = ["## Targets (this run's medians)", "",
             "| target | dataset | measured | verdict |", "| --- | --- | --- | --- |"]

    def row(name, dataset, text, ok):
        verdict = "–" if ok is None else ("met" if ok else "missed")
        lines.append(f"| {name} | {dataset} | {text} | {verdict} |")

    for variant, what in (("role tar", "default backup"), (EVERY_OPTION, "every option on")):
        runs = bench.runs.get(("empty", variant), [])
        if runs:
            counts = sorted({len(r["processes"]) for r in runs})
            row(f"remote Python processes, {what} ≤ 5", "empty",
                f"{variant}: {'/'.join(map(str, counts))} ({modules_of(median_run(bench, ('empty', variant)))})",
                max(counts) <= 5)
    for key, what in ((PIPELINING_ON, "pipelining on"), (PIPELINING_OFF, "pipelining off, Ansible's default")):
        wall = med(*key)
        if wall is not None:
            row(f"role wall time on an empty cluster ≤ 4 s ({what})", "empty", f"{key[1]}: {wall:.2f} s", wall <= 4)
    if "pgbench" in sizes:
        role, plain = med("pgbench", "role tar"), med("pgbench", "pg_basebackup plain")
        row("role tar end to end ≤ 1.0 × pg_basebackup plain", "pgbench",
            f"{role:.2f} s vs {plain:.2f} s = {role / plain:.2f}×", role <= plain)
        in_mode, raw = mode("pgbench", "role tar"), med("pgbench", "raw tar")
        row("time in backup mode ≤ 1.05 × raw tar", "pgbench",
            f"role tar: {in_mode:.2f} s vs raw tar {raw:.2f} s = {in_mode / raw:.2f}×", in_mode <= 1.05 * raw)
        zstd, gzip = med("pgbench", "role tar zstd"), med("pgbench", "pg_basebackup tar gzip")
        if zstd and gzip:
            row("role tar zstd ≥ 2 × faster than pg_basebackup tar gzip", "pgbench",
                f"{zstd:.2f} s vs {gzip:.2f} s: {gzip / zstd:.2f}× faster", gzip >= 2 * zstd)
    if "random" in sizes:
        zstd, pgb = med("random", "role tar zstd"), med("random", "pg_basebackup tar zstd")
        if zstd and pgb:
            others = [(v, median(s)) for (d, v), s in bench.samples.items()
                      if d == "random" and v.startswith("role ") and "zstd" in v and v != "role tar zstd"]
            also = "".join(f"; {v}: {s:.2f} s" for v, s in others)
            row("role zstd at least as fast as pg_basebackup client zstd", "random",
                f"role tar zstd: {zstd:.2f} s vs {pgb:.2f} s = {zstd / pgb:.2f}×{also}", zstd <= pgb)
        in_mode, raw = mode("random", "role tar"), med("random", "raw tar")
        row("(no target) time in backup mode vs raw tar", "random",
            f"role tar: {in_mode:.2f} s vs raw tar {raw:.2f} s = {in_mode / raw:.2f}×", None)
    single = max((med(ds, "role tar") for ds in sizes if ds != "empty" and med(ds, "role tar")), default=None)
    for (dataset, variant), values in bench.samples.items():
        if dataset == "all" and single:
            seconds = median(values)
            row("(no target) N clusters, one play", "all",
                f"{variant}: {seconds:.2f} s vs slowest single cluster {single:.2f} s = {seconds / single:.2f}×", None)
    lines.append("")
    return lines


def fleet_section(bench, args, started, reps_done):
    """The fleet's section: per host count, wall time and time in backup mode, each against the smallest count."""
    runs = {}
    for run in bench.runs:
        runs.setdefault(run["hosts"], []).append(run)
    counts = sorted(runs)

    def stats(count):
        walls = [r["seconds"] for r in runs[count]]
        modes = [m for r in runs[count] for m in r["backup_mode"].values()]
        return walls, (min(modes), median(modes), max(modes))

    base_walls, base_modes = stats(counts[0])
    base = f"× {counts[0]} host" + ("s" if counts[0] > 1 else "")
    pg_version = tool_version([bench.fleet.db_hosts[0].cluster.inst.tool("postgres"), "--version"])
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()
    loads = [r["load"] for r in bench.runs]
    mib = statistics.mean(bench.bytes.values()) / 1024 / 1024
    lines = [
        FLEET_HEADING,
        "",
        f"- {', '.join(map(str, counts))} database hosts and a repository host of the fleet test bed "
        "(tests/fleet): each a network namespace with an sshd of its own on this machine, all sharing its "
        f"{os.cpu_count()} cores, memory and disk; {pg_version}, test bed settings, one cluster per host "
        f"filled by `pgbench -i -s {args.fleet_scale}` ({mib:.0f} MiB a backup copies)",
        "- playbooks/backup.yml over SSH (the fleet's login user with a key, become root with sudo, "
        f"pipelining on, new connections every run; {ssh_version}), forks as many as hosts; method tar, "
        "no compression, streamed over SSH into the repository host (`exclusive_backup_repository`)",
        f"- {reps_done} of {args.reps} repetition(s) of every host count, interleaved; wall: ansible-playbook "
        "from start to end; in backup mode: each host's `duration` in its backup.json in the repository "
        "(the server's time from start to stop), min / median / max over all hosts and repetitions; "
        "every backup checked complete there and every server out of backup mode after its run",
        "- controller CPU: user and system time of ansible-playbook, its forks and its ssh clients (the SSH "
        "masters excepted), median",
        f"- load average (1 min) before a run, the tail of the benchmark's own previous run included: "
        f"{min(loads):.1f}–{max(loads):.1f}; wall time of this benchmark: {(time.monotonic() - started) / 60:.1f} min",
        "",
        f"| hosts, forks | wall s: median | min–max s | {base} | wall per host s | "
        f"in backup mode s: min / median / max | {base}: min / median / max | controller CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for count in counts:
        walls, modes = stats(count)
        wall = median(walls)
        lines.append(
            f"| {count} | {fmt(wall)} | {fmt(min(walls))}–{fmt(max(walls))} | {fmt(wall / median(base_walls))} | "
            f"{fmt(wall / count)} | {' / '.join(fmt(m) for m in modes)} | "
            f"{' / '.join(fmt(m / b) for m, b in zip(modes, base_modes))} | "
            f"{fmt(median([r['controller_cpu'] for r in runs[count]]))} |")
    lines.append("")
    return "\n".join(lines) + "\n"


def earlier_parts(path):
    """The local benchmark's part (title included) and the fleet's section of the report at ``path``."""
    local, fleet = [], []
    if path.exists():
        for section in re.split(r"^(?=## )", path.read_text(), flags=re.M):
            if section.startswith(FLEET_HEADING):
                fleet.append(section)
            elif not section.startswith(NOTES_HEADING):
                local.append(section)
    return "".join(local), "".join(fleet)


class Report:
    """The report: the local benchmark's part, the fleet's section, the notes.

    A run of one benchmark keeps the other one's part of the report it
    rewrites, so either can be measured again alone; the notes are always
    those of notes.md.
    """

    def __init__(self, args):
        self.args = args
        self.local, self.fleet = earlier_parts(args.out)
        self.samples = {}      # what --json writes, by benchmark

    def write(self):
        notes = "" if self.args.quick or not self.args.notes.exists() else self.args.notes.read_text()
        text = (self.local or HEADER) + self.fleet
        if notes:
            text += f"{NOTES_HEADING}\n\n{notes.strip()}\n"
        self.args.out.parent.mkdir(parents=True, exist_ok=True)
        self.args.out.write_text(text)
        if self.args.json:
            self.args.json.write_text(json.dumps(self.samples, indent=1))
        return text


def run_local(args, work, out):
    started = time.monotonic()
    variants = [v for v in ROLE_VARIANTS if not args.quick or v[0] in QUICK_ROLE_VARIANTS]
    inst = provide(MAJOR)
    bench = Bench(args, work)
    clusters = {}
    extra = [f"pgbench-{i}" for i in range(1, max(MULTI_COUNTS) - 1)]
    try:
        for name in ("pgbench", "random", *extra):
            clusters[name] = Cluster.create(inst, work / name)
        # The fixed overhead is measured on a fresh cluster, before it is filled: the role with and without
        # pipelining and with every option on, against ansible-playbook with one task (debug: no module; ping:
        # one minimal module), all on the same inventory host.
        empty = clusters["pgbench"]
        tar = dict(variants[0][1])
        every = dict(exclusive_backup_method="copy", exclusive_backup_include_wal=True,
                     exclusive_backup_verify_restore=True, exclusive_backup_retention=2)
        print("empty cluster", flush=True)
        for _rep in range(args.reps):
            bench.raw_tar("empty", empty)
            for name in STARTUP_VARIANTS:
                bench.startup("empty", empty, name)
            bench.role("empty", [empty], "role tar", tar)
            bench.role("empty", [empty], "role tar, pipelining off", tar, pipelining=False)
            bench.role("empty", [empty], EVERY_OPTION, every)

        print(f"filling: pgbench -i -s {args.scale}, then random rows of the same size, then "
              f"{len(extra)} more pgbench cluster(s) for the plays with {max(MULTI_COUNTS)} clusters", flush=True)
        fill_pgbench(clusters["pgbench"], args.scale)
        fill_random(clusters["random"], data_bytes(clusters["pgbench"]))
        for name in extra:
            fill_pgbench(clusters[name], args.scale)
        sizes = {name: data_bytes(clusters[name]) for name in ("pgbench", "random")}

        basebackups = [("pg_basebackup plain", ["-Fp"]),
                       ("pg_basebackup tar gzip", ["-Ft", "-Z", "client-gzip"]),
                       ("pg_basebackup tar zstd", ["-Ft", "-Z", "client-zstd"])]
        for rep in range(args.reps):
            print(f"repetition {rep + 1}/{args.reps}", flush=True)
            for name in sizes:
                cluster = clusters[name]
                bench.raw_tar(name, cluster)
                for variant, extra_args in basebackups:
                    bench.basebackup(name, cluster, variant, extra_args)
                for variant, role_vars in variants:
                    bench.role(name, [cluster], variant, dict(role_vars))
            for count in MULTI_COUNTS:
                chosen = list(clusters.values())[:count]
                bench.role("all", chosen, f"role tar, {count} hosts, forks {count}", tar, forks=count)
            # After every repetition: a run cut short still leaves its report.
            out.local = report(bench, args, {"empty": 0, **sizes}, list(clusters.values()), started, rep + 1)
            out.samples["local"] = {
                "scale": args.scale, "reps": rep + 1, "bytes": sizes,
                "samples": [{"dataset": d, "variant": v, "seconds": s, "backup_mode": bench.modes.get((d, v)),
                             "python_processes": [len(r["processes"]) for r in bench.runs.get((d, v), [])],
                             "modules": [[p["module"] for p in r["processes"]] for r in bench.runs.get((d, v), [])],
                             "breakdown": [breakdown(r)[0] for r in bench.runs.get((d, v), []) if r["hosts"] == 1]}
                            for (d, v), s in bench.samples.items()]}
            out.write()
    finally:
        for cluster in clusters.values():
            cluster.stop()
            # The role keeps a state record per cluster on the database host: these clusters are gone.
            identifier = system_identifier(str(cluster.data_dir))
            if identifier:
                shutil.rmtree(Path(DEFAULT_STATE_DIR) / identifier, ignore_errors=True)


def run_fleet(args, work, out):
    started = time.monotonic()
    print(f"fleet: {max(args.fleet_hosts)} database hosts and a repository host", flush=True)
    fleet = Fleet.create(work / "fleet", majors=(MAJOR,) * max(args.fleet_hosts))
    try:
        print(f"filling: pgbench -i -s {args.fleet_scale} on every database host", flush=True)
        for fleet_host in fleet.db_hosts:
            fill_pgbench(fleet_host.cluster, args.fleet_scale)
        bench = FleetScale(fleet, work / "out")
        for rep in range(args.reps):
            print(f"repetition {rep + 1}/{args.reps}", flush=True)
            for count in args.fleet_hosts:
                bench.run(count, rep)
            out.fleet = fleet_section(bench, args, started, rep + 1)
            out.samples["fleet"] = {"scale": args.fleet_scale, "reps": rep + 1, "bytes": bench.bytes,
                                    "runs": bench.runs}
            out.write()
    finally:
        fleet.destroy()


def host_counts(text):
    try:
        counts = sorted({int(n) for n in text.split(",")})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give host counts of 1 or more, separated by commas")
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS),
                        help="which benchmarks to run (default: both); the report keeps the other one's part")
    parser.add_argument("--scale", type=int, default=100, help="local: pgbench scale (100 is about 1.5 GB)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every variant and host count")
    parser.add_argument("--fleet-hosts", type=host_counts, default=list(FLEET_HOSTS),
                        help="fleet: database host counts, e.g. 1,3,6; the smallest is the reference")
    parser.add_argument("--fleet-scale", type=int, default=20,
                        help="fleet: pgbench scale of every database host (20 is about 300 MB)")
    parser.add_argument("--quick", action="store_true",
                        help="scale 1, one repetition, a few variants, 1 and 2 fleet hosts: proves the harness "
                             "works in a few minutes")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--notes", type=Path, default=REPO / "benchmarks" / "notes.md",
                        help="hand-written analysis appended to the report (skipped with --quick)")
    parser.add_argument("--json", type=Path, help="also write every sample as JSON (for tests and comparisons)")
    parser.add_argument("--dir", type=Path, help="working directory (default: a new one under /var/tmp)")
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.reps, args.fleet_hosts, args.fleet_scale = 1, 1, list(QUICK_FLEET_HOSTS), 1

    work = args.dir or Path(tempfile.mkdtemp(prefix="pgx-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    out = Report(args)
    try:
        if "local" in args.bench:
            run_local(args, work, out)
        if "fleet" in args.bench:
            run_fleet(args, work, out)
        print(out.write())
    finally:
        stop_all()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
