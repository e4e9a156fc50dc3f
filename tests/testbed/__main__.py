"""Start and stop test bed clusters by hand.

    python -m tests.testbed provision [MAJOR ...]
    python -m tests.testbed start MAJOR [--dir DIR] [--port PORT]
    python -m tests.testbed stop DIR
"""

import argparse
import sys
import tempfile
from pathlib import Path

from . import MAJORS, Cluster, TestbedError, provide
from .cluster import leave_running


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.testbed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prov = sub.add_parser("provision", help="install the PostgreSQL majors (default: all)")
    prov.add_argument("majors", nargs="*", type=int, default=list(MAJORS))
    start = sub.add_parser("start", help="create and start a cluster with archiving; it keeps running")
    start.add_argument("major", type=int)
    start.add_argument("--dir", type=Path, help="where to create it (default: a new temporary directory)")
    start.add_argument("--port", type=int)
    stop = sub.add_parser("stop", help="stop the cluster created in DIR")
    stop.add_argument("dir", type=Path)
    args = parser.parse_args(argv)

    try:
        if args.command == "provision":
            for major in args.majors:
                inst = provide(major)
                print(f"PostgreSQL {major}: {inst.bindir} ({inst.source}, {inst.api} exclusive API)")
        elif args.command == "start":
            root = args.dir or Path(tempfile.mkdtemp(prefix=f"pgx-pg{args.major}-"))
            cluster = Cluster.create(provide(args.major), root, args.port)
            # Leave it running: the person stops it with the stop command.
            leave_running()
            print(f"PostgreSQL {args.major} running, pid {cluster.pid}\n"
                  f"  data directory   {cluster.data_dir}\n"
                  f"  WAL directory    {cluster.wal_dir}\n"
                  f"  socket           {cluster.socket_dir} port {cluster.port} (also 127.0.0.1)\n"
                  f"  WAL archive      {cluster.archive_dir}\n"
                  f"  backup database  {cluster.backup_db}\n"
                  f"  connect          {cluster.inst.tool('psql')} -h {cluster.socket_dir} -p {cluster.port} -U postgres\n"
                  f"  stop             python -m tests.testbed stop {root}")
        else:
            data_dir = args.dir / "data"
            version = data_dir / "PG_VERSION"
            if not version.exists():
                raise TestbedError(f"{args.dir} holds no test bed cluster (no {version}).")
            cluster = Cluster(provide(int(version.read_text().strip())), args.dir)
            pidfile = data_dir / "postmaster.pid"
            if not pidfile.exists():
                print(f"The cluster in {args.dir} is not running.")
                return 0
            cluster.pid = int(pidfile.read_text().split()[0])
            cluster.stop()
            print(f"Stopped the cluster in {args.dir}.")
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
