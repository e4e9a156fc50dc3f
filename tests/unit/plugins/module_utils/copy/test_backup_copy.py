import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_layout as layout
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import backup_copy as c
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import io as cio
from ansible_collections.pgexclusive.backup.plugins.module_utils import repository as rp
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import EMPTY_DIRS
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.copy.live_data_directory import (
    LABEL, SYSTEM_IDENTIFIER, NOBODY, make_data_dir, swap_for_link, elsewhere)


def test_label_checked_and_fixed():
    assert c.check_label(LABEL, "run-1")["start_wal_file"] == "000000010000000000000002"
    with pytest.raises(BackupError, match="not this run's"):
        c.check_label(LABEL, "run-2")
    assert "BACKUP METHOD: streamed" in c.label_for_copy(LABEL, True)
    assert c.label_for_copy(LABEL, False) == LABEL


def test_restore_hint_only_asks_for_the_fix_on_15_plus():
    assert "BACKUP METHOD: streamed" in c.restore_hint(True)
    assert "as it is" in c.restore_hint(False)


def test_plain_copy_layout(tmp_path):
    data = make_data_dir(tmp_path)
    out = tmp_path / "backup"
    result = c.Copier(str(data), str(out), "run-1", method="copy", fix_label=True).copy()
    copy = out / "data"
    assert (copy / "PG_VERSION").exists() and (copy / "base/1/1259").exists()
    assert (copy / "pg_wal").is_dir() and not any((copy / "pg_wal").iterdir())
    assert (copy / "pg_stat_tmp").is_dir() and not any((copy / "pg_stat_tmp").iterdir())
    assert not (copy / "postmaster.pid").exists() and not (copy / "base/pgsql_tmp").exists()
    assert "BACKUP METHOD: streamed" in (copy / "backup_label").read_text()
    assert "pg_start_backup" in (data / "backup_label").read_text(), "the live label is never changed"
    assert (copy / "tablespace_map").exists()
    link = copy / "pg_tblspc/16384"
    assert link.is_symlink() and os.readlink(str(link)) == "../../tablespaces/16384"
    assert (link / "PG_15_1/f").read_text() == "ts"
    assert result["tablespaces"] == [{"oid": 16384, "name": None, "location": str(tmp_path / "ts"), "path": str(tmp_path / "ts")}]
    assert result["label_fixed"] is True and not (out / ".staging").exists()


def test_copy_refuses_another_label(tmp_path):
    data = make_data_dir(tmp_path)
    with pytest.raises(BackupError, match="not this run's"):
        c.Copier(str(data), str(tmp_path / "b"), "other", method="copy").copy()


def test_copy_refuses_without_backup_label(tmp_path):
    data = make_data_dir(tmp_path)
    (data / "backup_label").unlink()
    with pytest.raises(BackupError, match="no exclusive backup is in progress"):
        c.Copier(str(data), str(tmp_path / "b"), "run-1", method="tar").copy()


def test_tar_tool_failure_is_a_failure_but_exit_1_is_a_warning(tmp_path):
    data = make_data_dir(tmp_path)
    calls = []

    def fake(rc):
        def run(argv, env=None, pass_fds=()):
            calls.append(argv)
            with open(argv[argv.index("-cf") + 1], "w") as out:
                out.write("x" * len(calls))
            return rc, "", "tar: file changed as we read it"
        return run
    result = c.Copier(str(data), str(tmp_path / "b"), "run-1", run=fake(1)).copy()
    assert result["warnings"] and len(calls) == 2   # base + one tablespace
    assert result["output_bytes"] == dict(zip(result["outputs"], (1, 2)))
    with pytest.raises(BackupError, match="tar exited with 2"):
        c.Copier(str(data), str(tmp_path / "b2"), "run-1", run=fake(2)).copy()


