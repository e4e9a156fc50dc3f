"""The role on an empty cluster at two revisions of this repository, side by side in one run.

    .venv/bin/python benchmarks/compare_revisions.py 167b86b HEAD          # 7 repetitions each
    .venv/bin/python benchmarks/compare_revisions.py 167b86b HEAD --reps 11 --major 14

A claim that a change made the role faster holds only against the revision
before it, measured in the same minutes of the same machine: the wall time of
one role run moves by a factor of two with the load of this shared machine.
So each revision is checked out into a detached worktree of its own, one test
bed cluster (empty, archiving on) is started, and `playbooks/backup.yml` (method tar, pipelining on, the
local connection) runs against it with each revision's collection in turn, the
order alternating every repetition. Every run must leave one complete
backup.json. The worktrees, the cluster and the outputs are removed at the end.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from testbed import Cluster, provide  # noqa: E402

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def checkout(rev, root):
    """A detached worktree of ``rev`` under ``root`` and a collections path that holds it."""
    tree = root / f"tree-{rev}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(tree), rev], check=True)
    collections = root / f"collections-{rev}"
    (collections / "ansible_collections" / "pgexclusive").mkdir(parents=True)
    (collections / "ansible_collections" / "pgexclusive" / "backup").symlink_to(tree)
    return tree, collections


def role_run(tree, collections, cluster, out, home):
    """Seconds of one ansible-playbook run of ``tree``'s playbooks/backup.yml; fails unless its backup is complete."""
    out.mkdir()
    inventory = out / "inventory.json"
    inventory.write_text(json.dumps({"postgresql": {"hosts": {"pg1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "exclusive_backup_dest": str(out / "backups"),
        "exclusive_backup_login_unix_socket": str(cluster.socket_dir),
        "exclusive_backup_login_port": cluster.port, "exclusive_backup_login_db": cluster.backup_db}}}}))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_PIPELINING="1", HOME=str(home),
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_NOCOLOR="1")
    started = time.monotonic()
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(tree / "playbooks" / "backup.yml"),
                           "-e", "exclusive_backup_method=tar"], env=env, cwd=str(tree), capture_output=True,
                          text=True, check=False)
    seconds = time.monotonic() - started
    status = [json.loads(r.read_text()).get("status") for r in (out / "backups").glob("*/backup.json")]
    if proc.returncode != 0 or status != ["complete"]:
        raise SystemExit(f"{tree.name}: rc {proc.returncode}, backup.json {status}\n{proc.stdout[-4000:]}")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="the earlier revision (any git revision)")
    parser.add_argument("after", help="the later revision")
    parser.add_argument("--reps", type=int, default=7, help="runs of each revision, interleaved")
    parser.add_argument("--major", type=int, default=15, help="PostgreSQL major of the test bed cluster")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pgx-compare-", dir="/var/tmp"))
    root.chmod(0o755)
    trees = {}
    cluster = None
    try:
        for rev in (args.before, args.after):
            trees[rev] = checkout(rev, root)
        cluster = Cluster.create(provide(args.major), root / "cluster")
        seconds = {rev: [] for rev in trees}
        for rep in range(args.reps):
            order = list(trees) if rep % 2 == 0 else list(reversed(list(trees)))
            for rev in order:
                tree, collections = trees[rev]
                seconds[rev].append(role_run(tree, collections, cluster, root / f"out-{rep}-{rev}", root))
                print(f"repetition {rep + 1}: {rev} {seconds[rev][-1]:.2f} s", flush=True)
        load = os.getloadavg()[0]
        print(f"\nrole tar on an empty PostgreSQL {args.major} cluster, {args.reps} runs each, interleaved; "
              f"1-min load at the end {load:.1f}")
        for rev, values in seconds.items():
            print(f"  {rev}: median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})")
        ratio = statistics.median(seconds[args.after]) / statistics.median(seconds[args.before])
        print(f"  {args.after} / {args.before} = {ratio:.2f}")
    finally:
        if cluster is not None:
            cluster.destroy()
        for tree, _collections in trees.values():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    main()
