"""restore_layout: what a backup says of itself, and how it is laid out, with the backup taken as untrusted input."""

import os
import re
import shutil
import subprocess

import pytest

from testbed import provide
from testbed.osuser import as_postgres, chown_postgres, open_to_postgres

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_layout as layout
from ansible_collections.pgexclusive.backup.plugins.module_utils import restore_layout as rl
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

COMPRESSIONS = [c if c != "zstd" or shutil.which("zstd") else pytest.param(c, marks=pytest.mark.skip("no zstd"))
                for c in layout.COMPRESSIONS]


@pytest.fixture(scope="module")
def initdb(tmp_path_factory):
    """A real data directory of a test bed major (initdb, never started) and the identifier pg_controldata reads."""
    inst = provide(15)
    root = tmp_path_factory.mktemp("initdb")
    open_to_postgres(root)
    chown_postgres(root)
    data = root / "data"
    subprocess.run(as_postgres([inst.tool("initdb"), "-D", data, "-U", "postgres", "--no-sync", "--locale=C"]),
                   check=True, capture_output=True)
    out = subprocess.run([inst.tool("pg_controldata"), str(data)], check=True, capture_output=True, text=True,
                         env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}).stdout
    return data, re.search(r"Database system identifier:\s+(\d+)", out).group(1)


def test_system_identifier_of_a_plain_copy(initdb, tmp_path):
    data, identifier = initdb
    shutil.copytree(str(data), str(tmp_path / "data"), symlinks=True)
    assert rl.copy_system_identifier(str(tmp_path)) == identifier


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_system_identifier_of_a_tar_copy_is_read_from_the_stream(initdb, tmp_path, compression):
    data, identifier = initdb
    backup = tmp_path / "backup"
    backup.mkdir()
    subprocess.run(["tar", "-C", str(data), "-cf", str(backup / layout.tar_name("base", compression))]
                   + layout.TAR_COMPRESS_ARG[compression] + ["."], check=True)
    assert rl.copy_system_identifier(str(backup)) == identifier
    assert sorted(os.listdir(str(backup))) == [layout.tar_name("base", compression)], "nothing extracted"


def test_system_identifier_is_not_read_through_a_link(initdb, tmp_path):
    """data/global a link to another cluster's: the backup's own pg_control is what tells, or nothing."""
    data, _identifier = initdb
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "global").symlink_to(data / "global")
    with pytest.raises(BackupError, match="holds no global/pg_control"):
        rl.copy_system_identifier(str(tmp_path))


def test_no_pg_control_in_base_tar(tmp_path):
    (tmp_path / "PG_VERSION").write_text("15\n")
    subprocess.run(["tar", "-C", str(tmp_path), "-cf", str(tmp_path / "base.tar"), "PG_VERSION"], check=True)
    with pytest.raises(BackupError, match="holds no global/pg_control"):
        rl.copy_system_identifier(str(tmp_path))
