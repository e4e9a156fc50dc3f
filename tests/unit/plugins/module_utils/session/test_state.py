"""session/state.py: what a start or a stop finds, named; every answer reached from a table of situations."""

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop import records
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import (
    ENDED_WITHOUT_STOP, EXPIRED_STOPPED, RUNNING, STOPPED)
from ansible_collections.pgexclusive.backup.plugins.module_utils.session import start, state, stop
from ansible_collections.pgexclusive.backup.plugins.module_utils.session.state import (
    ALREADY_STOPPED, ENDED_WITHOUT_US, FORCED, GONE_AT_ONCE, NOT_IN_PROGRESS, OURS, OURS_IN_PROGRESS, OURS_REPLACED,
    SAFETY_STOPPED, SOMEONE_ELSES, STARTABLE, STARTED, decide_start, decide_started, decide_stop, expected_start, is_lsn)

OURS_RUNNING = {"label": "nightly", "start_lsn": "0/2000028"}
OTHER_RUNNING = {"label": "other", "start_lsn": "0/3000028"}


def record(outcome, start_lsn="0/2000028"):
    return {"label": "nightly", "outcome": outcome, "start_lsn": start_lsn}


START_CASES = [
    (None, STARTABLE),
    (OURS_RUNNING, OURS_IN_PROGRESS),
    (OTHER_RUNNING, SOMEONE_ELSES),
    ({"label": "(still starting)", "start_time": "just now"}, SOMEONE_ELSES),
]
STARTED_CASES = [
    (OURS_RUNNING, STARTED),
    (None, GONE_AT_ONCE),
    (OTHER_RUNNING, GONE_AT_ONCE),
]


@pytest.mark.parametrize("running, answer", START_CASES)
def test_decide_start(running, answer):
    assert decide_start(running, "nightly") == answer


@pytest.mark.parametrize("started, answer", STARTED_CASES)
def test_decide_started(started, answer):
    assert decide_started(started, "nightly") == answer


@pytest.mark.parametrize("start_lsn, found, expected", [
    ("0/5000000", record(RUNNING), "0/5000000"),
    (None, record(RUNNING), "0/2000028"),
    (None, record(STOPPED), None),
    (None, record(ENDED_WITHOUT_STOP), None),
    (None, None, None),
    ("0/5000000", None, "0/5000000"),
])
def test_expected_start(start_lsn, found, expected):
    assert expected_start(start_lsn, found) == expected


STOP_CASES = [
    # Nothing in progress.
    (None, record(EXPIRED_STOPPED), "nightly", None, False, SAFETY_STOPPED),
    (None, record(EXPIRED_STOPPED), "nightly", "0/9000000", False, SAFETY_STOPPED),
    (None, record(STOPPED), "nightly", None, False, ALREADY_STOPPED),
    (None, record(STOPPED), "nightly", "0/2000028", False, ALREADY_STOPPED),
    # Newer releases print LSNs zero-padded: the same location still.
    (None, record(STOPPED), "nightly", "0/02000028", False, ALREADY_STOPPED),
    (None, record(STOPPED), "nightly", "0/9000000", False, ENDED_WITHOUT_US),
    (None, record(RUNNING), "nightly", None, False, ENDED_WITHOUT_US),
    (None, None, "nightly", "0/2000028", False, ENDED_WITHOUT_US),
    (None, record(ENDED_WITHOUT_STOP), "nightly", None, False, NOT_IN_PROGRESS),
    (None, None, "nightly", None, False, NOT_IN_PROGRESS),
    (None, None, None, None, True, NOT_IN_PROGRESS),
    (None, None, None, "0/2000028", True, NOT_IN_PROGRESS),
    # A backup in progress.
    (OURS_RUNNING, record(RUNNING), "nightly", None, False, OURS),
    (OURS_RUNNING, None, "nightly", "0/2000028", False, OURS),
    (OURS_RUNNING, None, "nightly", "0/02000028", False, OURS),
    (OURS_RUNNING, None, "nightly", None, False, OURS),
    (OURS_RUNNING, record(STOPPED, "0/1000000"), "nightly", None, False, OURS),
    (OURS_RUNNING, record(RUNNING), "nightly", None, True, OURS),
    (OURS_RUNNING, record(RUNNING, "0/1000000"), "nightly", None, False, OURS_REPLACED),
    (OURS_RUNNING, None, "nightly", "0/1000000", False, OURS_REPLACED),
    (OURS_RUNNING, record(RUNNING), "nightly", "0/1000000", True, OURS_REPLACED),
    (OTHER_RUNNING, record(RUNNING), "nightly", None, False, SOMEONE_ELSES),
    (OTHER_RUNNING, None, "nightly", "0/3000028", False, SOMEONE_ELSES),
    (OTHER_RUNNING, record(RUNNING), "nightly", None, True, FORCED),
    (OTHER_RUNNING, None, None, None, True, FORCED),
]


@pytest.mark.parametrize("running, found, label, start_lsn, force, answer", STOP_CASES)
def test_decide_stop(running, found, label, start_lsn, force, answer):
    assert decide_stop(running, found, label, start_lsn, force) == answer


def test_every_answer_is_reached():
    """Each named answer of state.py is the answer of some case above: none is dead."""
    reached = {case[-1] for case in START_CASES + STARTED_CASES + STOP_CASES}
    # The record outcomes state.py reads are records.py's, not answers of its own.
    named = {value for name, value in vars(state).items()
             if name.isupper() and isinstance(value, str) and name not in vars(records)}
    assert named == reached


def test_every_answer_has_its_act():
    """start.py and stop.py dispatch on exactly the answers their decisions give."""
    assert set(start._ON_FOUND) == {case[-1] for case in START_CASES}
    assert set(start._ON_STARTED) == {case[-1] for case in STARTED_CASES}
    assert set(stop._ON_FOUND) == {case[-1] for case in STOP_CASES}


@pytest.mark.parametrize("text, answer", [
    ("0/2000028", True),
    ("0/02000028", True),
    ("16/B374D848", True),
    ("", False),
    ("nightly", False),
    ("0/2000028 ", False),
    ("0/", False),
    ("123456789/0", False),
])
def test_is_lsn(text, answer):
    assert is_lsn(text) is answer
