"""The fleet test bed: database hosts and a repository host reached over SSH, each in a network namespace.

See fleet.py for what a fleet is, fixtures.py for how the tests get one.
"""

from .fleet import MAJORS, Fleet, FleetHost, HostCluster

__all__ = ["MAJORS", "Fleet", "FleetHost", "HostCluster"]
