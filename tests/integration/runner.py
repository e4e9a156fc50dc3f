"""Every ansible-playbook the tests start: a list of tasks, the exclusive_backup role, or a playbook.

One way to find ansible-playbook (next to the test interpreter, whose
virtual environment holds ansible-core and psycopg2), one environment
(``ansible_env``: tests/conftest.py has already put the test HOME,
ANSIBLE_COLLECTIONS_PATH and ANSIBLE_REMOTE_TEMP into os.environ, which it
copies), one process handle (``Run``).

    results = run_tasks([task("pg_backup_info", **connection(pg))])   # one registered result per task
    run = run_role(pg, scratch, exclusive_backup_dest=...)             # finished: rc, output, result, seconds
    run = start_role(pg, scratch, "twin1", ...)                        # running: signal(), signal_group(), wait()
    run = start_playbook(play, inventory, run_dir(scratch), args=["-f", "3"], env=ansible_env(...))

Every run has a session of its own, so a test can signal the whole tree
(ansible-playbook, its workers, the module and the copy command) by the
group's id, as an AWX job cancel or a killed terminal does, and clean up what
is left the same way. Watchdogs leave that group: they start their own session.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from watchdogs import live_processes

ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
REPO = Path(__file__).resolve().parents[2]
# Tasks run as they always have (no pipelining); the role as users are told to run it.
TASKS_ENV = {"ANSIBLE_DEPRECATION_WARNINGS": "0"}
ROLE_ENV = {"ANSIBLE_PIPELINING": "1"}


def ansible_env(**overrides):
    """os.environ (the test HOME, collections path and remote temp included) with plain, quiet output."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_HOST_KEY_CHECKING="0")
    env.update(overrides)
    return env


def run_dir(workdir, name="run"):
    """A new directory of one run's own under ``workdir``: its play.yml names it in ansible-playbook's command line."""
    path = Path(workdir) / f"{name}-{time.monotonic_ns()}"
    path.mkdir(parents=True)
    return path


def localhost_inventory(path):
    path.write_text(
        "all:\n  hosts:\n    localhost:\n"
        "      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    return path


class Run:
    """One ansible-playbook process writing its output to ``dir``/output.log.

    ``parse(run)`` turns what the play left into ``result`` once it ended
    (default: the JSON in ``result_file`` when there is one, else None).
    """

    def __init__(self, playbook, inventory, directory, args=(), env=None, result_file=None, parse=None,
                 remove_dir=False):
        self.dir, self.play, self.result_file = Path(directory), Path(playbook), result_file
        self._parse = parse or _json_result
        self._remove_dir = remove_dir
        self.log_path = self.dir / "output.log"
        self._log = self.log_path.open("w")
        self.rc = self.output = self.result = self.seconds = None
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), *map(str, args), str(playbook)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env or ansible_env(), cwd=str(REPO),
            start_new_session=True)

    def __repr__(self):
        return f"<Run {self.play} rc={self.rc} result={self.result}>"

    def output_so_far(self):
        return self.log_path.read_text()

    def signal(self, signum):
        """ansible-playbook alone: its workers, the module and the copy are not signalled."""
        try:
            os.kill(self.proc.pid, signum)
        except ProcessLookupError:
            pass

    def signal_group(self, signum):
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass

    def forked(self):
        """Processes forked from this run that are still there (workers, lease keepers): they carry
        ansible-playbook's command line, which names the run's own play. A play shared with other runs
        (playbooks/backup.yml itself) tells nothing: none."""
        if self.dir not in self.play.parents:
            return []
        play = str(self.play).encode()
        return [pid for pid, argv in live_processes("cmdline") if play in argv]

    def wait(self, timeout=600):
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.cleanup()
            raise
        self.seconds = time.monotonic() - self.started
        self._log.close()
        try:
            self.output = self.output_so_far()
            self.result = self._parse(self)
        finally:
            if self._remove_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
        return self

    def cleanup(self):
        """Whatever of the run outlived the test (a copy orphaned by a kill, a worker) is ended by id."""
        self.signal_group(signal.SIGKILL)
        for pid in self.forked():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(30)
        if not self._log.closed:
            self._log.close()


def _json_result(run):
    path = run.result_file
    return json.loads(path.read_text()) if path is not None and path.exists() else None


