# shellcheck shell=bash
# Sourced by scripts/test: promtool (Debian `prometheus`), which checks and
# unit-tests the alert rules in deploy/prometheus and lints airlock's
# /metrics output. Exports AIRLOCK_TEST_PROMTOOL. Installs the package with
# apt-get when promtool is missing (without starting its service).

if [[ -z "${AIRLOCK_TEST_PROMTOOL:-}" ]]; then
  command -v promtool >/dev/null || apt_install promtool prometheus
  AIRLOCK_TEST_PROMTOOL="$(command -v promtool)" || die "promtool not found after installing prometheus"
  export AIRLOCK_TEST_PROMTOOL
  say "AIRLOCK_TEST_PROMTOOL=$AIRLOCK_TEST_PROMTOOL ($("$AIRLOCK_TEST_PROMTOOL" --version 2>&1 | head -1))"
fi
