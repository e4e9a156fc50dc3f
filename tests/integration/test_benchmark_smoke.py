"""The benchmark harness still works: benchmarks/run.py --quick end to end on small PG 15 clusters.

Proves the harness, not the speed: every variant must run, every role run must
leave a complete backup (the harness checks backup.json) and must have been
seen in backup mode, and the report must hold the tables and the targets.
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
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--out", str(out),
                           "--json", str(raw), "--dir", str(scratch / "work")],
                          capture_output=True, text=True, timeout=480, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    samples = json.loads(raw.read_text())["samples"]
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
