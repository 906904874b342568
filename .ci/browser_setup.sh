#!/usr/bin/env bash
# What the browser checks need on a fresh Debian machine, run as root: Debian's Chromium (/usr/bin/chromium),
# Playwright's Python package (tests/test_browser.py, .ci/site_check.py) and pandoc (.ci/site.py). Idempotent, quiet, fails loudly.
# No `playwright install`: it downloads browser builds from the internet, which is closed here; the test
# drives Debian's Chromium through Playwright's executable_path instead.
set -euo pipefail
PY=${PYTHON:-python3}
PLAYWRIGHT_VERSION=1.65.2   # verified with Debian 12's chromium 156 and JupyterLab 4.6 / ipywidgets 8.1

die() { echo "browser_setup: $*" >&2; exit 1; }

if [ ! -x /usr/bin/chromium ]; then
  [ "$(id -u)" -eq 0 ] || die "Chromium is missing and installing it needs root (apt-get install chromium)"
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  install_chromium() { apt-get install -y -qq --no-install-recommends chromium >"$log" 2>&1; }
  # apt-get update only when needed: the lists do not know chromium, or they are stale (install fails)
  if ! apt-cache show chromium >/dev/null 2>&1 || ! install_chromium; then
    apt-get update -qq >"$log" 2>&1 || { cat "$log" >&2; die "apt-get update failed"; }
    install_chromium || { tail -n 30 "$log" >&2; die "apt-get install chromium failed"; }
  fi
  rm -f "$log"
fi
/usr/bin/chromium --version >/dev/null 2>&1 || die "/usr/bin/chromium is installed but does not run"

# Debian's pandoc renders the docs site offline (.ci/site.py): equations as MathML, no network.
if ! command -v pandoc >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || die "pandoc is missing and installing it needs root (apt-get install pandoc)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends pandoc >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends pandoc >/dev/null 2>&1; } \
    || die "apt-get install pandoc failed"
fi

if [ "$("$PY" -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null || true)" != "$PLAYWRIGHT_VERSION" ]; then
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q "playwright==$PLAYWRIGHT_VERSION" \
    || die "pip install playwright==$PLAYWRIGHT_VERSION failed"
fi
"$PY" -c "import playwright.sync_api" || die "playwright does not import"

echo "browser_setup: $(/usr/bin/chromium --version 2>/dev/null | head -n 1) | playwright $PLAYWRIGHT_VERSION | $(pandoc --version | head -n 1)"
