"""restore_layout: what a backup says of itself, and how it is laid out, with the backup taken as untrusted input."""

import gzip
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile

import pytest

from testbed import provide
from testbed.osuser import as_postgres, chown_postgres, open_to_postgres

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_layout as layout
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import layout as rl
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


# -- the lay-out takes a backup as untrusted input -------------------------------------------------------------

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="ownership is handed over by root")


@pytest.fixture
def victim(tmp_path):
    """A root-only 0600 file and a root-only directory outside the target, as /etc/shadow and /root stand for."""
    secret = tmp_path / "victim"
    secret.mkdir(mode=0o700)
    shadow = secret / "shadow"
    shadow.write_text("root:$6$secret\n")
    shadow.chmod(0o600)
    return shadow


def snapshot(path):
    st = os.lstat(str(path))
    return (st.st_ino, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_nlink,
            path.read_bytes() if path.is_file() else sorted(os.listdir(str(path))))


def member(name, kind=tarfile.REGTYPE, data=b"", linkname="", mode=0o600):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, mode, 1700000000
    info.uid = info.gid = 0
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_archive(path, members, compression):
    """``members`` as a tar at ``path`` + the suffix of ``compression``, built by hand (no filter on the way in)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, content in members:
            tar.addfile(info, content)
    name = str(path) + layout.TAR_SUFFIX[compression]
    if compression == "zstd":
        subprocess.run(["zstd", "-q", "-o", name], input=raw.getvalue(), check=True)
    else:
        with (gzip.open if compression == "gzip" else open)(name, "wb") as out:
            out.write(raw.getvalue())
    return name


def base():
    return [member("./", tarfile.DIRTYPE, mode=0o700), member("./PG_VERSION", data=b"15\n"),
            member("./base/", tarfile.DIRTYPE, mode=0o700), member("./base/1", data=b"pages")]


def hostile_cases(victim):
    return {
        "hard link to a file outside": ([member("./stolen", tarfile.LNKTYPE, linkname=str(victim))], "./stolen",
                                        "a hard link to %s, which is no regular file of the archive before it" % victim),
        "hard link climbing out": ([member("./stolen", tarfile.LNKTYPE, linkname="../victim/shadow")], "./stolen",
                                   "which is no regular file of the archive before it"),
        "hard link to a later member": ([member("./early", tarfile.LNKTYPE, linkname="./late"), member("./late", data=b"x")],
                                        "./early", "which is no regular file of the archive before it"),
        "symbolic link out": ([member("./log", tarfile.SYMTYPE, linkname=str(victim.parent))], "./log",
                              "a symbolic link to %s, absolute or climbing" % victim.parent),
        "symbolic link climbing": ([member("./base/up", tarfile.SYMTYPE, linkname="../../victim")], "./base/up",
                                   "absolute or climbing with '..'"),
        "absolute name": ([member(str(victim.parent / "planted"), data=b"x")], str(victim.parent / "planted"),
                          "an absolute name or one with '..'"),
        "dot-dot name": ([member("./base/../../victim/planted", data=b"x")], "./base/../../victim/planted",
                         "an absolute name or one with '..'"),
        "character device": ([member("./null", tarfile.CHRTYPE, mode=0o666)], "./null", "a character device"),
        "block device": ([member("./disk", tarfile.BLKTYPE, mode=0o666)], "./disk", "a block device"),
        "FIFO": ([member("./fifo", tarfile.FIFOTYPE, mode=0o666)], "./fifo", "a FIFO"),
        "member through a linked directory": (
            [member("./pg_tblspc/", tarfile.DIRTYPE), member("./pg_tblspc/16384", tarfile.SYMTYPE, linkname=str(victim.parent)),
             member("./pg_tblspc/16384/planted", data=b"x")],
            "./pg_tblspc/16384/planted", "it lies under pg_tblspc/16384, a symbolic link of the archive"),
        "a name twice": ([member("./PG_VERSION", data=b"16\n")], "./PG_VERSION", "it is in the archive twice"),
    }


CASES = ["hard link to a file outside", "hard link climbing out", "hard link to a later member", "symbolic link out",
         "symbolic link climbing", "absolute name", "dot-dot name", "character device", "block device", "FIFO",
         "member through a linked directory", "a name twice"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("case", CASES)
def test_extract_refuses_what_no_data_directory_holds(tmp_path, victim, compression, case):
    members, name, why = hostile_cases(victim)[case]
    before = snapshot(victim), snapshot(victim.parent)
    archive = write_archive(tmp_path / "base", base() + members, compression)
    target = tmp_path / "target"
    with pytest.raises(BackupError) as exc:
        rl.extract(archive, str(target))
    assert exc.value.msg.startswith("The backup's %s holds %s, which the restore refuses: " % (archive, name))
    assert why in exc.value.msg
    assert exc.value.facts == {"member": name, "archive": archive}
    assert (snapshot(victim), snapshot(victim.parent)) == before
    refused = os.path.basename(name.rstrip("/"))
    for root, dirs, files in os.walk(str(tmp_path)):
        for entry in dirs + files:
            mode = os.lstat(os.path.join(root, entry)).st_mode
            assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)), os.path.join(root, entry)
    assert refused == "PG_VERSION" or not os.path.lexists(str(target / refused)), "nothing of the member is written"
    assert (target / "base" / "1").read_bytes() == b"pages", "the members before it were extracted"


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_extract_keeps_what_a_data_directory_holds(tmp_path, compression):
    """Links inside, a hard link to an earlier member, pg_wal and pg_tblspc/<oid> linking out (relinked later);
    never the archive's owner, setuid or world bits."""
    members = base() + [
        member("./pg_tblspc/", tarfile.DIRTYPE), member("./pg_tblspc/16384", tarfile.SYMTYPE, linkname="/srv/live-ts"),
        member("./pg_wal", tarfile.SYMTYPE, linkname="/srv/live-wal"),
        member("./base/again", tarfile.LNKTYPE, linkname="./base/1"),
        member("./global/pg_control", data=b"12345678", mode=0o4777),
        member("./current", tarfile.SYMTYPE, linkname="base/1"),
    ]
    archive = write_archive(tmp_path / "base", members, compression)
    target = tmp_path / "data"
    rl.extract(archive, str(target))
    assert os.readlink(str(target / "pg_tblspc" / "16384")) == "/srv/live-ts"
    assert os.readlink(str(target / "pg_wal")) == "/srv/live-wal"
    assert os.readlink(str(target / "current")) == "base/1"
    assert os.stat(str(target / "base" / "again")).st_ino == os.stat(str(target / "base" / "1")).st_ino
    control = os.stat(str(target / "global" / "pg_control"))
    assert stat.S_IMODE(control.st_mode) == 0o750 and control.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(str(target / "global")).st_mode) == 0o700, "a parent the archive never named: 0700"
    assert control.st_mtime == 1700000000


