"""The controller's lease keeper: its loop with a fake clock and fake renewals, and the detached process."""

import os
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.lease import ENDED, RENEWED
from ansible_collections.pgexclusive.backup.plugins.plugin_utils import lease_keeper


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class Controller:
    """Alive for the first ``checks`` questions."""

    def __init__(self, checks):
        self.checks = checks

    def alive(self):
        self.checks -= 1
        return self.checks >= 0


def keep(renewals, controller, interval=15, timeout=60):
    clock = Clock()
    calls = []

    def renew():
        calls.append(clock.now)
        return renewals(len(calls)) if callable(renewals) else renewals

    why = lease_keeper.keep(renew, controller, interval, timeout, clock=clock, sleep=clock.sleep)
    return why, calls, clock.now


def test_renews_every_interval_until_the_controller_is_gone():
    why, calls, _now = keep(RENEWED, Controller(checks=50))
    assert why == lease_keeper.CONTROLLER_GONE
    assert calls[:4] == [0.0, 15.0, 30.0, 45.0]


def test_a_dead_controller_stops_the_renewals_within_a_check():
    # Alive for the first renewal and 3 one-second checks after it.
    why, calls, now = keep(RENEWED, Controller(checks=4))
    assert why == lease_keeper.CONTROLLER_GONE and calls == [0.0] and now <= 4.0


def test_ends_when_the_host_says_the_lease_ended():
    why, calls, _now = keep(lambda n: ENDED if n == 3 else RENEWED, Controller(checks=1000))
    assert why == lease_keeper.LEASE_ENDED and len(calls) == 3


def test_gives_up_once_the_lease_ran_out_while_renewals_failed():
    why, calls, now = keep(None, Controller(checks=1000), interval=15, timeout=60)
    assert why == lease_keeper.LEASE_RAN_OUT and 60.0 <= now <= 75.0 and len(calls) == 5


def test_one_failed_renewal_does_not_end_the_keeping():
    why, calls, _now = keep(lambda n: None if n == 2 else (ENDED if n == 6 else RENEWED), Controller(checks=1000))
    assert why == lease_keeper.LEASE_ENDED and len(calls) == 6


def test_a_hanging_renewal_counts_as_failed_and_is_not_repeated_while_it_hangs():
    calls = []

    def hangs_once():
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(1.5)
            return RENEWED
        return ENDED

    began = time.monotonic()
    why = lease_keeper.keep(hangs_once, Controller(checks=10000), interval=0.2, timeout=0.5)
    assert why == lease_keeper.LEASE_RAN_OUT and time.monotonic() - began < 1.5, "it waited for the hanging call"
    assert len(calls) == 1, "no second call while the first hangs"

    # Once the hanging call returned, the renewals go on.
    calls.clear()
    why = lease_keeper.keep(hangs_once, Controller(checks=10000), interval=0.2, timeout=60)
    assert why == lease_keeper.LEASE_ENDED and len(calls) == 2
    assert calls[1] - calls[0] >= 1.5, "the second call started while the first still hung"


def test_the_controller_is_known_by_pid_and_start_time():
    me = lease_keeper.Controller(os.getpid())
    assert me.started is not None and me.alive()
    gone = lease_keeper.Controller(os.getpid())
    gone.started = "0"
    assert not gone.alive(), "the same PID with another start time is another process"


def test_spawn_detaches_a_process_of_its_own(tmp_path):
    marker = tmp_path / "ran"

    def run():
        streams = [os.readlink("/proc/self/fd/%d" % fd) for fd in (0, 1, 2)]
        (tmp_path / "part").write_text("%d %d %s" % (os.getpid(), os.getsid(0), " ".join(streams)))
        os.rename(tmp_path / "part", marker)

    pid = lease_keeper.spawn(run)
    deadline = time.time() + 5
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    ran_pid, session, *streams = marker.read_text().split()
    ran_pid, session = int(ran_pid), int(session)
    assert streams == [os.devnull] * 3, "it must not hold the run's output (a pipe or ansible-runner's terminal)"
    # The session of the child that forked it and exited: no session leader, it never gets a terminal back.
    assert ran_pid == pid and session not in (pid, os.getsid(0)), "a session of its own"


def stat(state, starttime="4242", comm="ansible-playbook"):
    # /proc/<pid>/stat: pid (comm) state ppid ... with starttime as field 22.
    return "123 (%s) %s 1 " % (comm, state) + " ".join(["0"] * 17) + " %s 0 0\n" % starttime


def test_a_running_or_sleeping_controller_with_its_start_time_is_alive():
    for state in "RSD":
        assert lease_keeper.alive_by_stat(stat(state), "4242"), state


def test_a_zombie_controller_is_gone_although_its_pid_and_start_time_remain():
    assert lease_keeper.stat_fields(stat("Z")) == ("Z", "4242")
    assert not lease_keeper.alive_by_stat(stat("Z"), "4242")
    assert not lease_keeper.alive_by_stat(stat("X"), "4242")


def test_a_reused_pid_or_no_process_is_gone():
    assert not lease_keeper.alive_by_stat(stat("S", starttime="9999"), "4242")
    assert not lease_keeper.alive_by_stat(None, "4242")
    assert not lease_keeper.alive_by_stat("", "4242")


def test_a_command_name_with_spaces_and_parentheses_is_read_past():
    assert lease_keeper.alive_by_stat(stat("S", comm="a) Z (b"), "4242")
    assert not lease_keeper.alive_by_stat(stat("Z", comm="a) S (b"), "4242")


def test_a_real_unreaped_child_is_gone():
    child = os.fork()
    if child == 0:
        os._exit(0)
    try:
        controller = lease_keeper.Controller(child)
        deadline = time.time() + 5
        while lease_keeper.stat_fields(lease_keeper.stat_of(child))[0] != "Z" and time.time() < deadline:
            time.sleep(0.01)
        assert controller.started is not None and lease_keeper.start_time(child) == controller.started
        assert not controller.alive(), "a zombie keeps its PID and start time, and is dead"
    finally:
        os.waitpid(child, 0)
