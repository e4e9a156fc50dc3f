"""The exclusive_backup role in a background ansible-playbook process that a test can kill.

The process gets a session of its own, so a test can signal the whole tree
(ansible-playbook, its workers, the module and the copy command) by the
group's id, as an AWX job cancel or a killed terminal does, and clean up what
is left the same way. Watchdogs leave that group (they start their own session).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from role_play import REPO, connection_vars, playbook_env, role_playbook, write_inventory


class RoleProcess:
    def __init__(self, cluster, workdir, name="run", **role_vars):
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True)
        self.result_file = self.dir / "result.json"
        (self.dir / "vars.json").write_text(json.dumps({**connection_vars(cluster), **role_vars}))
        (self.dir / "play.yml").write_text(role_playbook(self.result_file))
        inventory = write_inventory(self.dir / "inventory.yml")
        env = playbook_env()
        self.log = (self.dir / "output.log").open("w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
             str(self.dir / "play.yml"), "-e", "@%s" % (self.dir / "vars.json")],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO), start_new_session=True)

    def signal_group(self, signum):
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass

    def wait(self, timeout=300):
        self.rc = self.proc.wait(timeout)
        self.seconds = time.monotonic() - self.started
        self.log.close()
        self.output = (self.dir / "output.log").read_text()
        self.result = json.loads(self.result_file.read_text()) if self.result_file.exists() else None
        return self

    def cleanup(self):
        """Whatever of the group outlived the test (a copy command orphaned by a kill) is ended by group id."""
        self.signal_group(signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(30)
        if not self.log.closed:
            self.log.close()
