import os

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_order as bo
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import live_servers as ls
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


@pytest.mark.parametrize("target, used, how", [
    ("/srv/pg/data", "/srv/pg/data", "is"),
    ("/srv/pg/data/", "/srv/pg/data", "is"),
    ("/srv/pg/data/base", "/srv/pg/data", "lies inside"),
    ("/srv/pg", "/srv/pg/data", "holds"),
    ("/srv/pg/data2", "/srv/pg/data", None),
    ("/srv/pg/dat", "/srv/pg/data", None),
    ("/srv/restored.tablespaces/16384", "/srv/ts", None),
])
def test_relation(target, used, how):
    assert ls.relation(target, used) == how


def server(pid, data, *paths):
    return {"pid": pid, "data_directory": data, "paths": [("data directory", data)] + list(paths)}


def test_a_target_meeting_any_live_path_is_refused_naming_the_server_and_the_path(tmp_path):
    live_ts = tmp_path / "live-ts"
    live_ts.mkdir()
    servers = [server(11, "/srv/other"), server(42, str(tmp_path / "live"), ("tablespace 16384", str(live_ts)),
                                                ("pg_wal", str(tmp_path / "live-wal")))]
    ls.check_not_live(str(tmp_path / "restored.tablespaces" / "16384"), "tablespace 16384 target", servers)
    with pytest.raises(BackupError, match=r"The tablespace 16384 target .*live-ts is the tablespace 16384 .* PID 42 "
                                          r"\(data directory .*live\)") as raised:
        ls.check_not_live(str(live_ts), "tablespace 16384 target", servers)
    assert "force cannot help" in raised.value.hint and "tablespace_mapping" in raised.value.hint
    assert raised.value.facts["live_server"] == {"pid": 42, "data_directory": str(tmp_path / "live")}
    # Through a link to it, too: the paths are compared resolved.
    (tmp_path / "link").symlink_to(live_ts)
    with pytest.raises(BackupError, match="is the tablespace 16384"):
        ls.check_not_live(str(tmp_path / "link"), "tablespace 16384 target", servers)
    with pytest.raises(BackupError, match="holds the data directory"):
        ls.check_not_live(str(tmp_path), "target data directory", servers)


def test_a_postmaster_pid_is_believed_only_when_it_is_one_of_the_servers_processes(tmp_path):
    (tmp_path / "postmaster.pid").write_text("%d\n%s\n" % (os.getpid(), tmp_path))
    assert ls.postmaster_of(str(tmp_path), [os.getpid(), os.getpid() + 1]) == os.getpid()
    assert ls.postmaster_of(str(tmp_path), [7, 9]) == 7


def test_this_hosts_servers_are_found_from_proc():
    found = ls.live_servers()
    assert all(os.path.isfile(os.path.join(s["data_directory"], "PG_VERSION")) for s in found)


def test_a_record_whose_copy_starts_elsewhere_disagrees():
    label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
    assert bo.label_disagreement({"start_lsn": "0/02000028"}, label) is None
    assert bo.label_disagreement({"start_lsn": "0/9000028"}, label) == (
        "backup.json says the backup starts at 0/9000028, its copy's backup_label at 0/2000028")
    assert bo.label_disagreement({"start_lsn": "0/2000028"}, None) == "its copy holds no backup_label"
    assert bo.newest_first({"a": {"start_lsn": "0/2000028", "finished_at": "2099-01-01"},
                            "b": {"start_lsn": "1/0"}, "c": {}}) == ["b", "a", "c"]
