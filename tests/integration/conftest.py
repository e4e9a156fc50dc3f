from testbed.fixtures import *  # noqa: F401,F403  (pytest finds fixtures and hooks by name)
