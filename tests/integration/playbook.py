"""Run tasks through the real ``ansible-playbook`` and return what each registered.

Every task gets ``register`` and ``ignore_errors``, so one playbook run can
exercise several behaviours, failures included; a last task dumps the
registered results as JSON. Each run costs about two seconds: batch tasks.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


def connection(cluster, dbname=None, user="postgres"):
    """Module connection options for a test bed cluster (Unix socket)."""
    return {
        "login_unix_socket": str(cluster.socket_dir),
        "login_port": cluster.port,
        "login_db": dbname or cluster.backup_db,
        "login_user": user,
    }


def task(module, **args):
    """One task calling ``pgexclusive.backup.<module>`` with ``args``."""
    return {"pgexclusive.backup." + module: args}


class PlaybookRun:
    """An ansible-playbook process running ``tasks``; wait() gives one result dict per task."""

    def __init__(self, tasks, check=False):
        self.dir = Path(tempfile.mkdtemp(prefix="pgx-play-"))
        self.out = self.dir / "results.json"
        names = ["pgx_%d" % i for i in range(len(tasks))]
        play_tasks = [dict(spec, register=name, ignore_errors=True) for spec, name in zip(tasks, names)]
        play_tasks.append({
            "ansible.builtin.copy": {
                "dest": str(self.out),
                "content": "{{ [%s] | to_json }}" % ", ".join(names),
            },
            "check_mode": False,
        })
        playbook = [{
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": play_tasks,
        }]
        # JSON is YAML.
        (self.dir / "play.yml").write_text(json.dumps(playbook, indent=1))
        argv = [ANSIBLE_PLAYBOOK, "-i", "localhost,", str(self.dir / "play.yml")]
        if check:
            argv.append("--check")
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="False",
                   ANSIBLE_RETRY_FILES_ENABLED="False", ANSIBLE_DEPRECATION_WARNINGS="False")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def wait(self, timeout=300):
        try:
            self.output = self.proc.communicate(timeout=timeout)[0]
            if not self.out.exists():
                raise AssertionError("ansible-playbook exited %s without results:\n%s"
                                     % (self.proc.returncode, self.output))
            results = json.loads(self.out.read_text())
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
        for result in results:
            # Warnings are printed, not registered: attach them so tests can assert on them.
            result.setdefault("warnings", [])
        return results


def run_tasks(tasks, check=False):
    run = PlaybookRun(tasks, check)
    results = run.wait()
    run_output = run.output
    for result in results:
        result["_output"] = run_output
    return results