def test_command_method_gets_environment_and_restorable_label(tmp_path):
    data = make_data_dir(tmp_path)
    seen = {}

    def run(argv, env=None, pass_fds=()):
        seen.update(env)
        return 0, "", ""
    out = tmp_path / "b"
    result = c.Copier(str(data), str(out), "run-1", method="command", command="snap", fix_label=True, run=run).copy()
    assert seen["PGX_DATA_DIRECTORY"] == str(data) and seen["PGX_LABEL"] == "run-1"
    assert seen["PGX_TABLESPACES"] == "16384=%s" % (tmp_path / "ts")
    assert "streamed" in (out / layout.RESTORABLE_LABEL_FILE).read_text()
    assert "BACKUP METHOD: streamed" in result["restore_hint"]


def test_options_checked():
    with pytest.raises(BackupError):
        c.Copier("/d", "/b", "l", method="copy", compression="gzip")
    with pytest.raises(BackupError):
        c.Copier("/d", "/b", "l", method="command")
    with pytest.raises(BackupError):
        c.Copier("/d", "/b", "l", method="ftp")


@pytest.mark.skipif(not __import__("shutil").which("rsync"), reason="rsync is not installed")
def test_rsync_to_a_target_creates_label_directory_and_keeps_links(tmp_path):
    data = make_data_dir(tmp_path)
    target = tmp_path / "remote"
    result = c.Copier(str(data), str(tmp_path / "local" / "run-1"), "run-1", method="rsync",
                      fix_label=True, repository=str(target)).copy()
    copy = target / "run-1" / "data"
    assert "BACKUP METHOD: streamed" in (copy / "backup_label").read_text()
    assert not (copy / "postmaster.pid").exists() and not any((copy / "pg_wal").iterdir())
    assert os.readlink(copy / "pg_tblspc/16384") == "../../tablespaces/16384", "the copy's link, not the live one"
    assert (copy / "pg_tblspc/16384/PG_15_1/f").exists()
    assert (target / "run-1" / "tablespaces" / "16384" / "PG_15_1" / "f").exists()
    assert not result["warnings"]


def tree(root):
    return {str(p.relative_to(root)): (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in root.rglob("*")}


def test_parallel_copy_writes_the_same_tree_as_one_stream(tmp_path):
    data = make_data_dir(tmp_path)
    for i in range(40):
        (data / "base/1" / str(16384 + i)).write_bytes(os.urandom(1000 * (i + 1)))
    one = c.Copier(str(data), str(tmp_path / "one"), "run-1", method="copy", fix_label=True).copy()
    many = c.Copier(str(data), str(tmp_path / "many"), "run-1", method="copy", fix_label=True, parallel=3).copy()
    assert tree(tmp_path / "one") == tree(tmp_path / "many")
    assert one["bytes"] == many["bytes"]
    assert "BACKUP METHOD: streamed" in (tmp_path / "many/data/backup_label").read_text()


@pytest.mark.parametrize("parallel", [1, 3])
def test_gzip_is_a_gzip_tar_reads(tmp_path, parallel):
    import subprocess
    data = make_data_dir(tmp_path)
    (data / "base/1/big").write_bytes(os.urandom(300000) + b"x" * 300000)
    out = tmp_path / "backup"
    result = c.Copier(str(data), str(out), "run-1", method="tar", compression="gzip", fix_label=True,
                      parallel=parallel).copy()
    assert result["outputs"] == ["base.tar.gz", "16384.tar.gz"]
    listed = subprocess.run(["tar", "-tzf", str(out / "base.tar.gz")], capture_output=True, text=True, check=True)
    assert "./base/1/big" in listed.stdout.split() and "backup_label" in listed.stdout.split()
    assert "./postmaster.pid" not in listed.stdout.split()
    extracted = tmp_path / "x"
    extracted.mkdir()
    subprocess.run(["tar", "-xzf", str(out / "base.tar.gz"), "-C", str(extracted)], check=True)
    assert (extracted / "base/1/big").read_bytes() == (data / "base/1/big").read_bytes()
    assert "BACKUP METHOD: streamed" in (extracted / "backup_label").read_text()


def copied_data_dir(out, method, tmp_path):
    """The copy as a directory: data/ as it is, a tar backup extracted."""
    if method != "tar":
        return out / "data"
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "-xf", str(out / "base.tar"), "-C", str(extracted)], check=True)
    return extracted


