#!/bin/sh
# The package's version, the one place it is set (service/__init__.py, __version__):
# images are built with --build-arg VERSION="$(deploy/version.sh)".
exec sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$(dirname "$0")/../service/__init__.py"