def start_playbook(playbook, inventory, directory, args=(), env=None, result_file=None):
    """Any playbook with any inventory (a file, or a list such as "localhost,"), running in the background."""
    return Run(playbook, inventory, directory, args=args, env=env, result_file=result_file)


def run_playbook(playbook, inventory, directory, args=(), env=None, result_file=None, timeout=600):
    return start_playbook(playbook, inventory, directory, args, env, result_file).wait(timeout)


# -- tasks ----------------------------------------------------------------------------------------

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


def _task_results(run):
    if run.result_file is None or not run.result_file.exists():
        raise AssertionError("ansible-playbook exited %s without results:\n%s" % (run.rc, run.output))
    results = json.loads(run.result_file.read_text())
    for result in results:
        # Warnings are printed, not registered: attach them, and the run's output, so tests can assert on them.
        result.setdefault("warnings", [])
        result["_output"] = run.output
    return results


def start_tasks(tasks, check=False):
    """The tasks in one play on localhost, each with ``register`` and ``ignore_errors``, so one run can
    exercise several behaviours, failures included; wait().result is one registered result per task.

    Each run costs about two seconds: batch tasks.
    """
    directory = Path(tempfile.mkdtemp(prefix="pgx-play-"))
    out = directory / "results.json"
    names = ["pgx_%d" % i for i in range(len(tasks))]
    play_tasks = [dict(spec, register=name, ignore_errors=True) for spec, name in zip(tasks, names)]
    play_tasks.append({
        "ansible.builtin.copy": {"dest": str(out), "content": "{{ [%s] | to_json }}" % ", ".join(names)},
        "check_mode": False,
    })
    playbook = directory / "play.yml"
    # JSON is YAML.
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable}, "tasks": play_tasks,
    }], indent=1))
    return Run(playbook, "localhost,", directory, args=["--check"] if check else [], env=ansible_env(**TASKS_ENV),
               result_file=out, parse=_task_results, remove_dir=True)


def run_tasks(tasks, check=False, timeout=300):
    return start_tasks(tasks, check).wait(timeout).result


# -- the role ---------------------------------------------------------------------------------------

def role_connection(cluster):
    """The role's connection variables for a test bed cluster (Unix socket, superuser)."""
    return {
        "exclusive_backup_login_unix_socket": str(cluster.socket_dir),
        "exclusive_backup_login_port": cluster.port,
        "exclusive_backup_login_user": "postgres",
        "exclusive_backup_login_db": cluster.backup_db,
    }


def _role_play(result_file):
    """A play running the role and writing exclusive_backup_result to ``result_file``, whatever happens."""
    return (
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - block:\n"
        "        - ansible.builtin.include_role:\n            name: pgexclusive.backup.exclusive_backup\n"
        "      always:\n"
        "        - ansible.builtin.copy:\n"
        "            content: \"{{ exclusive_backup_result | default({}) | to_json }}\"\n"
        f"            dest: {result_file}\n"
        "            mode: '0600'\n"
        # The test's own file, written under --check too.
        "          check_mode: false\n")


def start_role(cluster, workdir, name="run", playbook=None, env=None, args=(), **role_vars):
    """The role (or ``playbook``) on localhost against ``cluster`` with ``role_vars`` over its connection
    variables, and ansible-playbook's ``args`` (e.g. --check), in the background; wait().result is
    exclusive_backup_result (None when the play never reached the end of its block, or when ``playbook``
    does not write it)."""
    directory = run_dir(workdir, name)
    result_file = directory / "result.json"
    variables = directory / "vars.json"
    variables.write_text(json.dumps({**role_connection(cluster), **role_vars}))
    if playbook is None:
        playbook = directory / "play.yml"
        playbook.write_text(_role_play(result_file))
    return Run(playbook, localhost_inventory(directory / "inventory.yml"), directory,
               args=["-e", f"@{variables}", *args], env=ansible_env(**ROLE_ENV, **(env or {})), result_file=result_file)


def run_role(cluster, workdir, playbook=None, env=None, timeout=600, args=(), **role_vars):
    return start_role(cluster, workdir, playbook=playbook, env=env, args=args, **role_vars).wait(timeout)
