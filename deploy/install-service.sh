#!/bin/sh
# Inside an image build, both runtime targets: install the service from the resolved
# wheelhouse in /wheels into the active venv, check what was installed, add the user.
#
#   sh install-service.sh VERSION
#
# VERSION must be the package's own (service/__init__.py): a missing or different one
# fails the build, so an image's label never names another version than it runs.
set -eu
version=${1:-}
# --no-deps: the wheelhouse is already the resolved set.
pip install --no-cache-dir --no-index --no-deps /wheels/*.whl
rm -rf /wheels
python -c "import sys, onnxruntime, service.api.app; \
assert 'tensorflow' not in sys.modules; print(onnxruntime.get_available_providers())"
installed=$(python -c "import service; print(service.__version__)")
if [ "$installed" != "$version" ]; then
    echo "VERSION='$version' but the package is $installed: build with --build-arg VERSION=$installed" >&2
    exit 1
fi
if python -c "import tensorflow" 2>/dev/null; then
    echo "TensorFlow is in the serving image" >&2
    exit 1
fi
useradd --create-home --uid 10001 lge
mkdir -p /data
chown lge:lge /data
