"""pg_restore_fetch's logic: a backup chosen and staged from a repository "on another host" (a fake ssh runs it here)."""

import json
import os
import stat

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import fetch as rf
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.layout import lay_out

SYSID = "7310592362290628506"


def backup(dest, label, status="complete", start="0/4000028", sysid=SYSID, record=True):
    path = dest / label
    (path / "data" / "pg_tblspc").mkdir(parents=True)
    (path / "data" / "PG_VERSION").write_text("15\n")
    (path / "data" / "pg_tblspc" / "16384").symlink_to("../../tablespaces/16384")
    (path / "pg_wal").mkdir()
    (path / "pg_wal" / "000000010000000000000002").write_bytes(b"w" * 64)
    if record:
        (path / "backup.json").write_text(json.dumps({"label": label, "status": status, "start_lsn": start,
                                                      "system_identifier": sysid}, indent=2))
    return path


def tree(top):
    """Every path under ``top`` with its kind and content: what 'nothing changed' compares."""
    found = {}
    for root, dirs, files in os.walk(str(top)):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, str(top))
            if os.path.islink(path):
                found[rel] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                found[rel] = "dir"
            else:
                with open(path, "rb") as handle:
                    found[rel] = handle.read()
    return found


@pytest.fixture
def repo(tmp_path):
    dest = tmp_path / "repository"
    # Newest by start LSN: a date in backup.json decides nothing (a planted record could say 2099).
    backup(dest, "old", start="0/2000028")
    backup(dest, "newer", start="0/4000028")
    backup(dest, "failed-newest", "failed", "0/6000028")
    backup(dest, "other-cluster", start="0/8000028", sysid="42")
    backup(dest, "partial-still-copying", record=False)
    return dest


def params(tmp_path, path, **more):
    p = dict(repository="backup@repo1:" + str(path), ssh_user=None, ssh_key="/root/k",
             ssh_options=["-o", "UserKnownHostsFile=/k"], fetch_dir=None,
             data_directory=str(tmp_path / "restore" / "data"), waldir=None, tablespace_mapping={},
             system_identifier=SYSID, allow_incomplete=False)
    p.update(more)
    return p


def test_the_fetch_dir_defaults_to_beside_the_data_directory():
    assert rf.fetch_dir_for(None, "/srv/pg/data/") == "/srv/pg/data.fetch"
    assert rf.fetch_dir_for("/srv/stage/", "/srv/pg/data") == "/srv/stage"


@pytest.mark.parametrize("fetch_dir", ["/srv/pg/data", "/srv/pg/data/stage", "/srv/pg", "/srv/wal", "/srv/ts/x"])
def test_a_fetch_dir_overlapping_what_the_restore_writes_is_refused(fetch_dir):
    places = {"data directory": "/srv/pg/data", "waldir": "/srv/wal", "directory of tablespace 16384": "/srv/ts"}
    with pytest.raises(BackupError, match="overlaps the"):
        rf.check_fetch_dir(fetch_dir, places)
    rf.check_fetch_dir("/srv/pg/data.fetch", places)
    with pytest.raises(BackupError, match="not an absolute path"):
        rf.check_fetch_dir("stage", places)


