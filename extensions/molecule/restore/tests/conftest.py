import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))

from verifier_fixtures import backups, in_backup, rows, state  # noqa: E402

# pytest finds fixtures by name in the conftest's namespace: these are used.
__all__ = ["backups", "in_backup", "rows", "state"]
