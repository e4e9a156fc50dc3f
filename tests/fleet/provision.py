"""What the fleet test bed needs on this machine, installed by the fleet fixture itself.

Debian packages (sshd for every host, sudo for become, psycopg2 for Debian's
Python that runs the modules on the database hosts), the login user the
controller connects as, and its sudo rule. All of it is idempotent and stays
installed, like the test bed's PostgreSQL builds: a fresh CI machine gets it
on the first run, later runs only check.
"""

import os
import pwd
from contextlib import contextmanager
from pathlib import Path

from testbed.errors import TestbedError
from testbed.provision import apt_install, locked, run

# acl: Ansible hands its temporary files to an unprivileged become user (postgres) with setfacl.
PACKAGES = ("openssh-server", "sudo", "acl", "python3-psycopg2", "rsync", "tar", "zstd", "iproute2")
# The Python Ansible runs the modules with on the database hosts: Debian's, with python3-psycopg2.
# (The tests' virtual environment lives under /root, which the login user cannot enter.)
HOST_PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# The user Ansible logs in as on every fleet host, and the repository's user.
LOGIN = "pgxfleet"
LOGIN_HOME = Path("/var/lib/pgx-fleet")
SUDOERS = Path("/etc/sudoers.d/pgx-fleet")
SUDO_RULE = f"{LOGIN} ALL=(root,postgres) NOPASSWD: ALL\n"
POLICY_RC = Path("/usr/sbin/policy-rc.d")


@contextmanager
def _no_service_starts():
    """Keep the package scripts from starting a machine-wide sshd on port 22 while installing.

    Only the fleet's own sshds, on the namespaces' addresses, may run. A
    policy-rc.d that exits 101 is Debian's way to say so; an existing one
    (container images have it) is left as it is.
    """
    if POLICY_RC.exists():
        yield
        return
    POLICY_RC.write_text("#!/bin/sh\n# Written by the pgexclusive fleet test bed while it installs packages.\nexit 101\n")
    POLICY_RC.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC.unlink()


def _login_user():
    try:
        pwd.getpwnam(LOGIN)
    except KeyError:
        run(["useradd", "--system", "--home-dir", LOGIN_HOME, "--create-home", "--shell", "/bin/sh",
             "--comment", "pgexclusive fleet test bed", LOGIN])
    # sshd refuses a locked account ('!' in the password field); '*' has no password and is not locked.
    run(["usermod", "-p", "*", LOGIN])


def _sudo_rule():
    if SUDOERS.exists() and SUDOERS.read_text() == SUDO_RULE:
        return
    staged = SUDOERS.with_name(".pgx-fleet.new")
    staged.write_text(SUDO_RULE)
    staged.chmod(0o440)
    try:
        run(["visudo", "-cf", staged])
        staged.rename(SUDOERS)
    finally:
        if staged.exists():
            staged.unlink()


def provision():
    """Install and set up what the fleet needs; raise TestbedError saying what is missing when not root."""
    if os.geteuid() != 0:
        raise TestbedError("The fleet test bed creates network namespaces and users: run the tests as root.")
    with locked(".fleet-lock"):
        with _no_service_starts():
            apt_install(PACKAGES)
        _login_user()
        _sudo_rule()
        # sshd's privilege separation directory; a machine without a running sshd may lack it.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
