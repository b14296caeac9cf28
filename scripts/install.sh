#!/usr/bin/env bash
# Sets up a fresh checkout: a virtual environment in .venv with jaxhash and everything the tests,
# plots and the FAISS comparison need, plus Fashion-MNIST from Debian/Ubuntu's package where apt
# exists. Safe to run again. Use PYTHON=python3.12 to pick the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Debian/Ubuntu ship venv separately (python3-venv).
    rm -rf .venv
    if command -v apt-get >/dev/null 2>&1; then
      $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
    fi
    "$PY" -m venv .venv
  fi
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev,faiss,plots,digits]"

# Debian packages: Fashion-MNIST for the README's main job; Chromium and PostgreSQL for the web
# system's tests (a real browser, a real database server started by the test itself).
packages=()
[ -d /usr/share/datasets/fashion-mnist ] || packages+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || packages+=(postgresql)
if [ ${#packages[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null; } \
      || echo "note: could not install ${packages[*]}: the tests that need them are skipped (use --data digits for the main job)" >&2
  else
    echo "note: no apt-get here; without ${packages[*]} the browser and PostgreSQL tests are skipped; put Fashion-MNIST's" \
         "IDX files in DIR/fashion-mnist/ and pass --data-dir DIR, or use --data digits" >&2
  fi
fi
echo "jaxhash installed in .venv ($(.venv/bin/python -c 'import jaxhash; print(jaxhash.__version__)'))"
