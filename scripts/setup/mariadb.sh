# shellcheck shell=bash
# Sourced by scripts/test: a throwaway MariaDB for the mysql provider's tests
# and benchmark, in a temp datadir on a free 127.0.0.1 port, with the event
# scheduler ON (native expiry). Exports AIRLOCK_TEST_MYSQL_URL (root over TCP,
# no password). Set AIRLOCK_TEST_MYSQL_URL beforehand to use another server.
# Installs mariadb-server with apt-get when the binaries are missing.

mariadb_dir=""

mariadb_find() {
  local name d
  for name in "$@"; do
    for d in /usr/sbin /usr/bin /usr/libexec /usr/local/sbin /usr/local/bin; do
      [[ -x "$d/$name" ]] && { printf '%s' "$d/$name"; return 0; }
    done
    command -v "$name" 2>/dev/null && return 0
  done
  return 1
}

mariadb_stop() {
  [[ -n "$mariadb_dir" ]] || return 0
  if [[ -f "$mariadb_dir/mariadbd.pid" ]]; then
    say "stopping MariaDB"
    local pid i
    pid="$(cat "$mariadb_dir/mariadbd.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]]; then
      kill "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$mariadb_dir"
}

mariadb_start() {
  local server install client run_as=() user_opt
  server="$(mariadb_find mariadbd mysqld)" && install="$(mariadb_find mariadb-install-db mysql_install_db)" \
    && client="$(mariadb_find mariadb mysql)" || {
    apt_install MariaDB mariadb-server mariadb-client
    server="$(mariadb_find mariadbd mysqld)" || die "MariaDB installed but mariadbd not found"
    install="$(mariadb_find mariadb-install-db mysql_install_db)" || die "MariaDB installed but mariadb-install-db not found"
    client="$(mariadb_find mariadb mysql)" || die "MariaDB installed but the mariadb client not found"
  }

  mariadb_dir="$(mktemp -d "${TMPDIR:-/tmp}/airlock-mariadb.XXXXXX")"
  on_exit mariadb_stop
  # mariadbd refuses to run as root unless told which user to be.
  if [[ "$(id -u)" == 0 ]]; then
    if id -u mysql >/dev/null 2>&1; then
      user_opt=mysql
      chown mysql "$mariadb_dir"
      run_as=(runuser -u mysql --)
    else
      user_opt=root
    fi
  else
    user_opt="$(id -un)"
  fi

  say "mariadb-install-db ($("$server" --version | awk '{print $3}')) in $mariadb_dir"
  "${run_as[@]}" "$install" --no-defaults --datadir="$mariadb_dir/data" --user="$user_opt" \
    --auth-root-authentication-method=normal --skip-test-db >"$mariadb_dir/install.log" 2>&1 \
    || { cat "$mariadb_dir/install.log" >&2; die "mariadb-install-db failed"; }

  local port attempt i
  for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    say "starting MariaDB on 127.0.0.1:$port"
    "${run_as[@]}" "$server" --no-defaults --user="$user_opt" --datadir="$mariadb_dir/data" \
      --bind-address=127.0.0.1 --port="$port" --socket="$mariadb_dir/mariadbd.sock" \
      --pid-file="$mariadb_dir/mariadbd.pid" --log-error="$mariadb_dir/server.log" \
      --event-scheduler=ON --skip-name-resolve --max-connections=500 \
      --innodb-buffer-pool-size=64M >/dev/null 2>&1 &
    for ((i = 0; i < 300; i++)); do
      if "$client" --no-defaults --protocol=tcp -h 127.0.0.1 -P "$port" -u root -e 'SELECT 1' >/dev/null 2>&1; then
        export AIRLOCK_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/"
        return 0
      fi
      [[ -f "$mariadb_dir/mariadbd.pid" ]] || [[ $i -lt 50 ]] || break
      sleep 0.1
    done
    echo "MariaDB start on port $port failed (attempt $attempt):" >&2
    tail -n 5 "$mariadb_dir/server.log" >&2 || true
    # Stop a half-started server before the next try.
    [[ -f "$mariadb_dir/mariadbd.pid" ]] && kill "$(cat "$mariadb_dir/mariadbd.pid")" 2>/dev/null
    sleep 1
  done
  die "could not start MariaDB; log: $mariadb_dir/server.log"
}

if [[ -n "${AIRLOCK_TEST_MYSQL_URL:-}" ]]; then
  say "using MariaDB from AIRLOCK_TEST_MYSQL_URL"
else
  mariadb_start
  say "AIRLOCK_TEST_MYSQL_URL=$AIRLOCK_TEST_MYSQL_URL"
fi
