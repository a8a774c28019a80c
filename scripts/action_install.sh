#!/usr/bin/env bash
# action.yml, step 1: a CPU torch when the environment has none (an unpinned `pip install torch` pulls the CUDA
# build, gigabytes), then what $INSTALL names (default: gradscope from PyPI).
set -euo pipefail
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet torch --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
fi
# shellcheck disable=SC2086  # INSTALL may name several requirements
python -m pip install --quiet ${INSTALL:-gradscope}
gradscope --version
