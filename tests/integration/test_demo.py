"""make demo, as a new user runs it: it says what became of the backup whose path it printed.

Without --keep the demo's directory goes, backup included, and the last line says so; with --keep it
stays, and the last line names the backup kept and the directory to remove.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner import REPO

pytestmark = pytest.mark.slow


def demo(*args):
    proc = subprocess.run([sys.executable, "-m", "tests.demo", *args], cwd=str(REPO), capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    backup = Path(re.search(r"^Backup: +(\S+)$", proc.stdout, re.M).group(1))
    return proc.stdout.rstrip().splitlines()[-1], backup


def test_the_demo_says_it_removed_the_backup_it_printed():
    last, backup = demo()
    assert not backup.exists()
    workdir = backup.parent.parent
    assert last.startswith(f"Removed:  {workdir} and the backup {backup} in it"), last
    assert "--keep" in last


def test_the_demo_with_keep_names_the_backup_it_kept():
    last, backup = demo("--keep")
    workdir = backup.parent.parent
    try:
        assert (backup / "backup.json").is_file()
        assert last.startswith(f"Kept:     the backup {backup}, in {workdir}"), last
        assert f"remove {workdir} when done" in last
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
