# shellcheck shell=bash
# Sourced by scripts/test. The web UI tests drive a real headless Chromium
# through chromedriver (W3C WebDriver); each test starts its own chromedriver
# on a free loopback port. This only makes sure Debian's chromium and
# chromium-driver are installed and tells the tests where chromedriver is.

chromium_setup() {
  local driver=/usr/bin/chromedriver
  if [[ ! -x "$driver" ]] || ! command -v chromium >/dev/null; then
    [[ "$(id -u)" == 0 ]] || die "Chromium is missing; install chromium and chromium-driver"
    command -v apt-get >/dev/null || die "Chromium is missing and apt-get is not available; install chromium and chromium-driver"
    say "installing Chromium + chromedriver (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver >/dev/null || die "apt-get could not install chromium/chromium-driver"
    [[ -x "$driver" ]] || die "chromium-driver installed but $driver is missing"
  fi
  export AIRLOCK_TEST_CHROMEDRIVER="$driver"
  say "AIRLOCK_TEST_CHROMEDRIVER=$AIRLOCK_TEST_CHROMEDRIVER ($("$driver" --version 2>/dev/null | head -n1))"
}

chromium_setup
