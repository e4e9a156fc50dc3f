"""What a module's Python process pays before it does any work: interpreter, imports from a zip, psycopg2.

    .venv/bin/python benchmarks/import_times.py            # every module of the collection, 5 repetitions

AnsiballZ runs a module by importing it and the module_utils it needs from a
zip written into a temporary directory on the database host, so nothing is
ever cached as byte code there: every module call compiles the source of
everything it imports. This measures, each in a fresh interpreter (the test
virtual environment's, as the benchmark's role runs use), median of the
repetitions:

- ``python -c pass``: the interpreter alone;
- ``import psycopg2`` from site-packages (byte code cached, as on a host);
- ``import ansible.module_utils.basic`` and each module of plugins/modules,
  from a zip of their sources (no byte code): what AnsiballZ pays, without the
  module's work and without unpacking the payload;
- the same imports from site-packages and the collection's directory, with
  byte code cached: what they would cost if they were compiled once.

The zip holds ansible/module_utils and this collection's plugins, like a
payload (a superset of one: only what is imported counts). It is written into
a temporary directory and removed at the end.
"""

import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import conftest  # noqa: E402  links the collection into tests/output

REPS = 5
TIMER = "import time, sys; t = time.perf_counter(); {stmt}; sys.stdout.write(str(time.perf_counter() - t))"


def timed(stmt, path=None):
    """Median seconds of ``stmt`` in fresh interpreters, and of the whole process."""
    inner, outer = [], []
    prefix = f"import sys; sys.path.insert(0, {str(path)!r}); " if path else ""
    for _rep in range(REPS):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", prefix + TIMER.format(stmt=stmt)], capture_output=True,
                             text=True, check=True).stdout
        outer.append(time.perf_counter() - started)
        inner.append(float(out))
    return statistics.median(inner), statistics.median(outer)


def build_zip(path):
    """ansible/module_utils and the collection's plugins, sources only, as AnsiballZ ships them."""
    import ansible
    ansible_root = Path(ansible.__file__).parent
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ansible/__init__.py", "")
        for source in (ansible_root / "module_utils").rglob("*.py"):
            zf.write(source, "ansible/" + str(source.relative_to(ansible_root)))
        base = "ansible_collections/pgexclusive/backup/"
        for name in ("ansible_collections/__init__.py", "ansible_collections/pgexclusive/__init__.py",
                     base + "__init__.py", base + "plugins/__init__.py"):
            zf.writestr(name, "")
        for sub in ("module_utils", "modules"):
            zf.writestr(base + f"plugins/{sub}/__init__.py", "")
            for source in (REPO / "plugins" / sub).glob("*.py"):
                zf.write(source, base + f"plugins/{sub}/{source.name}")


def main():
    modules = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    with tempfile.TemporaryDirectory(prefix="pgx-imports-") as tmp:
        payload = Path(tmp) / "payload.zip"
        build_zip(payload)
        rows = [("python -c pass", *timed("pass"), None)]
        rows.append(("import psycopg2 (byte code cached)", *timed("import psycopg2"), None))
        basic = "import ansible.module_utils.basic"
        rows.append((basic, *timed(basic, payload), timed(basic)[0]))
        for module in modules:
            stmt = f"import ansible_collections.pgexclusive.backup.plugins.modules.{module}"
            rows.append((f"import {module}", *timed(stmt, payload), timed(stmt, conftest.COLLECTIONS_PATH)[0]))
    print(f"Python {sys.version.split()[0]}, {REPS} repetitions, medians; from a zip: sources only, as AnsiballZ "
          "ships them\n")
    print("| what | the statement s (imports from the zip) | whole process s | the same with byte code cached s |")
    print("| --- | ---: | ---: | ---: |")
    for name, inner, outer, cached in rows:
        print(f"| {name} | {inner:.3f} | {outer:.3f} | {'–' if cached is None else f'{cached:.3f}'} |")


if __name__ == "__main__":
    main()