@pytest.mark.parametrize("method", ["tar", "rsync", "copy"])
def test_pg_wal_in_the_copy_is_a_real_empty_directory_even_when_the_live_one_is_a_link(tmp_path, method):
    data = make_data_dir(tmp_path, waldir=True)
    shutil.rmtree(str(data / "pg_stat_tmp"))
    os.symlink(str(tmp_path / "waldisk"), str(data / "pg_stat_tmp"))   # a stats directory on tmpfs, say
    out = tmp_path / "backup"
    c.Copier(str(data), str(out), "run-1", method=method, fix_label=True).copy()
    if method == "tar":
        listing = subprocess.run(["tar", "-tvf", str(out / "base.tar")], capture_output=True, text=True,
                                 check=True).stdout.splitlines()
        entries = [line for line in listing if line.split()[5].strip("./").startswith("pg_wal")]
        assert len(entries) == 1 and entries[0].startswith("d") and entries[0].split()[5] == "pg_wal/", entries
    copy = copied_data_dir(out, method, tmp_path)
    for name in EMPTY_DIRS:
        st = os.lstat(str(copy / name))
        assert stat.S_ISDIR(st.st_mode) and not any((copy / name).iterdir()), name
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.stat(str(data)).st_uid, name
    assert "BACKUP METHOD: streamed" in (copy / "backup_label").read_text()
    assert not (copy / "postmaster.pid").exists() and (copy / "base/1/1259").exists()
    (copy / "pg_wal/000000010000000000000009").write_text("restore check")
    assert sorted(os.listdir(str(tmp_path / "waldisk"))) == ["000000010000000000000002", "archive_status"]


def test_rsync_target_gets_a_real_empty_pg_wal_and_a_second_run_keeps_it_so(tmp_path):
    data = make_data_dir(tmp_path, waldir=True)
    target = tmp_path / "remote"
    for _run in range(2):
        c.Copier(str(data), str(tmp_path / "local" / "run-1"), "run-1", method="rsync", fix_label=True,
                 repository=str(target)).copy()
        pg_wal = target / "run-1" / "data" / "pg_wal"
        assert not pg_wal.is_symlink() and pg_wal.is_dir() and not any(pg_wal.iterdir())
        (pg_wal / "000000010000000000000009").write_text("include_wal")
    assert stat.S_IMODE(os.stat(str(target / "run-1" / "data")).st_mode) == stat.S_IMODE(os.stat(str(data)).st_mode)


def test_copy_method_refuses_an_existing_copy(tmp_path):
    data = make_data_dir(tmp_path)
    (tmp_path / "b/data").mkdir(parents=True)
    with pytest.raises(BackupError, match="already exist"):
        c.Copier(str(data), str(tmp_path / "b"), "run-1", method="copy").copy()


def test_tablespace_links_are_resolved_once(tmp_path):
    data = make_data_dir(tmp_path)
    os.symlink(str(tmp_path / "ts"), str(tmp_path / "ts-link"))
    os.unlink(str(data / "pg_tblspc/16384"))
    os.symlink("../../ts-link", str(data / "pg_tblspc/16384"))
    (data / "pg_tblspc/16390").mkdir()   # in place: copied with the data directory
    real = os.path.realpath(str(tmp_path / "ts"))
    with c.open_sources(str(data)) as sources:
        assert sources.records() == [{"oid": 16384, "name": None, "location": real, "path": real}]


