#!/usr/bin/env bash
# The browser test (tests/serve/test_browser.py) drives the system Chromium with chromedriver.
# Install both from the distribution when they are missing and this machine allows it (root + apt,
# as CI runs); otherwise say so and let the test skip with its reason. Never fails the build.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "browser test: chromium/chromedriver are missing and cannot be installed here (needs root and apt-get); it will be skipped"
    exit 0
fi
echo "browser test: installing chromium and chromium-driver with apt-get"
log="$(mktemp)"
if ! (DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver) >"$log" 2>&1; then
    echo "browser test: apt-get could not install chromium (last lines below); the test will be skipped"
    tail -5 "$log"
fi
rm -f "$log"
exit 0
