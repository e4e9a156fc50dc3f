"""config_files: which configuration a backup carries from outside the data directory, and what a restore writes."""

import hashlib
import os

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import config_files as cf
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import debian

ETC = "/etc/postgresql/15/main"
DATA = "/var/lib/postgresql/15/main"
DEBIAN_CONF = (f"data_directory = '{DATA}'\nhba_file = '{ETC}/pg_hba.conf'\nident_file = '{ETC}/pg_ident.conf'\n"
               "external_pid_file = '/var/run/postgresql/15-main.pid'\nport = 5432\ncluster_name = '15/main'\n"
               "include_dir = 'conf.d'   # Debian's\ninclude_if_exists 'absent.conf'\nshared_buffers = 128MB\n")
SETTINGS = {"config_file": f"{ETC}/postgresql.conf", "hba_file": f"{ETC}/pg_hba.conf",
            "ident_file": f"{ETC}/pg_ident.conf"}


def test_parse_reads_values_as_postgresql_does():
    text = "a = 1\ninclude_dir 'conf.d'  # c\nb='it''s \\'q\\''\n# x = 2\n  C=on\nbroken line here\n"
    assert cf.parse(text) == [(0, "a", "1"), (1, "include_dir", "conf.d"), (2, "b", "it's 'q'"), (4, "c", "on")]


def test_the_plan_takes_debian_s_etc_files_and_conf_d_in_postgresql_s_order():
    files = {f"{ETC}/postgresql.conf": DEBIAN_CONF, f"{ETC}/pg_hba.conf": "local all all peer\n",
             f"{ETC}/pg_ident.conf": "", f"{ETC}/conf.d/b.conf": "include 'nested.conf'\n",
             f"{ETC}/conf.d/a.conf": "archive_mode = on\n", f"{ETC}/conf.d/nested.conf": "x = 1\n"}
    dirs = {f"{ETC}/conf.d": ["b.conf", "a.conf", ".hidden.conf", "notes.txt", "nested.conf"]}
    plan = cf.capture_plan(SETTINGS, DATA, files.get, dirs.get)
    assert [(e["what"], e["path"]) for e in plan["files"]] == [
        ("config_file", f"{ETC}/postgresql.conf"),
        ("include_dir file", f"{ETC}/conf.d/a.conf"),
        ("include_dir file", f"{ETC}/conf.d/b.conf"),
        ("include", f"{ETC}/conf.d/nested.conf"),
        ("hba_file", f"{ETC}/pg_hba.conf"),
        ("ident_file", f"{ETC}/pg_ident.conf")]
    assert plan["dirs"] == [{"what": "include_dir", "path": f"{ETC}/conf.d", "named_by": f"{ETC}/postgresql.conf"}]
    # include_if_exists of nothing is no loss.
    assert plan["missing"] == []


def test_the_plan_leaves_what_the_data_directory_holds_to_the_copy():
    files = {f"{DATA}/postgresql.conf": "include_if_exists = 'testbed.conf'\ninclude '/etc/pg/shared.conf'\n",
             f"{DATA}/testbed.conf": "port = 1\n", "/etc/pg/shared.conf": "work_mem = '8MB'\n",
             f"{DATA}/pg_hba.conf": "", f"{DATA}/pg_ident.conf": ""}
    plan = cf.capture_plan({"config_file": f"{DATA}/postgresql.conf", "hba_file": f"{DATA}/pg_hba.conf",
                            "ident_file": f"{DATA}/pg_ident.conf"}, DATA, files.get, lambda path: None)
    assert [e["path"] for e in plan["files"]] == ["/etc/pg/shared.conf"]


def test_capture_never_follows_a_link_planted_in_conf_d(tmp_path):
    """A link to a secret in conf.d (the server's OS user may write there) does not make root copy the secret."""
    etc, data, backup = tmp_path / "etc", tmp_path / "data", tmp_path / "backup"
    for path in (etc / "conf.d", data, backup):
        path.mkdir(parents=True)
    secret = tmp_path / "shadow"
    secret.write_text("root:secret\n")
    (etc / "postgresql.conf").write_text(f"include_dir = 'conf.d'\ninclude = '{tmp_path}/fifo'\n")
    (etc / "pg_hba.conf").write_text("local all all peer\n")
    os.symlink(etc / "pg_hba.conf", etc / "pg_ident.conf")
    (etc / "conf.d" / "ok.conf").write_text("archive_mode = on\n")
    os.symlink(secret, etc / "conf.d" / "evil.conf")
    os.mkfifo(tmp_path / "fifo")
    settings = {"config_file": str(etc / "postgresql.conf"), "hba_file": str(etc / "pg_hba.conf"),
                "ident_file": str(etc / "pg_ident.conf")}
    captured = cf.capture_config(settings, str(data), str(backup))
    assert [e["path"] for e in captured["files"]] == [
        str(etc / "postgresql.conf"), str(etc / "conf.d" / "ok.conf"), str(etc / "pg_hba.conf")]
    assert sorted(e["path"] for e in captured["missing"]) == sorted(
        [str(etc / "conf.d" / "evil.conf"), str(tmp_path / "fifo"), str(etc / "pg_ident.conf")])
    stored = [p for p in backup.rglob("*") if p.is_file()]
    assert len(stored) == 3 and not any(b"secret" in p.read_bytes() for p in stored)
    entry = captured["files"][0]
    assert (backup / entry["stored"]).read_bytes() == (etc / "postgresql.conf").read_bytes()
    assert entry["sha256"] == hashlib.sha256((etc / "postgresql.conf").read_bytes()).hexdigest()
    assert (backup / entry["stored"]).stat().st_mode & 0o777 == 0o600


