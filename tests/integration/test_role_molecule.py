"""The Molecule scenarios under extensions/molecule, run as CI runs them.

Each scenario starts its own test bed server (create), runs the role
(converge; the restore scenario then restores the backup with
playbooks/restore.yml), checks and restores the result with testinfra
(verify), and stops the servers by their PIDs (destroy). A scenario runs
when its major is selected (PGX_MAJORS); PGX_MOLECULE=0 leaves them all out.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
SELECTED = [int(m) for m in os.environ.get("PGX_MAJORS", "").split(",") if m.strip()] or [14, 15, 16, 18]
SCENARIOS = {
    "default": 15,
    "native": 14,
    "rsync_tablespace": 15,
    "failed_copy": 15,
    "other_backup": 15,
    "broken_archiving": 15,
    "restore": 15,
}


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PGX_MOLECULE") == "0", reason="PGX_MOLECULE=0")
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_molecule_scenario(scenario):
    if SCENARIOS[scenario] not in SELECTED:
        pytest.skip(f"PostgreSQL {SCENARIOS[scenario]} is not in PGX_MAJORS")
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}", NO_COLOR="1", ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.environ["ANSIBLE_COLLECTIONS_PATH"])
    proc = subprocess.run([str(bindir / "molecule"), "test", "-s", scenario], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]
