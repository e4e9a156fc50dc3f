"""Running the ecosystem's tools and showing their output when they fail."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "tests" / "output" / "ecosystem"
BIN = Path(sys.executable).parent


def run(argv, cwd=None, env=None, timeout=1200):
    """Run a tool; return the completed process (callers assert on it with its output)."""
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def copy_working_tree(target):
    """The files git knows of (committed or not, ignored ones left out) copied under ``target``, in a git
    repository of its own: what a fresh clone of this working tree holds."""
    listed = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO)
    assert listed.returncode == 0, shown(listed)
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    proc = run(["git", "init", "-q", str(target)])
    assert proc.returncode == 0, shown(proc)
    return target


def shown(proc):
    return f"exit {proc.returncode}\n{proc.stdout[-8000:]}\n{proc.stderr[-8000:]}"