def test_the_newest_complete_backup_is_chosen_and_staged_record_last(tmp_path, repo, fake_ssh, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(rf.tempfile, "tempdir", str(tmp_path / "tmp"))
    before = tree(repo)
    result = rf.fetch_task(params(tmp_path, repo), False)
    staged = tmp_path / "restore" / "data.fetch" / "newer"
    assert result["backup_dir"] == str(staged) and result["label"] == "newer"
    assert result["repository"] == "backup@repo1:%s/newer" % repo
    assert result["created"] == [str(tmp_path / "restore" / "data.fetch")] and result["reused"] is False
    assert tree(staged) == tree(repo / "newer"), "the staged copy is the backup, links as links"
    assert stat.S_IMODE(os.stat(str(staged.parent)).st_mode) == 0o700
    assert tree(repo) == before, "nothing written on the repository"
    # One read of the records, one copy; both with the key and options given, through rsync's -e.
    first, second = [c["argv"] for c in result["commands"]]
    assert "--include=/*/backup.json" in first and "--exclude=/backup.json" in second
    assert all("-i /root/k" in argv[argv.index("-e") + 1] for argv in (first, second))
    calls = fake_ssh()
    assert len(calls) == 2 and all(call[call.index("-l"):call.index("-l") + 3] == ["-l", "backup", "repo1"]
                                   for call in calls)
    assert os.listdir(str(tmp_path / "tmp")) == [], "the mirror of the records is removed"


def test_a_path_holding_backup_json_is_that_one_backup(tmp_path, repo, fake_ssh):
    result = rf.fetch_task(params(tmp_path, repo / "old"), False)
    assert result["label"] == "old" and result["repository"].endswith("/repository/old")
    with pytest.raises(BackupError, match=r"In the repository backup@repo1:.*/failed-newest: The backup "
                                          r".*/failed-newest is not complete"):
        rf.fetch_task(params(tmp_path, repo / "failed-newest", fetch_dir=str(tmp_path / "f2")), False)
    assert not (tmp_path / "f2").exists()


def test_several_clusters_need_the_system_identifier(tmp_path, repo, fake_ssh):
    with pytest.raises(BackupError, match="In the repository .*complete backups of 2 clusters"):
        rf.fetch_task(params(tmp_path, repo, system_identifier=None), False)
    assert rf.fetch_task(params(tmp_path, repo, system_identifier="42"), False)["label"] == "other-cluster"


def test_a_second_fetch_reuses_the_staged_copy_and_creates_nothing(tmp_path, repo, fake_ssh):
    rf.fetch_task(params(tmp_path, repo), False)
    again = rf.fetch_task(params(tmp_path, repo), False)
    assert again["reused"] is True and again["created"] == []


def test_an_existing_fetch_dir_is_kept_and_only_the_backups_directory_is_created(tmp_path, repo, fake_ssh):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "someone's").write_text("keep")
    result = rf.fetch_task(params(tmp_path, repo, fetch_dir=str(stage)), False)
    assert result["created"] == [str(stage / "newer")]


def test_something_else_at_the_staged_path_is_refused_and_left_alone(tmp_path, repo, fake_ssh):
    stage = tmp_path / "stage"
    (stage / "newer").mkdir(parents=True)
    (stage / "newer" / "half").write_text("an interrupted fetch")
    with pytest.raises(BackupError, match="is not a staged copy of the backup") as failure:
        rf.fetch_task(params(tmp_path, repo, fetch_dir=str(stage)), False)
    assert "Remove it" in str(failure.value)
    assert os.listdir(str(stage / "newer")) == ["half"]


def test_check_mode_chooses_and_stages_nothing(tmp_path, repo, fake_ssh):
    result = rf.fetch_task(params(tmp_path, repo), True)
    assert result["label"] == "newer" and result["created"] == []
    assert not (tmp_path / "restore").exists()


def test_an_unreachable_repository_fails_with_sshs_message(tmp_path, repo, fake_ssh, monkeypatch):
    monkeypatch.setenv("FAKE_SSH_FAIL", "Host key verification failed.")
    with pytest.raises(BackupError, match="could not be read: rsync exited with .*Host key verification failed"):
        rf.fetch_task(params(tmp_path, repo), False)
    assert not (tmp_path / "restore").exists()


def test_a_local_path_is_not_a_repository(tmp_path, repo):
    with pytest.raises(BackupError, match="is not on another host"):
        rf.fetch_task(params(tmp_path, repo, repository=str(repo)), False)


def test_the_wal_a_repository_backup_includes_is_laid_out_into_pg_wal(tmp_path, repo):
    data = tmp_path / "restored"
    lay_out(str(repo / "old"), str(data), lambda oid: str(tmp_path / "ts" / oid))
    assert os.listdir(str(data / "pg_wal")) == ["000000010000000000000002"]
    assert not os.path.islink(str(data / "pg_wal"))


def test_a_target_where_a_postmaster_runs_is_refused_before_anything_is_fetched(tmp_path, repo, fake_ssh):
    data = tmp_path / "restore" / "data"
    data.mkdir(parents=True)
    (data / "postmaster.pid").write_text("%d\n%s\n" % (os.getpid(), data))
    with pytest.raises(BackupError, match=r"A postmaster \(PID %d\) runs on the target .* Nothing was fetched" % os.getpid()):
        rf.fetch_task(params(tmp_path, repo), False)
    assert fake_ssh() == [] and not (tmp_path / "restore" / "data.fetch").exists()
