"""Network namespaces for the fleet: one per host, each with a veth pair into a bridge of the fleet's own.

The bridge carries the fleet's /24 out of 198.18.0.0/15 (reserved for network
tests): the root namespace, where the controller runs, holds ``.1``, the
hosts ``.2`` and up. Hosts reach each other over the bridge, so no routing or
forwarding is switched on anywhere. Everything is named after the fleet's
random id, and a state file under /run/pgx-fleet names the process that owns
it: a fleet whose owner died without tearing it down (SIGKILL) is removed by
the next fleet that starts.
"""

import fcntl
import ipaddress
import json
import os
import random
import signal
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import TestbedError

RESERVED = ipaddress.ip_network("198.18.0.0/15")
STATE_DIR = Path("/run/pgx-fleet")


@dataclass
class Host:
    """One host of the fleet: its namespace, its address on the bridge, its veth's end in the root namespace."""
    name: str
    netns: str
    address: str
    veth: str

    def exec_argv(self, argv):
        """``argv`` run inside this host's namespace (which shares the machine's filesystem)."""
        return ["ip", "netns", "exec", self.netns, *map(str, argv)]

    def link_down(self):
        """Cut this host off the bridge as a pulled cable would: its packets vanish, nobody refuses a connection."""
        ip("link", "set", self.veth, "down")

    def link_up(self):
        ip("link", "set", self.veth, "up")

    def limit_rate(self, rate):
        """Let the bridge send this host at most ``rate`` (tc's units, e.g. '8mbit'); None lifts the limit.

        A token bucket (tbf), not netem: kernels without sch_netem, as on this test machine, still have tbf.
        """
        if rate is None:
            subprocess.run(["tc", "qdisc", "del", "dev", self.veth, "root"], capture_output=True, check=False)
            return
        proc = subprocess.run(["tc", "qdisc", "replace", "dev", self.veth, "root", "tbf", "rate", rate,
                               "burst", "32kb", "latency", "400ms"], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise TestbedError(f"tc could not limit {self.veth} to {rate}: {proc.stderr.strip()}")


def ip(*args, check=True):
    proc = subprocess.run(["ip", *map(str, args)], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise TestbedError(f"ip {' '.join(map(str, args))} failed: {proc.stderr.strip()}")
    return proc.stdout


def _start_time(pid):
    """The kernel's start time of ``pid`` (field 22 of /proc/<pid>/stat), or None when it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@contextmanager
def _locked():
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    with open(STATE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class Network:
    """The bridge and the namespaces of one fleet; ``destroy`` removes them and every process inside."""

    def __init__(self, ident, subnet):
        self.ident = ident
        self.subnet = ipaddress.ip_network(subnet)
        self.bridge = f"pgxf{ident}"
        self.gateway = str(self.subnet.network_address + 1)
        self.hosts = []

    @property
    def state_file(self):
        return STATE_DIR / f"{self.ident}.json"

    @classmethod
    def create(cls):
        with _locked():
            _remove_orphans()
            net = cls(uuid.uuid4().hex[:6], _free_subnet())
            owner = os.getpid()
            net.state_file.write_text(json.dumps({"subnet": str(net.subnet), "owner": owner,
                                                  "owner_start": _start_time(owner)}))
        try:
            ip("link", "add", net.bridge, "type", "bridge")
            ip("addr", "add", f"{net.gateway}/{net.subnet.prefixlen}", "dev", net.bridge)
            ip("link", "set", net.bridge, "up")
        except TestbedError:
            net.destroy()
            raise
        return net

    def add_host(self, name):
        """A new namespace with one veth pair into the bridge and the next free address."""
        index = len(self.hosts)
        address = str(self.subnet.network_address + 2 + index)
        host = Host(name, f"{self.bridge}-{name}", address, f"{self.bridge}v{index}")
        self.hosts.append(host)
        peer = f"{self.bridge}p{index}"
        ip("netns", "add", host.netns)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", host.netns)
        ip("link", "set", host.veth, "master", self.bridge)
        ip("link", "set", host.veth, "up")
        ip("-n", host.netns, "link", "set", peer, "name", "eth0")
        ip("-n", host.netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        return host

    def destroy(self):
        _remove(self.ident)


def _free_subnet():
    """A random /24 of 198.18.0.0/15 that no interface here and no other fleet uses."""
    used = []
    for line in ip("-o", "-4", "addr", "show").splitlines():
        used.append(ipaddress.ip_interface(line.split()[3]).network)
    for state in STATE_DIR.glob("*.json"):
        try:
            used.append(ipaddress.ip_network(json.loads(state.read_text())["subnet"]))
        except (OSError, ValueError, KeyError):
            continue
    candidates = list(RESERVED.subnets(new_prefix=24))
    random.shuffle(candidates)
    for subnet in candidates:
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise TestbedError("Every /24 of 198.18.0.0/15 is in use here: remove stale pgxf* bridges (ip link).")


def _remove_orphans():
    """Remove the fleets whose owning process is gone (killed before its teardown ran)."""
    for state in STATE_DIR.glob("*.json"):
        try:
            info = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        if _start_time(info.get("owner")) != info.get("owner_start"):
            _remove(state.stem)


def _remove(ident):
    """Kill what runs in the fleet's namespaces (by PID), then delete namespaces, veths, bridge and state."""
    prefix = f"pgxf{ident}"
    namespaces = [line.split()[0] for line in ip("netns", "list").splitlines()
                  if line.split() and line.split()[0].startswith(prefix + "-")]
    for netns in namespaces:
        _kill_inside(netns)
        ip("netns", "del", netns, check=False)
    for line in ip("-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        # Veth ends (deleting one deletes its peer) and, last in the list order, the bridge.
        if name.startswith(prefix):
            ip("link", "del", name, check=False)
    (STATE_DIR / f"{ident}.json").unlink(missing_ok=True)


def _kill_inside(netns, grace=5.0):
    """SIGTERM, then SIGKILL, every process in ``netns``: all of them were started by this fleet's sshd or servers.

    A namespace lives on as long as one process is inside: a session sshd
    kept open by an SSH ControlPersist master, a module Ansible left
    running, a safety-stop watchdog.
    """
    def pids():
        return [int(p) for p in ip("netns", "pids", netns, check=False).split()]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        for pid in pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not pids():
            return
    raise TestbedError(f"Processes {pids()} in the namespace {netns} survived SIGKILL.")
