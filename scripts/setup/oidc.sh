# shellcheck shell=bash
# Sourced by scripts/test. Starts a real OpenID Connect provider
# (node-oidc-provider, pinned in scripts/oidc/package-lock.json) on a free
# 127.0.0.1 port and exports AIRLOCK_TEST_OIDC_ISSUER. Test accounts, client
# and form fields: see scripts/oidc/server.mjs and docs/oidc.md.
#
# Needs Node.js (>= 20) and npm; `npm ci` runs once into a cache folder keyed
# by the lock file's hash (~/.cache/airlock/oidc-<hash>), so the worktree stays clean.

oidc_pid=""
oidc_log=""

oidc_stop() {
  [[ -n "$oidc_pid" ]] && kill "$oidc_pid" 2>/dev/null && wait "$oidc_pid" 2>/dev/null
  [[ -n "$oidc_log" ]] && rm -f "$oidc_log"
  return 0
}

oidc_setup() {
  command -v node >/dev/null || die "Node.js is missing (needed for the test OIDC provider); install nodejs and npm"
  local src="$PWD/scripts/oidc" hash dir
  hash="$(sha256sum "$src/package-lock.json" | cut -c1-16)"
  dir="${XDG_CACHE_HOME:-$HOME/.cache}/airlock/oidc-$hash"
  if [[ ! -d "$dir/node_modules/oidc-provider" ]]; then
    command -v npm >/dev/null || die "npm is missing (needed for the test OIDC provider); install npm"
    say "installing the test OIDC provider (npm ci) into $dir"
    mkdir -p "$dir"
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed in $dir"
  fi
  cp "$src/server.mjs" "$dir/server.mjs"
  oidc_log="$(mktemp "${TMPDIR:-/tmp}/airlock-oidc.XXXXXX")"
  on_exit oidc_stop
  OIDC_PORT=0 node "$dir/server.mjs" >"$oidc_log" 2>&1 &
  oidc_pid=$!
  local i issuer=""
  for ((i = 0; i < 100; i++)); do
    issuer="$(awk '/^issuer /{print $2; exit}' "$oidc_log")"
    [[ -n "$issuer" ]] && break
    kill -0 "$oidc_pid" 2>/dev/null || { cat "$oidc_log" >&2; die "the test OIDC provider exited"; }
    sleep 0.1
  done
  [[ -n "$issuer" ]] || { cat "$oidc_log" >&2; die "the test OIDC provider did not start"; }
  export AIRLOCK_TEST_OIDC_ISSUER="$issuer"
  export AIRLOCK_TEST_OIDC_CLIENT_ID=airlock AIRLOCK_TEST_OIDC_CLIENT_SECRET=airlock-test-secret
  say "AIRLOCK_TEST_OIDC_ISSUER=$AIRLOCK_TEST_OIDC_ISSUER (node $(node --version))"
}

oidc_setup
