"""A gap in the WAL archive, every major (issue 18, defect 9): refused before anything is laid out, or accepted.

Per major, one cluster of this file's own and one backup taken by the role;
after it three batches, each ended by a WAL switch so that each lies in
segments of its own: A, then B (whose segment is the gap), then C. An archive
copy without B's segment is the gappy archive; recovery reading it would end
at the gap with no error, even though C's segments are there.

One play: latest and a time target past the gap are refused, naming the
segment, with nothing laid out (an absent target stays absent, an occupied
one is neither set aside nor written, with force); with allow_wal_gap latest
is promoted at the gap with exactly the rows before it and says so, and the
time target fails without claiming all the archive was replayed; a custom
restore_command is not listed, and the result says so. Every restored server
is stopped by its PID.
"""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from restore_helpers import bindir, insert, make_dir, restore_port, rows_of, socket_dir, stop_restored
from runner import run_role, run_tasks, task
from testbed import Cluster, provide
from testbed.osuser import chown_postgres, open_to_postgres
from testbed.fixtures import SELECTED

BEFORE = set(range(1, 101))
BATCH_A = set(range(1001, 1101))
BATCH_B = set(range(2001, 2101))
BATCH_C = set(range(3001, 3101))


class Gap:
    """A cluster, its backup, the gappy archive, and what each restore left."""


def batch_in_a_segment_of_its_own(cluster, db, first, last, phase):
    """Insert a batch and switch WAL; (the segment holding its commit, the commit's time)."""
    insert(cluster, db, first, last, phase)
    segment, when = cluster.value("SELECT ARRAY[pg_walfile_name(pg_current_wal_insert_lsn()), clock_timestamp()::text]",
                                  dbname=db)
    cluster.sql("SELECT pg_switch_wal()")
    return segment, when


def params(g, case, **args):
    sock = socket_dir(g.root / f"sock-{case}")
    base = dict(backup_dir=str(g.backup_dir), data_directory=str(g.root / f"r-{case}" / "data"), bindir=bindir(g.live),
                wal_archive_dir=str(g.gappy), timeout=120,
                settings={"port": str(restore_port()), "listen_addresses": "", "unix_socket_directories": str(sock),
                          "shared_buffers": "16MB"})
    base.update(args)
    g.restored.append(Path(base["data_directory"]))
    return base


@pytest.fixture(scope="module", params=SELECTED, ids=lambda m: f"pg{m}")
def gap(request, testbed_dir):
    major = request.param
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix=f"gap-pg{major}-", dir=testbed_dir))
    root.chmod(0o755)
    live = Cluster.create(provide(major), root / "live")
    g = Gap()
    g.live, g.root, g.major, g.restored = live, root, major, []
    try:
        g.db = live.create_database()
        live.sql("CREATE TABLE t (id int PRIMARY KEY, phase text NOT NULL)", dbname=g.db)
        insert(live, g.db, 1, 100, "before")
        run = run_role(live, make_dir(root / "play"), exclusive_backup_dest=str(root / "backups"))
        assert run.rc == 0, run.output[-6000:]
        g.backup_dir = root / "backups" / run.result["label"]
        g.record = json.loads((g.backup_dir / "backup.json").read_text())
        _a, _when = batch_in_a_segment_of_its_own(live, g.db, 1001, 1100, "A")
        g.missing, _when = batch_in_a_segment_of_its_own(live, g.db, 2001, 2100, "B")
        g.newest, g.time_c = batch_in_a_segment_of_its_own(live, g.db, 3001, 3100, "C")
        live.wait_archived(g.newest)
        assert g.record["stop_wal_file"] < g.missing < g.newest
        g.gappy = make_dir(root / "gappy-archive")
        for name in os.listdir(live.archive_dir):
            if name != g.missing:
                shutil.copy(live.archive_dir / name, g.gappy / name)
        chown_postgres(g.gappy)
        g.gappy_listing = sorted(os.listdir(g.gappy))
        g.occupied = make_dir(root / "occupied")
        (g.occupied / "old file").write_text("the old directory")
        g.occupied_before = os.stat(g.occupied / "old file")
        past_c = {"target": "time", "target_time": g.time_c}
        cases = {
            "latest": params(g, "latest", target="latest"),
            "time": params(g, "time", **past_c),
            "latest_forced": params(g, "latest_forced", target="latest", data_directory=str(g.occupied), force=True),
            "latest_accepted": params(g, "latest_accepted", target="latest", allow_wal_gap=True),
            "time_accepted": params(g, "time_accepted", allow_wal_gap=True, **past_c),
            "restore_command": params(g, "restore_command", target="latest",
                                      restore_command=f"cp {g.gappy}/%f %p"),
        }
        open_to_postgres(root)
        g.results = dict(zip(cases, run_tasks([task("pg_backup_restore", **p) for p in cases.values()], timeout=900)))
        g.rows = {case: rows_of(r, g.db)["ids"] for case, r in g.results.items() if r.get("running")}
        for data in g.restored:
            stop_restored(data, live.inst)
        print(f"\npg{major}: the history and {len(cases)} restores took {time.monotonic() - started:.1f}s")
        yield g
    finally:
        for data in g.restored:
            stop_restored(data, live.inst)
        live.destroy()
        shutil.rmtree(root, ignore_errors=True)