@pytest.mark.parametrize("name", ["16384", "pg_wal"])
def test_only_base_tar_may_link_out(tmp_path, name):
    archive = write_archive(tmp_path / name, [member("./pg_tblspc/", tarfile.DIRTYPE),
                                              member("./pg_tblspc/16384", tarfile.SYMTYPE, linkname="/srv/x")], "none")
    with pytest.raises(BackupError, match="holds ./pg_tblspc/16384, which the restore refuses: a symbolic link"):
        rl.extract(archive, str(tmp_path / "target"))


@pytest.mark.parametrize("cut, error", [("in a member", "unexpected end of data"), ("at a block boundary", "cut short")])
def test_a_tar_cut_short_fails_the_extraction(tmp_path, cut, error):
    """tarfile ends quietly at a missing header: a restore must not lay out part of a copy as the copy."""
    archive = write_archive(tmp_path / "base", base() + [member("./big", data=os.urandom(20000))], "none")
    with open(archive, "rb") as handle:
        content = handle.read()
    end = -(-len(content.rstrip(b"\0")) // 512) * 512
    with open(archive, "wb") as handle:
        handle.write(content[:10240] if cut == "in a member" else content[:end])
    with pytest.raises(BackupError, match="Could not extract .*base.tar: .*" + error):
        rl.extract(archive, str(tmp_path / "target"))


def plain(tmp_path):
    backup = tmp_path / "backup"
    (backup / "data" / "pg_tblspc").mkdir(parents=True)
    (backup / "data" / "PG_VERSION").write_text("15\n")
    (backup / "data" / "pg_tblspc" / "16384").symlink_to("../../tablespaces/16384")
    (backup / "tablespaces" / "16384" / "PG_15_1").mkdir(parents=True)
    (backup / "tablespaces" / "16384" / "PG_15_1" / "t").write_text("pages")
    return backup


def test_copy_plain_keeps_links_as_links(tmp_path):
    backup = plain(tmp_path)
    rl.copy_plain(str(backup), ["data"], str(tmp_path / "data"))
    rl.copy_plain(str(backup), ["tablespaces", "16384"], str(tmp_path / "ts"))
    assert os.readlink(str(tmp_path / "data" / "pg_tblspc" / "16384")) == "../../tablespaces/16384"
    assert (tmp_path / "ts" / "PG_15_1" / "t").read_text() == "pages"


@pytest.mark.parametrize("where", [["tablespaces", "16384"], ["tablespaces"], ["data"]])
def test_copy_plain_refuses_a_link_where_a_directory_is_expected(tmp_path, victim, where):
    """tablespaces/<oid> (or tablespaces/, data/) a link to a root-only directory: refused, naming it; nothing read."""
    backup = plain(tmp_path)
    linked = backup.joinpath(*where)
    shutil.rmtree(str(linked))
    linked.symlink_to(victim.parent)
    before = snapshot(victim)
    with pytest.raises(BackupError) as exc:
        rl.copy_plain(str(backup), ["tablespaces", "16384"] if where != ["data"] else ["data"], str(tmp_path / "out"))
    assert exc.value.msg == ("%s in the backup is not a directory but a symbolic link or a file; the restore follows no "
                             "link of a backup." % linked)
    assert not (tmp_path / "out" / "shadow").exists() and snapshot(victim) == before


@pytest.mark.parametrize("planted", ["link out", "FIFO", "climbing link"])
def test_copy_plain_refuses_what_no_data_directory_holds(tmp_path, victim, planted):
    backup = plain(tmp_path)
    name = backup / "data" / "planted"
    if planted == "FIFO":
        os.mkfifo(str(name))
    else:
        name.symlink_to(victim if planted == "link out" else "../../victim/shadow")
    with pytest.raises(BackupError, match="holds data/planted, which the restore refuses"):
        rl.copy_plain(str(backup), ["data"], str(tmp_path / "out"))
    assert not os.path.lexists(str(tmp_path / "out" / "planted"))


@pytest.fixture
def nobody():
    return 65534, 65534


@ROOT_ONLY
def test_chown_tree_hands_over_the_tree_and_nothing_else(tmp_path, victim, nobody):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("x")
    (tree / "sub" / "link").symlink_to(victim)
    (tree / "dirlink").symlink_to(victim.parent)
    (tree / "a").write_text("y")
    os.link(str(tree / "a"), str(tree / "sub" / "b"))
    before = snapshot(victim), snapshot(victim.parent)
    rl.chown_tree(str(tree), *nobody)
    for path in (tree, tree / "sub", tree / "sub" / "f", tree / "sub" / "link", tree / "dirlink", tree / "a"):
        assert (os.lstat(str(path)).st_uid, os.lstat(str(path)).st_gid) == nobody, path
    assert (snapshot(victim), snapshot(victim.parent)) == before


@ROOT_ONLY
def test_chown_tree_refuses_a_hard_link_from_outside(tmp_path, victim, nobody):
    """A hard link to the victim planted in the tree: handing it over would hand over the victim."""
    tree = tmp_path / "tree"
    tree.mkdir()
    os.link(str(victim), str(tree / "planted"))
    before = snapshot(victim)
    with pytest.raises(BackupError, match="planted has 2 hard links, 1 of them under"):
        rl.chown_tree(str(tree), *nobody)
    assert snapshot(victim) == before


@ROOT_ONLY
def test_chown_tree_refuses_a_fifo_and_a_linked_top(tmp_path, victim, nobody):
    tree = tmp_path / "tree"
    tree.mkdir()
    os.mkfifo(str(tree / "fifo"))
    with pytest.raises(BackupError, match="fifo is a FIFO, which the restore never creates"):
        rl.chown_tree(str(tree), *nobody)
    (tmp_path / "top").symlink_to(victim.parent)
    before = snapshot(victim.parent)
    with pytest.raises(BackupError, match="Could not give .*top to its owner"):
        rl.chown_tree(str(tmp_path / "top"), *nobody)
    assert snapshot(victim.parent) == before
