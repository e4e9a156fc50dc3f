"""Real PostgreSQL servers for the tests: provisioning, clusters, fixtures.

Every server runs as the ``postgres`` OS user (initdb refuses root), listens on
a Unix socket in a temporary directory and on a loopback port, and archives
WAL into a directory of its own.
"""

from .errors import TestbedError
from .provision import MAJORS, Installation, provide
from .cluster import Cluster, free_port, stop_all

__all__ = ["MAJORS", "Cluster", "Installation", "TestbedError", "free_port", "provide", "stop_all"]
