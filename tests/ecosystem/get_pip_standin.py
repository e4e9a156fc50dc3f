"""Stand-in for the pip bootstrap script ansible-test downloads.

ansible-test fetches get-pip.py from a host this machine cannot reach and
caches it as ~/.ansible/test/cache/get_pip_<version>.py; this file, put there,
bootstraps pip with ensurepip instead and then installs what was asked for.
"""

import subprocess
import sys

# get-pip.py options that pip install itself does not know.
GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")

subprocess.run([sys.executable, "-m", "ensurepip"], check=True)
subprocess.run([sys.executable, "-m", "pip", "install", *(a for a in sys.argv[1:] if a not in GET_PIP_ONLY)],
               check=True)
