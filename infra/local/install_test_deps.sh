#!/usr/bin/env bash
# Install the test/bench-only packages of requirements/test.in (PyRadiomics and its runtime
# dependencies, exact pins) into the venv of VENV_PYTHON, without moving anything else.
#
#   infra/local/install_test_deps.sh VENV_PYTHON
#
# Idempotent: when every pin is installed at its version and `import radiomics` works, it exits at
# once. Otherwise, for each pin: already at the pinned version -> nothing; missing, or a test-only
# package at another version -> `pip install --no-deps --no-build-isolation NAME==VERSION`
# (pyradiomics last: it compiles its C extensions against the venv's numpy, so numpy, setuptools and
# wheel must be there first); a package of requirements/lock.txt at another version -> refused (the
# lock wins; fix test.in). Then `pip check`, `import radiomics`, and a check that no package outside
# test.in changed. Any failure prints pip's output and exits non-zero.
set -euo pipefail
say() { echo "[test-deps] $*" >&2; }
[ $# -eq 1 ] || { say "usage: $0 VENV_PYTHON"; exit 2; }
PY=$1
cd "$(dirname "$0")/../.."
REQ=requirements/test.in
LOCK=requirements/lock.txt
[ -x "$PY" ] || command -v "$PY" >/dev/null || { say "$PY: no such Python"; exit 2; }
[ -f "$REQ" ] || { say "$REQ missing"; exit 2; }

# name==version lines of test.in (comments and blanks dropped), pyradiomics last
PINS=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$REQ" | grep -E '^[A-Za-z0-9._-]+==[^=]+$' \
       | awk 'tolower($0) ~ /^pyradiomics==/ {last=$0; next} {print} END {if (last) print last}')
[ -n "$PINS" ] || { say "$REQ has no name==version pins"; exit 2; }

# prints one line per pin: "ok NAME==V", "install NAME==V" or "conflict NAME==V installed=W"
plan() {
  "$PY" - "$LOCK" $PINS <<'EOF'
import importlib.metadata as md, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
lock = {norm(l.split("==")[0]) for l in open(sys.argv[1]) if "==" in l}
for pin in sys.argv[2:]:
    name, version = pin.split("==")
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        print("install", pin)
        continue
    if have == version:
        print("ok", pin)
    elif norm(name) in lock:
        print("conflict", pin, "installed=" + have)
    else:
        print("install", pin)
EOF
}

ready() {
  local p
  p=$(plan) || return 1
  ! grep -qv '^ok ' <<<"$p" && "$PY" -c 'import radiomics' >/dev/null 2>&1
}

# The dashboard's browser test (tests/integration/test_dashboard.py) drives Debian's chromium with
# Playwright (executable_path=/usr/bin/chromium; no `playwright install` download). Needs root (or sudo).
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
    say "installing chromium and chromium-driver (apt-get) for the dashboard browser test"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    say "chromium missing and apt-get unusable here (not root, no sudo): the dashboard browser test will fail;"
    say "install it with: sudo apt-get install -y chromium chromium-driver"
  fi
fi

if ready; then
  exit 0
fi

PLAN=$(plan)
if grep -q '^conflict ' <<<"$PLAN"; then
  say "requirements/test.in disagrees with the venv built from $LOCK:"
  grep '^conflict ' <<<"$PLAN" | sed 's/^conflict /  test.in pins /' >&2
  say "the lock file wins: update the pin in $REQ (or rebuild the venv with make venv)"
  exit 1
fi

LOG=$(mktemp)
trap 'rm -f "$LOG" "$LOG.before" "$LOG.after"' EXIT
run() {  # run a command, its output into $LOG; on failure show it all
  if ! "$@" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    say "FAILED: $*"
    exit 1
  fi
}

frozen() {  # pip freeze without the packages of test.in
  local names
  names=$(sed 's/==.*//' <<<"$PINS" | tr 'A-Z_.' 'a-z--' | paste -sd'|')
  "$PY" -m pip freeze --disable-pip-version-check --all 2>/dev/null \
    | tr 'A-Z_.' 'a-z--' | grep -Ev "^($names)(==| @)" || true
}
frozen >"$LOG.before"

for pin in $(grep '^install ' <<<"$PLAN" | cut -d' ' -f2); do
  say "installing $pin"
  run "$PY" -m pip install --disable-pip-version-check --progress-bar off --no-deps --no-build-isolation "$pin"
done

run "$PY" -m pip check --disable-pip-version-check
frozen >"$LOG.after"
if ! diff -u "$LOG.before" "$LOG.after" >"$LOG" 2>&1; then
  cat "$LOG" >&2
  say "FAILED: installing $REQ changed packages outside it (above); the venv no longer matches $LOCK"
  exit 1
fi
if ! ready; then
  plan | grep -v '^ok ' >&2 || true
  "$PY" -c 'import radiomics' >&2 || true
  say "FAILED: after installation the pins above are still not satisfied or radiomics does not import"
  exit 1
fi
say "ready: $(sed -n 's/^pyradiomics==/pyradiomics /Ip' <<<"$PINS") in $("$PY" -c 'import sys; print(sys.prefix)')"
