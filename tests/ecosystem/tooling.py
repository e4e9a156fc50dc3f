"""Running the ecosystem's tools and showing their output when they fail."""

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


def shown(proc):
    return f"exit {proc.returncode}\n{proc.stdout[-8000:]}\n{proc.stderr[-8000:]}"