@pytest.mark.parametrize("method", ["tar", "copy", "command"])
def test_a_tablespace_link_to_a_directory_of_another_owner_is_refused_before_anything_is_copied(tmp_path, method):
    data = make_data_dir(tmp_path)
    foreign = "/"
    if os.geteuid() == 0:
        foreign = str(tmp_path / "foreign")
        os.mkdir(foreign)
        os.chown(foreign, NOBODY.pw_uid, NOBODY.pw_gid)
    os.unlink(str(data / "pg_tblspc/16384"))
    os.symlink(foreign, str(data / "pg_tblspc/16384"))
    with pytest.raises(BackupError) as raised:
        c.Copier(str(data), str(tmp_path / "b"), "run-1", method=method, command="true").copy()
    message = str(raised.value)
    assert "Tablespace 16384" in message
    assert "leads to %s, owned by uid %d" % (foreign, os.stat(foreign).st_uid) in message
    assert "owned by uid %d" % os.getuid() in message and "take the backup again" in message
    assert not (tmp_path / "b").exists(), "refused before anything is copied"


def swap_after_the_check(monkeypatch, action):
    """Run ``action`` right after the Copier opened and checked its sources, before any method reads them."""
    real = c.open_sources

    def opened(data_directory):
        sources = real(data_directory)
        action()
        return sources
    monkeypatch.setattr(c, "open_sources", opened)


def copied_files(out):
    """{name relative to its root: content} of what a copy wrote, plain or tar."""
    found = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name.endswith(".tar"):
            with tarfile.open(str(path)) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        found[path.name + ":" + os.path.normpath(member.name)] = tar.extractfile(member).read()
        elif path.is_file() and not path.is_symlink():
            found[str(path.relative_to(out))] = path.read_bytes()
    return found


@pytest.mark.parametrize("method", ["tar", "copy", "rsync"])
def test_a_tablespace_swapped_for_a_link_after_the_check_is_copied_as_checked(tmp_path, monkeypatch, method):
    data = make_data_dir(tmp_path)
    other = elsewhere(tmp_path)
    swap_after_the_check(monkeypatch, lambda: swap_for_link(tmp_path / "ts", other))
    result = c.Copier(str(data), str(tmp_path / "b"), "run-1", method=method).copy()
    files = copied_files(tmp_path / "b")
    assert b"elsewhere" not in b"".join(files.values()), "the copy read the link's target"
    assert b"ts" in [content for name, content in files.items() if name.endswith("PG_15_1/f")], files
    assert result["tablespaces"][0]["location"] == str(tmp_path / "ts"), "the record names the path as checked"


@pytest.mark.parametrize("method", ["tar", "copy", "rsync"])
def test_the_data_directory_swapped_for_a_link_after_the_check_is_copied_as_checked(tmp_path, monkeypatch, method):
    data = make_data_dir(tmp_path)
    other = elsewhere(tmp_path)
    swap_after_the_check(monkeypatch, lambda: swap_for_link(data, other))
    c.Copier(str(data), str(tmp_path / "b"), "run-1", method=method).copy()
    files = copied_files(tmp_path / "b")
    assert not [name for name in files if name.endswith("secret")], "the copy read the link's target"
    assert [name for name in files if name.endswith("base/1/1259")], files


@pytest.mark.parametrize("which", ["data", "ts"])
def test_a_root_swapped_for_a_link_between_its_resolution_and_its_open_is_refused(tmp_path, monkeypatch, which):
    data = make_data_dir(tmp_path)
    other = elsewhere(tmp_path)
    real = os.path.realpath

    def resolve_then_swap(path):
        resolved = real(path)
        if resolved == str(tmp_path / which) and not os.path.islink(resolved):
            swap_for_link(tmp_path / which, other)
        return resolved
    monkeypatch.setattr(c.os.path, "realpath", resolve_then_swap)
    with pytest.raises(BackupError, match="%s is a symbolic link now, not the directory it was resolved to: it was "
                       "swapped during the backup. It was not followed; nothing was copied" % (tmp_path / which)):
        c.Copier(str(data), str(tmp_path / "b"), "run-1", method="tar").copy()
    assert not (tmp_path / "b").exists()


