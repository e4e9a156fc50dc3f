import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_record as r
from ansible_collections.pgexclusive.backup.plugins.module_utils import retention as rt
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.restorable_record import RESTORABLE


CLUSTER = {"system_identifier": "111", "data_directory": None, "host": None}


def test_retention_keeps_newest_complete_and_never_current():
    records = {
        "a": {"status": "complete", "start_lsn": "0/2000028", "system_identifier": "111"},
        "b": {"status": "complete", "start_lsn": "0/5000028", "system_identifier": 111},
        "c": {"status": "failed", "start_lsn": "0/7000028", "system_identifier": "111"},
        "d": {"status": "complete", "start_lsn": "1/1000028", "system_identifier": "111"},
        "broken": None,
    }
    assert rt.retention_plan(records, 2, "d", CLUSTER)["removed"] == ["a"]
    assert rt.retention_plan(records, 1, "d", CLUSTER)["removed"] == ["a", "b"]
    assert rt.retention_plan(records, 1, "a", CLUSTER)["removed"] == ["b"]
    plan = rt.retention_plan(records, 0, "d", CLUSTER)
    assert plan["removed"] == [] and plan["kept"] == ["a", "b", "d"] and plan["failed_backups"] == ["broken", "c"]
    with pytest.raises(BackupError, match="keep is -1"):
        rt.retention_plan(records, -1, "d", CLUSTER)


def test_retention_orders_by_start_lsn_not_by_date_and_never_counts_a_record_its_copy_disagrees_with():
    records = {
        "real-old": {"status": "complete", "start_lsn": "0/2000028", "finished_at": "2026-01-01T00:00:00Z",
                     "system_identifier": "111"},
        "real-new": {"status": "complete", "start_lsn": "0/9000028", "finished_at": "2026-01-02T00:00:00Z",
                     "system_identifier": "111"},
        "planted": {"status": "complete", "start_lsn": "0/3000028", "finished_at": "2099-01-01T00:00:00Z",
                    "system_identifier": "111"},
        "forged-lsn": {"status": "complete", "start_lsn": "F/0", "system_identifier": "111"},
    }
    plan = rt.retention_plan(records, 1, "real-new", CLUSTER)
    assert plan["kept"] == ["forged-lsn", "real-new"], "unproved, a record claiming a later start would be kept"
    plan = rt.retention_plan(records, 1, "x", CLUSTER, lambda label: "no label" if label.startswith(("p", "f")) else None)
    assert plan["kept"] == ["real-new"] and plan["removed"] == ["real-old"]
    assert plan["unproved"] == ["forged-lsn", "planted"], "left alone, neither counted nor removed"


def test_same_cluster():
    record = {"system_identifier": "111", "data_directory": "/pg/a", "host": "db1"}
    assert rt.same_cluster(record, {"system_identifier": "111"})
    assert rt.same_cluster(record, {"system_identifier": "111", "data_directory": "/pg/a/", "host": "db1"})
    assert not rt.same_cluster(record, {"system_identifier": "222"})
    assert not rt.same_cluster(record, {"system_identifier": "111", "data_directory": "/pg/b"})
    assert not rt.same_cluster(record, {"system_identifier": "111", "host": "db2"})
    assert not rt.same_cluster({"status": "complete"}, {"system_identifier": "111"})


def test_a_failed_removal_is_an_error_and_leaves_no_complete_record(tmp_path, monkeypatch):
    for label, start in (("old", "0/2000028"), ("new", "0/4000028")):
        (tmp_path / label / "data").mkdir(parents=True)
        (tmp_path / label / "data" / "backup_label").write_text(
            "START WAL LOCATION: %s (file 00000001000000000000000%s)\n" % (start, start[2]))
        r.write_record(str(tmp_path / label), r.build_record(dict(RESTORABLE, label=label, start_lsn=start,
                                                                  system_identifier="111"), "complete"))

    def busy(path):
        raise OSError(16, "Device or resource busy", path)
    monkeypatch.setattr(rt.shutil, "rmtree", busy)
    params = dict(dest=str(tmp_path), keep=1, current="new", system_identifier="111", data_directory=None, host=None)
    with pytest.raises(BackupError, match="Retention could not remove the backup .*old: .*busy") as exc:
        rt.apply_retention(params, False)
    assert exc.value.facts["removed"] == []
    assert not (tmp_path / "old" / "backup.json").exists(), "a half-removed backup must not claim to be complete"
    assert r.read_record(str(tmp_path / "new"))["status"] == "complete"


def test_retention_never_counts_a_tar_copy_claiming_a_start_after_the_backup_just_taken_nor_reads_its_archives(tmp_path):
    cluster = dict(CLUSTER, system_identifier="111")
    for label, lsn in (("real-old", "0/2000028"), ("real-new", "0/9000028"), ("forged-later", "F/28")):
        (tmp_path / label).mkdir()
        # Not a tar at all: retention must not read a tar copy's archives (its backup_label is their last member).
        (tmp_path / label / "base.tar.zst").write_bytes(b"not an archive")
        r.write_record(str(tmp_path / label), {"label": label, "status": "complete", "start_lsn": lsn,
                                               "system_identifier": "111"})
    params = dict(cluster, dest=str(tmp_path), keep=1, current="real-new")
    plan = rt.apply_retention(params, True)
    assert plan["unproved"] == ["forged-later"] and plan["kept"] == ["real-new"] and plan["removed"] == ["real-old"], plan
