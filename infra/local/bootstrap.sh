#!/usr/bin/env bash
# Set up everything ctlake needs on this machine, reusing what is cached:
#   1. a Python 3.11 venv with the pinned stack (requirements/lock.txt), kept under
#      $CTLAKE_CACHE/venv/<hash of the lock file> so every clone on the machine shares it;
#   2. horovod 0.28.1 built from its sdist once per torch version ($CTLAKE_CACHE/wheels);
#   3. ctlake itself installed editable from this checkout;
#   4. the Maven jars (Spark extras, Kafka broker, Elasticsearch) in $CTLAKE_CACHE/jars.
# .venv in the checkout is a link to the shared venv. A second run takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=${CTLAKE_CACHE:-$HOME/.cache/ctlake}
PYTHON=${PYTHON:-python3.11}
mkdir -p "$CACHE"
say() { echo "[bootstrap] $*" >&2; }

command -v "$PYTHON" >/dev/null || { say "need $PYTHON on PATH"; exit 2; }
PYVER=$("$PYTHON" -c 'import sys; print("%d%d" % sys.version_info[:2])')
[ "$PYVER" = "311" ] || { say "ctlake's stack is pinned for Python 3.11, $PYTHON is $PYVER"; exit 2; }
HASH=$(cat requirements/lock.txt | sha256sum | cut -c1-12)   # the venv changes only with the lock
VENV=$CACHE/venv/py$PYVER-$HASH

if [ ! -f "$VENV/.complete" ]; then
  say "creating $VENV (first run: ≈3.4 GB of wheels, a few minutes; cached afterwards)"
  rm -rf "$VENV"
  mkdir -p "$CACHE/venv"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip==24.3.1 wheel==0.45.1
  "$VENV/bin/pip" install --disable-pip-version-check --progress-bar off -r requirements/lock.txt
  "$VENV/bin/pip" check
  touch "$VENV/.complete"
fi
ln -sfn "$VENV" .venv

# horovod: built once per torch version, then installed from the cached wheel.
if ! "$VENV/bin/python" -c 'import horovod.torch' 2>/dev/null; then
  WHEEL=$(bash infra/horovod/build_wheel.sh "$VENV/bin/python" "$CACHE/wheels" | tail -n 1)
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$WHEEL"
fi

# test/bench-only packages (pyradiomics, the peer of the radiomics engine): idempotent
if [ -f infra/local/install_test_deps.sh ]; then
  bash infra/local/install_test_deps.sh "$VENV/bin/python"
fi

# ctlake from this checkout (the venv is shared, so re-point it when another clone used it).
WHERE=$("$VENV/bin/python" -c 'import ctlake, os; print(os.path.dirname(os.path.dirname(ctlake.__file__)))' 2>/dev/null || true)
if [ "$WHERE" != "$ROOT/libs" ]; then
  say "installing ctlake (editable) from $ROOT"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
fi

bash infra/airflow/bootstrap.sh >/dev/null   # Airflow in its own venv (infra/airflow), cached by its lock's hash
"$VENV/bin/ctlake" infra prepare
say "ready: $VENV (linked as .venv)"