def test_without_proc_the_copy_refuses_before_anything_is_copied(tmp_path, monkeypatch):
    """A tool given /proc/self/fd/<n> without /proc would read nothing, or what another mount has there."""
    real = cio.SourceRoot

    class WithoutProc(real):
        def __init__(self, path, fd):
            real.__init__(self, path, fd)
            self.source = str(tmp_path / "no-proc" / str(fd))
    monkeypatch.setattr(cio, "SourceRoot", WithoutProc)
    data = make_data_dir(tmp_path)
    with pytest.raises(BackupError, match="the copy reads through /proc/self/fd, which this host does not provide"):
        c.Copier(str(data), str(tmp_path / "b"), "run-1").copy()
    assert not (tmp_path / "b").exists()


def test_the_result_names_the_cluster(tmp_path):
    data = make_data_dir(tmp_path)
    os.symlink(str(data), str(tmp_path / "current"))
    for method in ("copy", "tar"):
        result = c.Copier(str(tmp_path / "current"), str(tmp_path / method), "run-1", method=method).copy()
        assert result["system_identifier"] == str(SYSTEM_IDENTIFIER)
        assert result["data_directory"] == os.path.realpath(str(data))


def test_command_method_writes_the_restorable_label_before_the_command_runs(tmp_path):
    data = make_data_dir(tmp_path)
    out = tmp_path / "b"

    def run(argv, env=None, pass_fds=()):
        assert "streamed" in open(env["PGX_BACKUP_LABEL_RESTORABLE"]).read()
        return 0, "", ""
    c.Copier(str(data), str(out), "run-1", method="command", command="snap", fix_label=True, run=run).copy()
    assert stat.S_IMODE(os.stat(str(out / layout.RESTORABLE_LABEL_FILE)).st_mode) == 0o644


# -- a repository on another host, over SSH ------------------------------------------

def test_tar_streams_into_the_repository_and_the_record_goes_last(tmp_path, fake_ssh):
    data = make_data_dir(tmp_path)
    repo_dir = tmp_path / "re po $HOME"
    repo_dir.mkdir()
    local = tmp_path / "records" / "run-1"
    result = c.Copier(str(data), str(local), "run-1", method="tar", compression="gzip", fix_label=True, parallel=2,
                      repository="backup@repohost:%s" % repo_dir, ssh_key="/k", ssh_options=["-o", "X=a b"]).copy()
    backup = repo_dir / "run-1"
    assert sorted(os.listdir(str(backup))) == ["16384.tar.gz", "base.tar.gz"]
    assert stat.S_IMODE(os.stat(str(backup)).st_mode) == 0o700
    assert result["repository"] == "backup@repohost:%s/run-1" % repo_dir
    assert result["bytes"] == sum(os.path.getsize(str(backup / n)) for n in os.listdir(str(backup)))
    assert os.listdir(str(local)) == [], "nothing of the copy on the database host"
    extracted = tmp_path / "x"
    extracted.mkdir()
    subprocess.run(["tar", "-C", str(extracted), "-xzf", str(backup / "base.tar.gz")], check=True)
    assert "BACKUP METHOD: streamed" in (extracted / "backup_label").read_text()
    assert ["-o", "X=a b"] == fake_ssh()[0][:2], "an option with a space stays one argument"

    (local / "backup.json").write_text('{"status": "complete"}\n')
    (local / "pg_wal.tar.gz").write_text("wal")
    sent = rp.send_record(str(local), "backup@repohost:%s" % repo_dir)
    assert sent["sent"] == ["pg_wal.tar.gz", "backup.json"]
    assert (backup / "backup.json").read_text() == '{"status": "complete"}\n'
    assert (backup / "pg_wal.tar.gz").read_text() == "wal" and not (backup / rp.RECORD_PART).exists()
    last = fake_ssh()[-1][-1]
    assert last.index("sync -f") < last.index("mv -f"), "the repository is synced before backup.json appears"


