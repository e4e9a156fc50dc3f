import os

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import copy as c
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

LABEL = """START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: pg_start_backup
BACKUP FROM: primary
START TIME: 2026-11-21 10:56:35 UTC
LABEL: run-1
START TIMELINE: 1
"""


def test_normal_exit_codes_per_tool():
    assert c.is_normal_exit("tar", 1) and c.is_normal_exit("rsync", 24)
    assert not c.is_normal_exit("tar", 2) and not c.is_normal_exit("rsync", 23)
    assert not c.is_normal_exit("command", 1)


def test_tar_names():
    assert c.tar_name("base", "none") == "base.tar"
    assert c.tar_name("16384", "zstd") == "16384.tar.zst"
    with pytest.raises(BackupError):
        c.tar_name("base", "lz4")


def test_tar_command_excludes_live_label_and_adds_staged_one():
    argv = c.tar_data_command("/d", "/s", "/b/base.tar.gz", "gzip", ["*.log"])
    assert argv[:5] == ["tar", "-C", "/d", "-cf", "/b/base.tar.gz"]
    assert "--gzip" in argv and "--exclude=*.log" in argv
    assert "--exclude=./backup_label" in argv and "--exclude=./pg_wal/*" in argv
    assert argv[-3:] == ["-C", "/s", "backup_label"]


def test_rsync_command_anchors_and_keeps_links():
    argv = c.rsync_data_command("/d/", "/b/data")
    assert argv[:2] == ["rsync", "-a"] and argv[-2:] == ["/d/", "/b/data/"]
    assert "--exclude=/pg_wal/*" in argv and "--exclude=/backup_label" in argv
    assert "--exclude=pgsql_tmp*" in argv and "-L" not in argv


def test_label_checked_and_fixed():
    assert c.check_label(LABEL, "run-1")["start_wal_file"] == "000000010000000000000002"
    with pytest.raises(BackupError, match="not this run's"):
        c.check_label(LABEL, "run-2")
    assert "BACKUP METHOD: streamed" in c.label_for_copy(LABEL, True)
    assert c.label_for_copy(LABEL, False) == LABEL


def test_restore_hint_only_asks_for_the_fix_on_15_plus():
    assert "BACKUP METHOD: streamed" in c.restore_hint(True)
    assert "as it is" in c.restore_hint(False)


def make_data_dir(root):
    data = root / "data"
    for d in ("base/1", "pg_wal/archive_status", "pg_stat_tmp", "pg_tblspc", "base/pgsql_tmp"):
        (data / d).mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (data / "base/1/1259").write_text("x" * 100)
    (data / "base/pgsql_tmp/tmp1").write_text("t")
    (data / "pg_wal/000000010000000000000002").write_text("w")
    (data / "pg_stat_tmp/global.stat").write_text("s")
    (data / "postmaster.pid").write_text("123\n")
    (data / "backup_label").write_text(LABEL)
    (data / "tablespace_map").write_text("16384 %s\n" % (root / "ts"))
    (root / "ts/PG_15_1").mkdir(parents=True)
    (root / "ts/PG_15_1/f").write_text("ts")
    os.symlink(str(root / "ts"), str(data / "pg_tblspc/16384"))
    return data


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
    assert result["tablespaces"] == [{"oid": "16384", "path": str(tmp_path / "ts")}]
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
        def run(argv, env=None):
            calls.append(argv)
            return rc, "", "tar: file changed as we read it"
        return run
    result = c.Copier(str(data), str(tmp_path / "b"), "run-1", run=fake(1)).copy()
    assert result["warnings"] and len(calls) == 2   # base + one tablespace
    with pytest.raises(BackupError, match="tar exited with 2"):
        c.Copier(str(data), str(tmp_path / "b2"), "run-1", run=fake(2)).copy()


def test_command_method_gets_environment_and_restorable_label(tmp_path):
    data = make_data_dir(tmp_path)
    seen = {}

    def run(argv, env=None):
        seen.update(env)
        return 0, "", ""
    out = tmp_path / "b"
    result = c.Copier(str(data), str(out), "run-1", method="command", command="snap", fix_label=True, run=run).copy()
    assert seen["PGX_DATA_DIRECTORY"] == str(data) and seen["PGX_LABEL"] == "run-1"
    assert seen["PGX_TABLESPACES"] == "16384=%s" % (tmp_path / "ts")
    assert "streamed" in (out / c.RESTORABLE_LABEL_FILE).read_text()
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
                      fix_label=True, rsync_target=str(target)).copy()
    copy = target / "run-1" / "data"
    assert "BACKUP METHOD: streamed" in (copy / "backup_label").read_text()
    assert not (copy / "postmaster.pid").exists() and not any((copy / "pg_wal").iterdir())
    assert (copy / "pg_tblspc/16384").is_symlink()
    assert (target / "run-1" / "tablespaces" / "16384" / "PG_15_1" / "f").exists()
    assert result["warnings"], "the remote links still point at the original tablespace: said so"


def test_balanced_shares_are_near_equal_and_keep_every_job():
    jobs = [(size, "f%d" % i) for i, size in enumerate([100, 90, 50, 40, 30, 20, 10, 5, 5, 1])]
    shares = c.balanced(jobs, 3)
    assert sorted(j for share in shares for j in share) == sorted(jobs)
    totals = [sum(j[0] for j in share) for share in shares]
    assert max(totals) - min(totals) <= 10
    assert len(c.balanced(jobs[:2], 4)) == 2, "no empty share for a worker with nothing to do"


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


def test_parallel_zstd_uses_threads_and_other_compressions_do_not():
    assert c.tar_compress_args("zstd", 2) == ["--use-compress-program=zstd -T2"]
    assert c.tar_compress_args("zstd", 1) == ["--zstd"]
    assert c.tar_compress_args("gzip", 4) == ["--gzip"]
    argv = c.tar_data_command("/d", "/s", "/b/base.tar.zst", "zstd", parallel=2)
    assert "--use-compress-program=zstd -T2" in argv and "--zstd" not in argv
    with pytest.raises(BackupError):
        c.Copier("/d", "/b", "l", method="copy", parallel=0)


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


def test_parallel_gzip_small_blocks_and_tar_failure(tmp_path):
    import gzip
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(os.urandom(50000))
    out = tmp_path / "o.tar.gz"
    rc, _err = c.gzip_parallel(["tar", "-C", str(source), "-cf", "-", "."], str(out), 2, block=1000)
    assert rc == 0 and len(gzip.open(str(out)).read()) % 512 == 0
    rc, err = c.gzip_parallel(["tar", "-C", str(tmp_path / "missing"), "-cf", "-", "."], str(out), 2)
    assert rc == 2 and "missing" in err
