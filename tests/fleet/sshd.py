"""An sshd (Debian's openssh-server) inside one fleet host's namespace, and the keys around it."""

import socket
import subprocess
import time
from pathlib import Path

from testbed.errors import TestbedError

from .provision import LOGIN, SFTP_SERVER, SSHD

CONFIG = """\
ListenAddress {address}
Port 22
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
# The keys live in the session's temporary directory, below the world-writable /tmp.
StrictModes no
AllowUsers {login}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
PrintMotd no
# Ansible opens a connection per fork at once; the default MaxStartups would drop some.
MaxStartups 100
LogLevel VERBOSE
Subsystem sftp {sftp}
"""


def keypair(path, comment):
    """An ed25519 key pair at ``path`` (private, 0600) and ``path``.pub; returns the public line."""
    path = Path(path)
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, capture_output=True)
    return path.with_suffix(".pub").read_text().strip()


class Sshd:
    """sshd -D for ``host``, letting in the keys of ``authorized`` (public key lines) as the login user."""

    def __init__(self, host, root, authorized):
        self.host = host
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_key = self.root / "ssh_host_ed25519_key"
        self.public_host_key = keypair(self.host_key, f"{host.name} host key")
        self.authorized_keys = self.root / "authorized_keys"
        self.authorized_keys.write_text("".join(line + "\n" for line in authorized))
        self.authorized_keys.chmod(0o644)
        self.config = self.root / "sshd_config"
        self.config.write_text(CONFIG.format(address=host.address, host_key=self.host_key,
                                             authorized_keys=self.authorized_keys, login=LOGIN, sftp=SFTP_SERVER))
        self.log = self.root / "sshd.log"
        self.proc = None

    def known_hosts_line(self):
        """The line for a known_hosts file that lets ssh check this host's key strictly."""
        key_type, key = self.public_host_key.split()[:2]
        return f"{self.host.address} {key_type} {key}"

    def start(self, timeout=20):
        subprocess.run([SSHD, "-t", "-f", self.config], check=True, capture_output=True)
        with open(self.log, "ab") as log:
            # ip netns exec execs sshd: the PID is sshd's own.
            self.proc = subprocess.Popen(self.host.exec_argv([SSHD, "-D", "-e", "-f", self.config]),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise TestbedError(f"sshd of {self.host.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host.address, 22), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TestbedError(f"sshd of {self.host.name} does not accept connections on "
                                       f"{self.host.address}:22 after {timeout} s:\n{self.log_tail()}") from None
                time.sleep(0.05)

    def stop(self):
        """End the listening sshd by its PID; the sessions it forked go with the namespace."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines=20):
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return ""
