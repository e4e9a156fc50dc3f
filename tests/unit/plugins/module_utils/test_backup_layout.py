import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_layout as layout
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def test_tar_names():
    assert layout.tar_name("base", "none") == "base.tar"
    assert layout.tar_name("16384", "zstd") == "16384.tar.zst"
    with pytest.raises(BackupError):
        layout.tar_name("base", "lz4")