def refusal(g, what, why=""):
    return (f"The WAL archive ({g.gappy}) has a gap: the segment {g.missing} is missing, and later segments (up to "
            f"{g.newest}) are there. Recovery to {what} would end at the gap, before the newest archived WAL{why}. "
            "Nothing was restored.")


@pytest.mark.parametrize("case", ["latest", "time"])
def test_a_gap_before_the_target_is_refused_before_anything_is_laid_out(gap, case):
    result = gap.results[case]
    what, why = ("latest", "") if case == "latest" else (
        f"target_time {gap.time_c}", " (where a time target lies is known only once replay finds it)")
    assert result.get("failed"), result
    assert result["msg"].startswith(refusal(gap, what, why)), result["msg"]
    assert "set allow_wal_gap: true" in result["msg"], "the hint names the option"
    assert result["wal_gap"] == gap.missing and result["phase"] == "list_wal"
    assert not (gap.root / f"r-{case}").exists(), "nothing was laid out"
    assert sorted(os.listdir(gap.gappy)) == gap.gappy_listing


def test_a_refused_gap_sets_nothing_aside_even_with_force(gap):
    result = gap.results["latest_forced"]
    assert result.get("failed") and result["msg"].startswith(refusal(gap, "latest")), result["msg"]
    assert os.listdir(gap.occupied) == ["old file"] and "set_aside" not in result
    after = os.stat(gap.occupied / "old file")
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (
        gap.occupied_before.st_ino, gap.occupied_before.st_mtime_ns, gap.occupied_before.st_mode)
    assert (gap.occupied / "old file").read_text() == "the old directory"
    assert not [n for n in os.listdir(gap.root) if ".pgx-aside-" in n]


def test_an_accepted_gap_ends_latest_there_with_exactly_the_rows_before_it(gap):
    result = gap.results["latest_accepted"]
    assert not result.get("failed"), result.get("msg")
    assert result["promoted"] is True
    assert gap.rows["latest_accepted"] == BEFORE | BATCH_A
    assert result["ended_because"] == f"gap at segment {gap.missing}"
    assert result["ended_at_lsn"] == result["reached_lsn"] and result["ended_at_time"] == result["reached_time"]
    assert result["wal_gap_check"] == {"checked": True, "timeline": 1, "gap": gap.missing,
                                       "newest_segment": gap.newest, "allowed": True}


def test_a_time_target_past_an_accepted_gap_fails_without_claiming_all_was_replayed(gap):
    result = gap.results["time_accepted"]
    assert result.get("failed"), result
    assert result["msg"].startswith("The recovery target is past a gap in the archived WAL: recovery ended at the "
                                    f"missing segment {gap.missing} (allow_wal_gap accepted ending there)"), result["msg"]
    assert "replayed all of it" not in result["msg"]
    assert result["ended_because"] == f"gap at segment {gap.missing}"


def test_a_custom_restore_command_is_not_listed_and_the_result_says_so(gap):
    result = gap.results["restore_command"]
    assert not result.get("failed"), result.get("msg")
    assert result["wal_gap_check"]["checked"] is False and "restore_command" in result["wal_gap_check"]["reason"]
    assert result["ended_because"].startswith("end of the WAL recovery found (not listed for gaps: a custom")
    assert gap.rows["restore_command"] == BEFORE | BATCH_A, "recovery itself stops at the gap"


def test_the_live_server_and_its_archive_are_untouched(gap):
    assert gap.live.value("SELECT count(*) FROM t", dbname=gap.db) == len(BEFORE | BATCH_A | BATCH_B | BATCH_C)
    assert gap.missing in os.listdir(gap.live.archive_dir)
