"""The benchmark harness still works: benchmarks/run.py --quick end to end on small PG 15 clusters.

Proves the harness, not the speed: every variant must run, every role run must
leave a complete backup (the harness checks backup.json) and must have been
seen in backup mode, and the report must hold the tables and the targets. The
fleet benchmark runs on its own fleet of 1 and 2 database hosts over SSH.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.fixtures import SELECTED

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(15 not in SELECTED, reason="the benchmarks run on PostgreSQL 15")]


def test_quick_benchmark_runs_every_variant(scratch):
    # scratch, not tmp_path: pytest sessions running at the same time make /tmp/pytest-of-root 0700
    # again, and the postgres OS user must reach the sockets under it.
    out, raw = scratch / "benchmarks.md", scratch / "samples.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--bench", "local", "--quick",
                           "--out", str(out), "--json", str(raw), "--dir", str(scratch / "work")],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    samples = json.loads(raw.read_text())["local"]["samples"]
    variants = {(s["dataset"], s["variant"]) for s in samples}
    for dataset in ("pgbench", "random"):
        for variant in ("raw tar", "pg_basebackup plain", "role tar", "role copy, parallel 2"):
            assert (dataset, variant) in variants, (dataset, variant)
    assert ("empty", "role tar") in variants and any(d == "all" for d, _v in variants)
    for sample in samples:
        assert all(seconds > 0 for seconds in sample["seconds"]), sample
        if sample["variant"].startswith("role "):
            assert all(mode > 0 for mode in sample["backup_mode"]), f"never saw backup mode: {sample}"
    report = out.read_text()
    for heading in ("## Machine", "## pgbench", "## random", "## Targets"):
        assert heading in report
    assert not list((scratch / "work").glob("out/*")), "every backup written is removed again"


# Its own fleet next to the session's: on the fleet tests' worker, so that the two never build at once.
@pytest.mark.xdist_group("fleet")
def test_quick_fleet_benchmark_backs_up_every_host_count_and_keeps_the_rest_of_the_report(scratch):
    out, raw = scratch / "benchmarks.md", scratch / "samples.json"
    out.write_text("# Benchmarks\n\n## Machine\n\nan earlier local run\n\n## Notes\n\nearlier notes\n")
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "run.py"), "--bench", "fleet", "--quick",
                             "--out", str(out), "--json", str(raw), "--dir", str(scratch / "work")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    fleet = json.loads(raw.read_text())["fleet"]
    assert "local" not in json.loads(raw.read_text())
    assert [run["hosts"] for run in fleet["runs"]] == [1, 2]
    for run in fleet["runs"]:
        assert run["seconds"] > 0 and run["controller_cpu"] > 0
        assert sorted(run["backup_mode"]) == [f"db{i}" for i in range(1, run["hosts"] + 1)], run
        assert all(seconds > 0 for seconds in run["backup_mode"].values()), run
    report = out.read_text()
    # --quick leaves the notes out; the earlier local part stays, the fleet's section follows it.
    assert report.startswith("# Benchmarks\n\n## Machine\n\nan earlier local run\n\n## Scale: fleet over SSH\n")
    assert "## Notes" not in report
    for row in ("| 1 | ", "| 2 | "):
        assert row in report
    assert not list((scratch / "work").glob("out/*")), "every backup written is removed again"
    assert proc.pid not in [fleet_owner(state) for state in Path("/run/pgx-fleet").glob("*.json")], \
        "the benchmark left its fleet behind"


def fleet_owner(state):
    """The PID that owns a fleet, from its state file (tests/fleet/netns.py), which other sessions may be changing."""
    try:
        return json.loads(state.read_text()).get("owner")
    except (OSError, ValueError):
        return None
