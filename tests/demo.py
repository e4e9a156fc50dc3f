"""The demo: a throwaway PostgreSQL 15 with archiving and the extension, one backup, its proofs.

    make demo                      # or: .venv/bin/python -m tests.demo [--keep] [--method tar|copy|rsync]

1. provisions PostgreSQL 15 and the fixture extension (tests/testbed),
2. starts a cluster as the postgres OS user on a Unix socket and 127.0.0.1,
   with WAL archiving, and writes some rows,
3. runs playbooks/backup.yml against it (plain copy, WAL included, restore check),
4. runs pg_verifybackup on the backup,
5. restores the backup into a second server (recovery_target = 'immediate')
   and counts the rows,
6. prints where the backup is and what it holds, then stops both servers by
   their PIDs (--keep leaves the backup directory; the servers are always stopped).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.append(str(REPO / "tests" / "integration"))  # after tests/: its conftest is the one imported

import conftest  # noqa: E402  (links the checkout as ansible_collections/pgexclusive/backup)
from runner import ANSIBLE_PLAYBOOK, ansible_env  # noqa: E402
from testbed import Cluster, TestbedError, provide, stop_all  # noqa: E402

ROWS = 10000


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


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run a demo exclusive backup of a throwaway PostgreSQL 15.")
    parser.add_argument("--keep", action="store_true", help="keep the backup directory (servers are stopped anyway)")
    parser.add_argument("--method", default="copy", choices=["copy", "rsync", "tar"])
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="pgx-demo-"))
    workdir.chmod(0o755)
    restored = None
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
        cluster.sql("INSERT INTO orders VALUES (%s, 'after the backup')", (ROWS + 1,), dbname="demo")
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
            "(and not the one written after it)")

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
        if args.keep:
            print(f"Kept:     {workdir} (remove it when done)")
        return 0
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if restored is not None:
            restored.stop(mode="immediate")
        stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
