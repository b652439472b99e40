#!/usr/bin/env bash
# Apache Airflow for ctlake's scheduled pipelines, in its own virtual environment:
#   $CTLAKE_CACHE/airflow-venv-<first 12 hex of sha256(requirements.lock)>   (default ~/.cache/ctlake)
# built from infra/airflow/requirements.lock (a frozen resolution of apache-airflow 3.3.x) on the first
# run and reused afterwards (a second run takes milliseconds). Never installs anything into the stack's
# .venv. Prints the venv's path as the last line of stdout.
#
#   bash infra/airflow/bootstrap.sh            # → /root/.cache/ctlake/airflow-venv-0123456789ab
#
# Env: PYTHON (default python3.11), CTLAKE_CACHE.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE=${CTLAKE_CACHE:-$HOME/.cache/ctlake}
PYTHON=${PYTHON:-python3.11}
LOCK="$here/requirements.lock"
HASH=$(sha256sum "$LOCK" | cut -c1-12)
VENV="$CACHE/airflow-venv-$HASH"
say() { echo "[airflow-bootstrap] $*" >&2; }

if [ ! -f "$VENV/.complete" ]; then
  mkdir -p "$CACHE"
  exec 9>"$CACHE/airflow-venv.lock"          # two bootstraps at once wait for each other
  command -v flock >/dev/null && flock 9
  if [ ! -f "$VENV/.complete" ]; then
    command -v "$PYTHON" >/dev/null || { say "need $PYTHON on PATH"; exit 2; }
    say "creating $VENV from $LOCK (first run: ~130 packages, about a minute; cached afterwards)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip==24.3.1
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r "$LOCK"
    "$VENV/bin/pip" check >&2
    "$VENV/bin/python" -c "import airflow, airflow.providers.standard" >&2
    touch "$VENV/.complete"
  fi
fi
echo "$VENV"
