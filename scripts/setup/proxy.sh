# shellcheck shell=bash
# Sourced by scripts/test. The tool-proxy end-to-end tests run real programs
# as proxied tools: psql (against the test database), plus coreutils (head,
# seq) and /bin/sh scripts that are always present. This installs the
# PostgreSQL client when psql is missing and tells the tests where it is.

proxy_setup() {
  if ! command -v psql >/dev/null; then
    [[ "$(id -u)" == 0 ]] || die "psql is missing; install postgresql-client (the tool-proxy tests run it as a tool)"
    command -v apt-get >/dev/null || die "psql is missing and apt-get is not available; install postgresql-client"
    say "installing postgresql-client (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-client >/dev/null \
      || die "apt-get could not install postgresql-client"
  fi
  AIRLOCK_TEST_PSQL="$(command -v psql)"
  export AIRLOCK_TEST_PSQL
  say "AIRLOCK_TEST_PSQL=$AIRLOCK_TEST_PSQL"
}

proxy_setup
