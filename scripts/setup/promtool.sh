# shellcheck shell=bash
# Sourced by scripts/test: promtool (Debian `prometheus`), which checks and
# unit-tests the alert rules in deploy/prometheus and lints airlock's
# /metrics output. Exports AIRLOCK_TEST_PROMTOOL. Installs the package with
# apt-get when promtool is missing (without starting its service).

promtool_install() {
  [[ "$(id -u)" == 0 ]] || die "promtool is missing; install the prometheus package or set AIRLOCK_TEST_PROMTOOL"
  command -v apt-get >/dev/null || die "promtool is missing and apt-get is not available; install prometheus or set AIRLOCK_TEST_PROMTOOL"
  say "installing promtool (apt-get install prometheus)"
  local policy=/usr/sbin/policy-rc.d created=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  ((created)) && rm -f "$policy"
  return 0
}

if [[ -z "${AIRLOCK_TEST_PROMTOOL:-}" ]]; then
  command -v promtool >/dev/null || promtool_install
  AIRLOCK_TEST_PROMTOOL="$(command -v promtool)" || die "promtool not found after installing prometheus"
  export AIRLOCK_TEST_PROMTOOL
  say "AIRLOCK_TEST_PROMTOOL=$AIRLOCK_TEST_PROMTOOL ($("$AIRLOCK_TEST_PROMTOOL" --version 2>&1 | head -1))"
fi
