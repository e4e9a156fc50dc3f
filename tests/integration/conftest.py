# pytest finds fixtures and hooks by their names in a conftest module.
from testbed.fixtures import (  # noqa: F401  pylint: disable=unused-import
    clusters, db, ext_pg, pg, pytest_configure, pytest_unconfigure, restore, scratch, testbed_dir)
