"""The fleet: database hosts and a repository host, each a network namespace with its own sshd.

    fleet = Fleet.create(root, majors=(14, 15, 18))
    fleet.write_inventory(path)      # the hosts as Ansible reaches them: ssh, key, become
    fleet.repository_vars()          # role variables that send the copies to the repository host
    fleet.destroy()                  # servers, sshds, namespaces, veths, bridge

Every host shares the machine's filesystem (paths are the same everywhere),
not its network: the controller reaches each host only through the host's
address on the fleet's bridge, and the database hosts reach the repository
the same way. Ansible logs in as the provisioned user with the controller's
key and becomes root with ``sudo -n``; the database hosts' root sends copies
to the repository with a key of its own, which only the repository's sshd
accepts.
"""

import atexit
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed import Cluster, provide
from testbed.errors import TestbedError
from testbed.osuser import as_postgres, open_to_postgres

from .netns import Network
from .provision import HOST_PYTHON, LOGIN, provision
from .sshd import Sshd, keypair

MAJORS = (14, 15, 18)


class HostCluster(Cluster):
    """A test bed cluster whose server runs in a fleet host's namespace, on the host's address and a socket.

    The test bed's Cluster as it is, with two differences: pg_ctl runs inside
    the namespace, and the server listens on the host's address instead of
    127.0.0.1. The socket directory is a path on the shared filesystem, so the
    tests still reach the server from the root namespace through it.
    """

    host = None

    @classmethod
    def on(cls, host, inst, root):
        return type(f"HostCluster_{host.name}", (cls,), {"host": host}).create(inst, root)

    def configure(self, **settings):
        settings.setdefault("listen_addresses", self.host.address)
        super().configure(**settings)

    def _pg(self, argv):
        cmd = self.host.exec_argv(as_postgres([self.inst.tool(argv[0]), *argv[1:]]))
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise TestbedError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{self.log_tail()}")
        return proc.stdout


@dataclass
class FleetHost:
    name: str
    host: object            # netns.Host
    root: Path
    sshd: Sshd
    cluster: HostCluster = None

    @property
    def address(self):
        return self.host.address

    @property
    def dest(self):
        """exclusive_backup_dest on this host: where the run's own record is kept."""
        return self.root / "backups"

    @property
    def state_dir(self):
        return self.root / "state"

    def role_vars(self):
        cluster = self.cluster
        return {
            "ansible_host": self.address,
            "exclusive_backup_login_unix_socket": str(cluster.socket_dir),
            "exclusive_backup_login_port": cluster.port,
            "exclusive_backup_login_db": cluster.backup_db,
            "exclusive_backup_dest": str(self.dest),
            "exclusive_backup_state_dir": str(self.state_dir),
        }


class Fleet:
    def __init__(self, root):
        self.root = Path(root)
        self.network = None
        self.db_hosts = []
        self.repo = None
        self.keys = self.root / "keys"
        self.repository_dir = self.root / "repository"

    @classmethod
    def create(cls, root, majors=MAJORS):
        provision()
        fleet = cls(root)
        atexit.register(fleet.destroy)
        try:
            fleet._build(majors)
        except BaseException:
            fleet.destroy()
            raise
        return fleet

    def _build(self, majors):
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        # The login user (Ansible's temporary files, the repository) and postgres must reach in here.
        open_to_postgres(self.root)
        self.keys.mkdir(mode=0o700, exist_ok=True)
        controller_key = keypair(self.keys / "controller_ed25519", "fleet controller")
        repository_key = keypair(self.keys / "repository_ed25519", "fleet database hosts' root")
        self.network = Network.create()
        for index in range(len(majors)):
            self.db_hosts.append(self._host(f"db{index + 1}", [controller_key]))
        self.repo = self._host("repo", [controller_key, repository_key])
        self.repository_dir.mkdir(mode=0o700)
        shutil.chown(self.repository_dir, LOGIN, LOGIN)
        remote_tmp = self.root / "remote_tmp"
        remote_tmp.mkdir(mode=0o700)
        shutil.chown(remote_tmp, LOGIN, LOGIN)
        known = "".join(h.sshd.known_hosts_line() + "\n" for h in self.db_hosts + [self.repo])
        (self.keys / "known_hosts").write_text(known)
        for fleet_host, major in zip(self.db_hosts, majors):
            fleet_host.cluster = HostCluster.on(fleet_host.host, provide(major), fleet_host.root / "pg")

    def _host(self, name, authorized):
        host = self.network.add_host(name)
        root = self.root / name
        root.mkdir(mode=0o755)
        sshd = Sshd(host, root / "sshd", authorized)
        sshd.start()
        return FleetHost(name, host, root, sshd)

    # -- what Ansible and the role are given ---------------------------------

    def connection_vars(self):
        """How the controller reaches every host: the login user, its key, strict host keys, become."""
        return {
            "ansible_connection": "ssh",
            "ansible_user": LOGIN,
            "ansible_ssh_private_key_file": str(self.keys / "controller_ed25519"),
            "ansible_ssh_common_args": (f"-o UserKnownHostsFile={self.keys / 'known_hosts'} "
                                        "-o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null"),
            "ansible_become": True,
            "ansible_python_interpreter": HOST_PYTHON,
            "ansible_remote_tmp": str(self.root / "remote_tmp"),
        }

    def inventory(self, host_vars=None, **group_vars):
        """The inventory: group ``postgresql`` (with ``group_vars``, and ``host_vars`` per host over them), ``repository``."""
        host_vars = host_vars or {}
        return {"all": {
            "vars": self.connection_vars(),
            "children": {
                "postgresql": {"hosts": {h.name: {**h.role_vars(), **host_vars.get(h.name, {})} for h in self.db_hosts},
                               "vars": group_vars},
                "repository": {"hosts": {self.repo.name: {"ansible_host": self.repo.address}}},
            },
        }}

    def write_inventory(self, path, host_vars=None, **group_vars):
        # JSON is YAML.
        Path(path).write_text(json.dumps(self.inventory(host_vars, **group_vars), indent=1))
        return Path(path)

    def repository(self, subdir=None):
        """``user@host:/path`` of the repository (or of ``subdir`` in it) for exclusive_backup_repository."""
        path = self.repository_dir / subdir if subdir else self.repository_dir
        return f"{LOGIN}@{self.repo.address}:{path}"

    def repository_vars(self):
        """Role variables: the repository key and a known_hosts that checks the repository's host key."""
        return {
            "exclusive_backup_repository": self.repository(),
            "exclusive_backup_ssh_key": str(self.keys / "repository_ed25519"),
            "exclusive_backup_ssh_options": ["-o", f"UserKnownHostsFile={self.keys / 'known_hosts'}",
                                             "-o", "StrictHostKeyChecking=yes"],
        }

    # -- teardown ---------------------------------------------------------------

    def destroy(self):
        """Stop every server and sshd, then remove the namespaces (killing what is left inside) and links."""
        for fleet_host in self.db_hosts:
            if fleet_host.cluster is not None:
                fleet_host.cluster.stop(mode="immediate")
        for fleet_host in self.db_hosts + ([self.repo] if self.repo else []):
            fleet_host.sshd.stop()
        if self.network is not None:
            self.network.destroy()
            self.network = None
