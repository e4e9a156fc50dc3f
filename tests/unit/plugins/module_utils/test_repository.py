import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import repository as rp
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def test_repository_names_host_path_and_user():
    repo = rp.Repository.parse("backup@repo1:/srv/pg backups/")
    assert (repo.user, repo.host, repo.path) == ("backup", "repo1", "/srv/pg backups")
    assert rp.Repository.parse("[fd00::5]:/srv", user="backup").command("true")[-2:] == ["fd00::5", "true"]
    assert rp.Repository.parse("/srv/local") is None and rp.Repository.parse("./a:b") is None
    for bad in ("repo1:relative", "-oProxyCommand=x:/srv", "-l@repo:/srv", "a@b@c:/srv"):
        with pytest.raises(BackupError, match="is not \\[user@\\]host:/absolute/path"):
            rp.Repository.parse(bad)
    with pytest.raises(BackupError, match="Give the user once"):
        rp.Repository.parse("backup@repo1:/srv", user="other")


def test_the_users_ssh_options_come_first_so_that_they_win():
    repo = rp.Repository.parse("repo1:/srv", user="backup", key="/root/k", options=["-o", "BatchMode=no"])
    argv = repo.ssh_argv()
    assert argv[:3] == ["ssh", "-o", "BatchMode=no"]
    assert argv.index("BatchMode=no") < argv.index("BatchMode=yes")
    assert argv[argv.index("-i"):argv.index("-i") + 4] == ["-i", "/root/k", "-o", "IdentitiesOnly=yes"]
    assert "ServerAliveInterval=15" in argv and argv[-2:] == ["-l", "backup"]


def test_a_repository_that_drops_off_the_network_fails_the_copy_in_75_seconds():
    # README and the fleet's fault test (test_fleet_faults.py) rely on this number.
    argv = rp.Repository.parse("repo1:/srv").ssh_argv()
    options = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "-o")
    # ssh gives up at the first check past ServerAliveCountMax unanswered ones.
    assert int(options["ServerAliveInterval"]) * (int(options["ServerAliveCountMax"]) + 1) == 75
    assert options["ConnectTimeout"] == "30" and options["BatchMode"] == "yes"
    patient = rp.Repository.parse("repo1:/srv", options=["-o", "ServerAliveCountMax=20"]).ssh_argv()
    assert patient.index("ServerAliveCountMax=20") < patient.index("ServerAliveCountMax=4")
