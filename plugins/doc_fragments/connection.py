# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    # Connection options, named as community.postgresql names them.
    DOCUMENTATION = r'''
options:
  login_user:
    description:
      - The role to connect as.
      - A superuser, or a role granted EXECUTE on the backup functions and on
        C(pg_catalog.pg_read_file) (text, bigint, bigint, boolean); a module that lacks
        a grant fails with the exact C(GRANT) statement to run.
    type: str
    default: postgres
    aliases: [ login ]
  login_password:
    description:
      - The password of O(login_user). Never logged.
    type: str
    default: ''
  login_host:
    description:
      - Host name or IP address of the server.
      - Empty means a Unix socket (O(login_unix_socket), or libpq's default).
    type: str
    default: ''
    aliases: [ host ]
  login_unix_socket:
    description:
      - Directory of the server's Unix socket, used when O(login_host) is empty.
    type: str
    default: ''
    aliases: [ unix_socket ]
  login_port:
    description:
      - The server's port.
    type: int
    default: 5432
    aliases: [ port ]
  login_db:
    description:
      - The database to connect to.
      - On PostgreSQL 15 and later, the database where the C(pg_exclusive_backup) extension is
        installed, because the extension's functions exist only there. A database of its own (for example
        C(backupctl)) is best, because the extension removes C(pg_backup_start) and
        C(pg_backup_stop), which other backup tools use, from the database it is created in.
    type: str
    default: postgres
    aliases: [ db ]
  ssl_mode:
    description:
      - How libpq negotiates SSL with the server.
    type: str
    default: prefer
    choices: [ allow, disable, prefer, require, verify-ca, verify-full ]
  ca_cert:
    description:
      - File of certificate authorities the server's certificate must be signed by.
    type: str
    aliases: [ ssl_rootcert ]
  ssl_cert:
    description:
      - Client certificate file.
    type: path
  ssl_key:
    description:
      - Client private key file.
    type: path
  connect_params:
    description:
      - Further libpq connection parameters as a dictionary, for example C(target_session_attrs) set to C(read-write).
      - They override the options above.
    type: dict
    default: {}
  connect_timeout:
    description:
      - Seconds to wait for the connection.
    type: int
    default: 10
requirements:
  - psycopg2 on the Python that runs the module
'''
