#!/usr/bin/env bash
# Make .venv-peers: the separate virtualenv of the peer systems of benchmarks/peers.py (fastText,
# model2vec with its distill extra, SetFit). It is separate because model2vec's distill needs
# transformers<5.4 while niche's .venv pins transformers 5.23. Idempotent: reinstalls only when
# benchmarks/peers-constraints.txt changes.
#
#   benchmarks/peers-venv.sh            (or: make bench-peers-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-peers
PINS=benchmarks/peers-constraints.txt
STAMP=$VENV/.peers-installed
if [[ -f $STAMP && $STAMP -nt $PINS ]]; then
  echo "$VENV is up to date"
  exit 0
fi
test -x $VENV/bin/python || "$PYTHON" -m venv $VENV
PIP=($VENV/bin/pip install --quiet --disable-pip-version-check)
# torch first and pinned: the CPU wheel (an unpinned torch would pull a multi-GB CUDA build)
"${PIP[@]}" -c $PINS torch==2.13.0
"${PIP[@]}" -c $PINS -r <(grep -v '^torch==' $PINS | grep -v '^#')
$VENV/bin/python -c "import fasttext, model2vec.distill, model2vec.train, setfit, sklearn, transformers; print('peers venv ok: transformers', transformers.__version__, 'setfit', setfit.__version__, 'model2vec', model2vec.__version__)"
touch $STAMP
