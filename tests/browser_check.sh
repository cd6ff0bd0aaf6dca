#!/usr/bin/env bash
# Installs what the browser check needs (Debian's chromium and chromium-driver, the selenium
# package), then runs tests/browser_check.py. Where they cannot be installed, says why and
# skips (exit 0); a check that runs and fails exits non-zero.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get install -y -q chromium chromium-driver >/tmp/browser_check_apt.log 2>&1 ||
         (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/tmp/browser_check_apt.log 2>&1)) ||
            { echo "browser check SKIPPED: apt-get could not install chromium (see /tmp/browser_check_apt.log)"; exit 0; }
    else
        echo "browser check SKIPPED: chromium is not installed and this user cannot apt-get install it"
        exit 0
    fi
fi
"$PYTHON" -c "import selenium" 2>/dev/null || "$PYTHON" -m pip install -q selenium ||
    { echo "browser check SKIPPED: pip could not install selenium"; exit 0; }
exec "$PYTHON" tests/browser_check.py "$@"
