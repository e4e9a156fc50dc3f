"""A controller that dies mid-copy, over SSH: every host leaves backup mode within 120 s.

playbooks/backup.yml runs against the fleet's three database hosts (14, 15,
18) with become and forks 3, and with the role's safety-stop defaults
(exclusive_backup_heartbeat_timeout 60, no max_duration) where a case is
about the defaults' bound (SIGKILL), and 30 s where the timeout is not what
it tries (SIGTERM, a late reaper, cut links), to spend less time waiting.
While every host
copies, the controller dies: ansible-playbook SIGKILLed, SIGTERMed (what an
AWX cancel sends through ansible-runner), or its SSH connections cut (each
database host's link taken down). The copy is planned to take an hour. Each
case checks on the live servers that backup mode ended within 120 s of the
event, that the copy processes on the hosts ended, that nothing of the run
is left on the controller, and that the state record and pg_backup_info say
what happened; the servers take writes and a new backup afterwards.
"""

import signal
import time
import uuid

import pytest

from test_fleet import collected, run_backup, start_backup
from watchdogs import process_state, processes_with_label, record, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet")]

WITHIN = 120
COPY = "sleep 3600"


@pytest.fixture
def background(fleet, fleet_hosts, scratch):
    started = []

    def start(**role_vars):
        labels = {h.name: f"lease-{h.name}-{uuid.uuid4().hex[:8]}" for h in fleet_hosts}
        host_vars = {name: {"exclusive_backup_label": label} for name, label in labels.items()}
        started.append(start_backup(fleet, scratch, host_vars, exclusive_backup_method="command",
                                    exclusive_backup_command=COPY, **role_vars))
        started[-1].labels = labels
        return started[-1]

    yield start
    for run in started:
        run.cleanup()
    for fleet_host in fleet_hosts:
        fleet_host.host.link_up()


def wait_until_copying(run, fleet_hosts):
    wait_for(lambda: all(processes_with_label(run.labels[h.name]) for h in fleet_hosts), 120,
             lambda: (run.proc.poll(), run.output_so_far()[-3000:]))
    for fleet_host in fleet_hosts:
        assert fleet_host.cluster.in_backup()


def check_every_host_left_in_time(run, fleet_hosts, event_at, what, heartbeat_timeout=60):
    """Each host out of backup mode within WITHIN s of the event, its copy ended, its record saying why."""
    left = {}
    while len(left) < len(fleet_hosts) and time.time() - event_at < WITHIN:
        for fleet_host in fleet_hosts:
            if fleet_host.name not in left and not fleet_host.cluster.in_backup():
                left[fleet_host.name] = time.time() - event_at
        time.sleep(0.5)
    assert sorted(left) == sorted(h.name for h in fleet_hosts), f"still in backup mode {WITHIN} s after {what}: {left}"
    ended = wait_for(lambda: not any(processes_with_label(label) for label in run.labels.values()), 30, interval=0.5)
    for fleet_host in fleet_hosts:
        # The watchdog records its outcome right after its stop statement.
        wait_for(lambda: record(fleet_host.state_dir, run.labels[fleet_host.name])["outcome"] != "running", 10)
        rec = record(fleet_host.state_dir, run.labels[fleet_host.name])
        assert rec["outcome"] == "expired-stopped" and rec["expired_by"] == "heartbeat", rec
        assert rec["heartbeat_timeout"] == heartbeat_timeout and not rec["lease"], rec
        # The last renewal came at most a quarter of the timeout before the event.
        assert left[fleet_host.name] >= heartbeat_timeout * 3 / 4 - 1, f"{fleet_host.name} left before its timeout"
    print(f"\nMEASURED fleet, {what}, heartbeat_timeout {heartbeat_timeout}: backup mode left after "
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(left.items()))
          + f"; every copy ended {max(left.values()) + ended:.1f} s after it at the latest")
    return left


def check_servers_carry_on(fleet, fleet_hosts, scratch, labels):
    """Writes go on, the next run reports the dead backups, and a new backup of every host completes."""
    for fleet_host in fleet_hosts:
        fleet_host.cluster.sql("CREATE TABLE IF NOT EXISTS after_the_event (id int)")
    run = run_backup(fleet, scratch, exclusive_backup_compression="zstd", **fleet.repository_vars())
    assert run.rc == 0, run.output[-4000:]
    for fleet_host in fleet_hosts:
        assert run.results[fleet_host.name]["result"]["status"] == "complete"
        assert f"An earlier backup '{labels[fleet_host.name]}'" in run.output, "the next run reports the dead backup"


# SIGKILL-unreaped: this test, ansible-playbook's parent, does not wait() for it until every host left backup
# mode, as a wrapper that reaps late would: the zombie keeps its PID and start time in /proc.
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGKILL-unreaped"])
def test_controller_killed_mid_copy(fleet, fleet_hosts, background, scratch, how):
    heartbeat_timeout = 60 if how == "SIGKILL" else 30
    run = background(**({} if heartbeat_timeout == 60 else {"exclusive_backup_heartbeat_timeout": heartbeat_timeout}))
    wait_until_copying(run, fleet_hosts)
    killed_at = time.time()
    run.signal(getattr(signal, how.split("-")[0]))
    unreaped = how.endswith("unreaped")
    if unreaped:
        wait_for(lambda: process_state(run.proc.pid) == "Z", 10)
    else:
        run.wait(60)
        assert run.rc != 0
    check_every_host_left_in_time(run, fleet_hosts, killed_at, f"ansible-playbook {how}", heartbeat_timeout)
    if unreaped:
        assert process_state(run.proc.pid) == "Z", "the controller stayed an unreaped zombie until backup mode ended"
        run.wait(60)
        assert run.rc == -signal.SIGKILL
    # The orphaned workers ended with their copies, the lease keepers with their controller.
    wait_for(lambda: not run.forked(), 30, run.forked)
    check_servers_carry_on(fleet, fleet_hosts, scratch, run.labels)


def test_ssh_connections_lost_mid_copy(fleet, fleet_hosts, background, scratch):
    # A dead host fails the run within seconds instead of waiting for TCP's own timeout (hours):
    # ServerAliveInterval, as the README recommends for fleets.
    # Masters of their own: one left by an earlier run (ControlPersist) would carry no ServerAliveInterval.
    common = fleet.connection_vars()["ansible_ssh_common_args"]
    run = background(ansible_ssh_common_args=common + " -o ServerAliveInterval=5 -o ServerAliveCountMax=3",
                     ansible_control_path_dir=str(scratch / "cp"), exclusive_backup_heartbeat_timeout=30)
    wait_until_copying(run, fleet_hosts)
    cut_at = time.time()
    for fleet_host in fleet_hosts:
        fleet_host.host.link_down()
    check_every_host_left_in_time(run, fleet_hosts, cut_at, "SSH links cut", 30)
    run.wait(120)
    assert run.rc != 0
    wait_for(lambda: not run.forked(), 30, run.forked)
    for fleet_host in fleet_hosts:
        assert f"{fleet_host.name}" in run.output and "UNREACHABLE" in run.output, run.output[-4000:]
        fleet_host.host.link_up()
    results = collected(run.results)
    assert all((r["result"] or {}).get("status") != "complete" for r in results.values()), results
    check_servers_carry_on(fleet, fleet_hosts, scratch, run.labels)
    print("\nrecap: " + " | ".join(line for line in run.output.splitlines() if "unreachable=" in line))
