import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import timed_steps
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def test_each_step_is_timed_on_the_monotonic_clock_also_when_it_fails(monkeypatch):
    ticks = iter([10.0, 12.5, 20.0, 20.25])
    monkeypatch.setattr(timed_steps.time, "monotonic", lambda: next(ticks))
    durations = {}
    steps = timed_steps.TimedSteps(durations)
    assert steps.run("first", lambda a, b: a + b, 1, 2) == 3

    def failing():
        raise BackupError("no")
    with pytest.raises(BackupError):
        steps.run("second", failing)
    assert durations == {"first": 2.5, "second": 0.25} and steps.current == "second"
