"""The demo: a throwaway PostgreSQL 15 with archiving and the extension, one backup, its proofs.

    make demo                      # or: .venv/bin/python -m tests.demo [--keep] [--method tar|copy|rsync]

1. provisions PostgreSQL 15 and the fixture extension (tests/testbed),
2. starts a cluster as the postgres OS user on a Unix socket and 127.0.0.1,
   with WAL archiving, and writes some rows,
3. runs playbooks/backup.yml against it (plain copy, WAL included, restore check),
4. runs pg_verifybackup on the backup,
5. restores the backup into a second server (recovery_target = 'immediate')
   and counts the rows,
6. commits two more batches of rows, noting the time between them, and
   restores the backup to that time with playbooks/restore.yml (the restore
   role), replaying from the WAL archive: the restored server holds the first
   batch and not the second,
7. prints where the backup is and what it holds, then stops every server by
   its PID and removes the demo's directory, backup included, saying so
   (--keep leaves the directory and the backup, and says where; the servers
   are always stopped).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.append(str(REPO / "tests" / "integration"))  # after tests/: its conftest is the one imported

import conftest  # noqa: E402  (links the checkout as ansible_collections/pgexclusive/backup)
from runner import ANSIBLE_PLAYBOOK, ansible_env  # noqa: E402
from testbed import Cluster, TestbedError, provide, stop_all  # noqa: E402
from testbed.osuser import chown_postgres  # noqa: E402

from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.server import postmaster_pid  # noqa: E402

ROWS = 10000
BATCH = 100


def say(text):
    print(f"==> {text}", flush=True)


def run_playbook(cluster, workdir, method):
    inventory = workdir / "inventory.yml"
    inventory.write_text(
        "postgresql:\n  hosts:\n    demo-pg15:\n"
        "      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    variables = {
        "exclusive_backup_dest": str(workdir / "backups"),
        "exclusive_backup_method": method,
        "exclusive_backup_login_unix_socket": str(cluster.socket_dir),
        "exclusive_backup_login_port": cluster.port,
        "exclusive_backup_login_db": cluster.backup_db,
        "exclusive_backup_include_wal": True,
        "exclusive_backup_wal_archive_dir": str(cluster.archive_dir),
        "exclusive_backup_verify_restore": True,
    }
    (workdir / "vars.json").write_text(json.dumps(variables, indent=2))
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory),
            str(REPO / "playbooks" / "backup.yml"), "-e", f"@{workdir / 'vars.json'}"]
    say("ansible-playbook " + " ".join(argv[1:]))
    # Colours on: a person reads this run.
    env = ansible_env(ANSIBLE_COLLECTIONS_PATH=conftest.COLLECTIONS_PATH, ANSIBLE_PIPELINING="1", ANSIBLE_NOCOLOR="0")
    proc = subprocess.run(argv, env=env, cwd=str(REPO), check=False)
    if proc.returncode != 0:
        raise SystemExit(f"The backup playbook failed (exit {proc.returncode}).")


def history_after_the_backup(cluster):
    """Batch 1, the time after it, batch 2, everything archived: returns that time (a restore target)."""
    cluster.sql("INSERT INTO orders SELECT g, 'batch 1' FROM generate_series(%s, %s) g", (ROWS + 1, ROWS + BATCH),
                dbname="demo")
    # Apart from both batches' commit times by more than any clock's resolution.
    time.sleep(0.5)
    moment = cluster.value("SELECT clock_timestamp()::text")
    time.sleep(0.5)
    cluster.sql("INSERT INTO orders SELECT g, 'batch 2' FROM generate_series(%s, %s) g",
                (ROWS + BATCH + 1, ROWS + 2 * BATCH), dbname="demo")
    last = cluster.value("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    cluster.sql("SELECT pg_switch_wal()")
    cluster.wait_archived(last)
    return moment


def restore_to(cluster, backup_dir, moment, workdir):
    """playbooks/restore.yml: the backup to ``moment``, replaying from the archive, into a server of its own."""
    pitr = Cluster(cluster.inst, workdir / "pitr")
    pitr.socket_dir.mkdir(parents=True)
    chown_postgres(pitr.socket_dir)
    variables = {
        "restore_hosts": "demo-pg15",
        "restore_backup_dir": str(backup_dir),
        "restore_data_directory": str(pitr.data_dir),
        "restore_target": "time",
        "restore_target_time": moment,
        "restore_wal_archive_dir": str(cluster.archive_dir),
        "restore_bindir": str(cluster.inst.bindir),
        "restore_settings": {"port": str(pitr.port), "listen_addresses": "",
                             "unix_socket_directories": str(pitr.socket_dir)},
        "restore_timeout": 300,
    }
    (workdir / "restore-vars.json").write_text(json.dumps(variables, indent=2))
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(workdir / "inventory.yml"),
            str(REPO / "playbooks" / "restore.yml"), "-e", f"@{workdir / 'restore-vars.json'}"]
    say("ansible-playbook " + " ".join(argv[1:]))
    env = ansible_env(ANSIBLE_COLLECTIONS_PATH=conftest.COLLECTIONS_PATH, ANSIBLE_PIPELINING="1", ANSIBLE_NOCOLOR="0")
    proc = subprocess.run(argv, env=env, cwd=str(REPO), check=False)
    # Whatever the run did, a server it started is stopped by its PID at the end.
    pitr.pid = postmaster_pid(str(pitr.data_dir))
    if proc.returncode != 0:
        raise SystemExit(f"The restore playbook failed (exit {proc.returncode}).")
    return pitr


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run a demo exclusive backup of a throwaway PostgreSQL 15.")
    parser.add_argument("--keep", action="store_true", help="keep the backup directory (servers are stopped anyway)")
    parser.add_argument("--method", default="copy", choices=["copy", "rsync", "tar"])
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="pgx-demo-"))
    workdir.chmod(0o755)
    restored = pitr = backup_dir = None
    try:
        say("provisioning PostgreSQL 15 and the pg_exclusive_backup fixture extension")
        inst = provide(15)
        cluster = Cluster.create(inst, workdir / "pg15")
        say(f"PostgreSQL 15 running (pid {cluster.pid}) on {cluster.socket_dir} port {cluster.port}, "
            f"archiving into {cluster.archive_dir}, extension in database {cluster.backup_db}")
        cluster.sql("CREATE DATABASE demo")
        cluster.sql("CREATE TABLE orders (id int PRIMARY KEY, note text)", dbname="demo")
        cluster.sql("INSERT INTO orders SELECT g, 'row ' || g FROM generate_series(1, %s) g", (ROWS,), dbname="demo")
        say(f"wrote {ROWS} rows into demo.orders")

        run_playbook(cluster, workdir, args.method)
        moment = history_after_the_backup(cluster)
        say(f"after the backup: {BATCH} rows (batch 1), then {moment}, then {BATCH} more (batch 2), archived")
        backup_dir = next((workdir / "backups").iterdir())
        record = json.loads((backup_dir / "backup.json").read_text())

        if (backup_dir / "backup_manifest").exists():
            verify = [str(inst.bindir / "pg_verifybackup"), "-m", str(backup_dir / "backup_manifest"),
                      str(backup_dir / "data")]
            say(" ".join(verify))
            subprocess.run(verify, check=True)
        else:
            say("no backup_manifest (tar backups have none): pg_verifybackup skipped")

        say("restoring the backup into a second server (recovery_target = 'immediate')")
        copy = workdir / "restore-copy"
        if (backup_dir / "data").is_dir():
            shutil.copytree(backup_dir / "data", copy, symlinks=True)
        else:
            copy.mkdir()
            subprocess.run(["tar", "-C", str(copy), "-xf", str(backup_dir / "base.tar")], check=True)
        restored = Cluster.restore(inst, copy, workdir / "restored", cluster.archive_dir)
        count = restored.value("SELECT count(*) FROM orders", dbname="demo")
        if count != ROWS:
            raise SystemExit(f"The restored copy holds {count} rows, expected {ROWS}.")
        say(f"restored server reached consistency and holds all {count} rows written before the backup "
            "(and none of those written after it)")

        say(f"point-in-time restore to {moment} with playbooks/restore.yml (the restore role)")
        started = time.monotonic()
        pitr = restore_to(cluster, backup_dir, moment, workdir)
        rows = pitr.sql("SELECT CASE WHEN note LIKE 'batch%' THEN note ELSE 'before the backup' END AS rows, "
                        "count(*) FROM orders GROUP BY 1 ORDER BY 1", dbname="demo")
        for what, n in rows:
            print(f"    {what:<18} {n:>6} rows")
        count = sum(n for _what, n in rows)
        if count != ROWS + BATCH or dict(rows).get("batch 1") != BATCH:
            raise SystemExit(f"The point-in-time restore holds {rows}, expected {ROWS} rows and batch 1 ({BATCH}).")
        say(f"point-in-time restore took {time.monotonic() - started:.1f} s and holds {count} rows: the {ROWS} "
            "from before the backup and batch 1, not batch 2")

        print()
        print(f"Backup:   {backup_dir}")
        print(f"Label:    {record['label']}")
        print(f"Server:   PostgreSQL {record.get('server_version')} via the {record['api']} API, method {record['method']}")
        print(f"WAL:      {record['start_wal_file']} .. {record['stop_wal_file']} "
              f"(LSN {record['start_lsn']} .. {record['stop_lsn']}, timeline {record['timeline']})")
        print(f"Size:     {record.get('bytes')} bytes; WAL included: {len(record.get('wal_included') or [])} files")
        print(f"Label in the copy says BACKUP METHOD: streamed: {record.get('label_fixed')}")
        print(f"Restore check by the role: {(record.get('verify_restore') or {}).get('ok')}")
        print("Holds:    " + ", ".join(sorted(p.name for p in backup_dir.iterdir())))
        return 0
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in (restored, pitr):
            if server is not None:
                server.stop(mode="immediate")
        stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        print(farewell(workdir, backup_dir, args.keep, workdir.exists()))


def farewell(workdir, backup_dir, keep, still_there):
    """The last line: what became of the backup just shown, as it now is on disk."""
    if keep:
        what = f"the backup {backup_dir}, in {workdir}" if backup_dir else str(workdir)
        return (f"Kept:     {what}, with the stopped servers' directories and the WAL archive; "
                f"remove {workdir} when done.")
    if still_there:
        return f"Left:     {workdir} could not be removed entirely: remove it yourself."
    what = f" and the backup {backup_dir} in it" if backup_dir else ""
    return (f"Removed:  {workdir}{what}, now that the servers are stopped "
            "(python -m tests.demo --keep keeps them).")


if __name__ == "__main__":
    sys.exit(main())
