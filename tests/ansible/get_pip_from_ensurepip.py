# Stands in for the get-pip.py bootstrap script that ansible-test downloads from
# ci-files.testing.ansible.com (not reachable here; only the package registries are). It gives
# ansible-test's empty virtual environment the pip that ships with Python (ensurepip), then
# lets that pip install what get-pip.py was asked for (its arguments) from PyPI.
import ensurepip
import subprocess
import sys

ensurepip.bootstrap(upgrade=True, default_pip=True)
args = [a for a in sys.argv[1:] if a]
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