def test_capture_says_when_the_login_may_not_read_the_settings(tmp_path):
    assert cf.capture_config({}, str(tmp_path), str(tmp_path))["unknown"] is True


def derive(files, replaced=()):
    dirs = {}
    for path in files:
        dirs.setdefault(os.path.dirname(path), []).append(os.path.basename(path))

    def list_conf(directory):
        return [os.path.join(directory, n) for n in cf.conf_dir_names(dirs.get(directory, []))]
    return cf.derive_config(files[f"{ETC}/postgresql.conf"], f"{ETC}/postgresql.conf", files.get, list_conf, replaced)


def test_the_derived_configuration_inlines_includes_and_names_nothing_of_the_source():
    files = {f"{ETC}/postgresql.conf": DEBIAN_CONF, f"{ETC}/conf.d/archiving.conf":
             "archive_mode = on\narchive_command = 'cp %p /srv/wal-archive/%f'\n"}
    text, notes = derive(files, replaced={"port", "archive_mode"})
    active = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert active == ["shared_buffers = 128MB"]
    assert "# pgexclusive.backup restore: begin of /etc/postgresql/15/main/conf.d/archiving.conf" in text
    assert "# pgexclusive.backup restore: archive_command = 'cp %p /srv/wal-archive/%f'" in text
    assert sorted(n.split(": ")[1] for n in notes) == sorted(
        "%s commented out (it names the source cluster)" % name
        for name in ("data_directory", "hba_file", "ident_file", "external_pid_file", "cluster_name", "archive_command"))


def test_a_required_include_the_backup_lacks_is_noted():
    files = {f"{ETC}/postgresql.conf": "include 'gone.conf'\n"}
    _text, notes = derive(files)
    assert notes == [f"{ETC}/postgresql.conf: include {ETC}/gone.conf is not in the backup, left out"]


def backed_up(tmp_path, content=b"port = 5432\n"):
    backup = tmp_path / "backup"
    stored = backup / cf.stored_name(f"{ETC}/postgresql.conf")
    stored.parent.mkdir(parents=True)
    stored.write_bytes(content)
    record = {"data_directory": DATA, "config_files": {"settings": SETTINGS, "files": [
        {"path": f"{ETC}/postgresql.conf", "sha256": hashlib.sha256(b"port = 5432\n").hexdigest()}]}}
    return cf.BackedUpConfig(str(backup), record, str(tmp_path / "restored")), stored


def test_the_backup_s_config_is_read_only_as_backup_json_vouches_for_it(tmp_path):
    config, _stored = backed_up(tmp_path)
    assert config.read(f"{ETC}/postgresql.conf") == "port = 5432\n"
    assert config.read(f"{ETC}/pg_hba.conf") is None   # not captured
    changed, _stored = backed_up(tmp_path / "changed", b"data_directory = '/var/lib/postgresql/15/main'\n")
    with pytest.raises(BackupError, match="differs from its backup.json"):
        changed.read(f"{ETC}/postgresql.conf")


def test_the_backup_s_config_is_never_read_through_a_link(tmp_path):
    config, stored = backed_up(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"port = 5432\n")
    stored.unlink()
    stored.symlink_to(elsewhere)
    with pytest.raises(BackupError, match="missing or differs"):
        config.read(f"{ETC}/postgresql.conf")


def test_debian_cluster_names_and_data_directories():
    assert debian.split_name("15/restored") == ("15", "restored")
    for bad in ("15", "15/../main", "/etc/postgresql/15/main", "15/a/b"):
        with pytest.raises(BackupError, match="is not <major>/<name>"):
            debian.split_name(bad)
    assert debian.data_directory_in(DEBIAN_CONF, "15", "main") == DATA
    assert debian.data_directory_in("port = 5433\n", "15", "x") == "/var/lib/postgresql/15/x"


def test_a_debian_cluster_of_another_major_is_refused(tmp_path):
    (tmp_path / "16" / "restored").mkdir(parents=True)
    (tmp_path / "16" / "restored" / "postgresql.conf").write_text("port = 5433\n")
    cluster = debian.DebianCluster("16", "restored", etc=str(tmp_path))
    with pytest.raises(BackupError, match="is PostgreSQL 16, and the backup is of PostgreSQL 15"):
        cluster.check_major({"server_version": "15.20 (Debian 15.20-0+deb12u1)"})
    assert debian.clusters_with_data_directory("/var/lib/postgresql/16/restored", etc=str(tmp_path)) == ["16/restored"]
    assert debian.clusters_with_data_directory("/srv/restore/data", etc=str(tmp_path)) == []


def test_a_postgresql_auto_conf_linked_out_of_the_copy_is_neither_read_nor_written(tmp_path):
    from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import configure
    data = tmp_path / "data"
    data.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("archive_command = 'keep me'\n")
    (data / "postgresql.auto.conf").symlink_to(secret)
    notes = configure.sanitize_auto_conf(str(data), DATA)
    assert notes == [f"{DATA}/postgresql.auto.conf: not a regular file in the backup, left out"]
    assert not os.path.lexists(data / "postgresql.auto.conf")
    assert secret.read_text() == "archive_command = 'keep me'\n"
    (data / "postgresql.auto.conf").write_text("archive_command = 'cp %p /live/%f'\nwork_mem = '4MB'\n")
    configure.sanitize_auto_conf(str(data), DATA)
    assert (data / "postgresql.auto.conf").read_text() == (
        "# pgexclusive.backup restore: archive_command = 'cp %p /live/%f'\nwork_mem = '4MB'\n")