@pytest.mark.skipif(not __import__("shutil").which("rsync"), reason="rsync is not installed")
def test_rsync_into_the_repository_through_the_ssh_options(tmp_path, fake_ssh):
    data = make_data_dir(tmp_path)
    repo_dir = tmp_path / "repo"
    result = c.Copier(str(data), str(tmp_path / "records" / "run-1"), "run-1", method="rsync", fix_label=True,
                      repository="repohost:%s" % repo_dir, ssh_user="backup", ssh_key="/k b").copy()
    copy = repo_dir / "run-1" / "data"
    assert "BACKUP METHOD: streamed" in (copy / "backup_label").read_text()
    assert not any((copy / "pg_wal").iterdir()) and (repo_dir / "run-1/tablespaces/16384/PG_15_1/f").exists()
    assert result["bytes"] is None and result["repository"] == "backup@repohost:%s/run-1" % repo_dir
    rsync_calls = [call for call in fake_ssh() if "rsync" in call]
    assert rsync_calls and all(["-i", "/k b"] == call[call.index("-i"):call.index("-i") + 2] for call in rsync_calls)


def test_a_backup_in_the_repository_is_never_overwritten(tmp_path, fake_ssh):
    data = make_data_dir(tmp_path)
    (tmp_path / "repo/run-1").mkdir(parents=True)
    (tmp_path / "repo/run-1/backup.json").write_text("{}")
    with pytest.raises(BackupError, match="already holds a backup"):
        c.Copier(str(data), str(tmp_path / "records/run-1"), "run-1", repository="h:%s/repo" % tmp_path).copy()
    assert os.listdir(str(tmp_path / "repo/run-1")) == ["backup.json"]


def test_ssh_failures_say_what_ssh_said(tmp_path, fake_ssh, monkeypatch):
    data = make_data_dir(tmp_path)
    monkeypatch.setenv("FAKE_SSH_FAIL", "Host key verification failed.")
    with pytest.raises(BackupError, match="ssh exited with 255: Host key verification failed.") as failure:
        c.Copier(str(data), str(tmp_path / "records/run-1"), "run-1", repository="h:/srv").copy()
    assert "known_hosts" in failure.value.hint
    (tmp_path / "records/run-1/backup.json").write_text("{}")
    with pytest.raises(BackupError, match="ssh exited with 255"):
        rp.send_record(str(tmp_path / "records/run-1"), "h:/srv")


def test_a_repository_needs_tar_or_rsync_and_the_record_a_remote_one(tmp_path):
    with pytest.raises(BackupError, match="needs the tar or rsync method"):
        c.Copier("/d", "/b", "l", method="copy", repository="h:/srv")
    with pytest.raises(BackupError, match="tar method sends to a repository on another host only"):
        c.Copier("/d", "/b", "l", method="tar", repository="/srv/local")
    with pytest.raises(BackupError, match="holds no backup.json"):
        rp.send_record(str(tmp_path), "h:/srv")
    with pytest.raises(BackupError, match="is not one"):
        rp.send_record(str(tmp_path), "/srv/local")


def copy_params(**changes):
    spec = c.copy_argument_spec()
    params = dict((name, option.get("default")) for name, option in spec.items())
    params.update(label="nightly", backup_dir="/nonexistent/nightly")
    params.update(changes)
    return params


def test_send_record_in_check_mode_sends_nothing():
    result = c.copy_backup(copy_params(send_record=True, repository="backup@repo:/srv"), check_mode=True)
    assert result["changed"] and result["sent"] == [] and "would send backup.json" in result["msg"]


def test_a_failure_names_the_method_at_the_module_edge():
    with pytest.raises(BackupError, match="Only a repository on another host") as caught:
        c.copy_backup(copy_params(send_record=True, repository="/srv/local", method="rsync"), check_mode=False)
    assert caught.value.fail_kwargs()["method"] == "rsync"
