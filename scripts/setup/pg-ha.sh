# shellcheck shell=bash
# Sourced by scripts/test: a throwaway PostgreSQL primary and a synchronous
# streaming-replication standby (pg_basebackup -R, synchronous_standby_names)
# on free 127.0.0.1 ports, for the failover test, which kills the primary
# with `kill -9` and promotes the standby. Exports
#   AIRLOCK_TEST_HA_URL          multi-host URL, target_session_attrs=read-write
#   AIRLOCK_TEST_HA_PRIMARY_DIR  data directory of the primary
#   AIRLOCK_TEST_HA_STANDBY_DIR  data directory of the standby
#   AIRLOCK_TEST_HA_PG_CTL       pg_ctl to promote it with
#   AIRLOCK_TEST_HA_RUN_AS       OS user that owns both (the test runs pg_ctl as it)
# Needs the PostgreSQL binaries scripts/test found or installed.

ha_dir=""
ha_user=""

ha_as() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u "$ha_user" -- "$@"
  else
    "$@"
  fi
}

ha_stop() {
  [[ -n "$ha_dir" ]] || return 0
  local d
  for d in "$ha_dir/standby" "$ha_dir/primary"; do
    [[ -f "$d/postmaster.pid" ]] && ha_as "$ha_bindir/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
  done
  rm -rf "$ha_dir"
}

ha_start() {
  ha_bindir="$(pg_bindir)"
  [[ -n "$ha_bindir" && -x "$ha_bindir/pg_basebackup" ]] \
    || die "pg-ha: pg_basebackup not found next to initdb (install postgresql)"
  if [[ "$(id -u)" == 0 ]]; then
    ha_user=postgres
    id -u "$ha_user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$ha_user"
  else
    ha_user="$(id -un)"
  fi
  ha_dir="$(mktemp -d "${TMPDIR:-/tmp}/airlock-pg-ha.XXXXXX")"
  on_exit ha_stop
  chmod 700 "$ha_dir"
  [[ "$(id -u)" == 0 ]] && chown "$ha_user" "$ha_dir"

  local p_port s_port
  p_port="$(free_port)"
  s_port="$(free_port)"
  while [[ "$s_port" == "$p_port" ]]; do s_port="$(free_port)"; done

  ha_as "$ha_bindir/initdb" -D "$ha_dir/primary" -U postgres -E UTF8 --auth=trust \
    >"$ha_dir/initdb.log" 2>&1 || { cat "$ha_dir/initdb.log" >&2; die "pg-ha: initdb failed"; }
  cat >"$ha_dir/primary/pg_hba.conf" <<'HBA'
local all         all                trust
host  all         all  127.0.0.1/32  trust
host  replication all  127.0.0.1/32  trust
HBA
  cat >"$ha_dir/primary/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $p_port
unix_socket_directories = '$ha_dir'
fsync = on
wal_level = replica
max_wal_senders = 5
synchronous_standby_names = '*'
synchronous_commit = on
max_connections = 200
CONF
  ha_as "$ha_bindir/pg_ctl" -D "$ha_dir/primary" -l "$ha_dir/primary.log" -w -t 60 start >/dev/null \
    || { tail -n 5 "$ha_dir/primary.log" >&2; die "pg-ha: primary did not start"; }
  ha_as "$ha_bindir/pg_basebackup" -h 127.0.0.1 -p "$p_port" -U postgres -D "$ha_dir/standby" -R -X stream \
    >"$ha_dir/basebackup.log" 2>&1 || { cat "$ha_dir/basebackup.log" >&2; die "pg-ha: pg_basebackup failed"; }
  # The copy carries the primary's settings; the standby gets its own port.
  # Once promoted it has no standby of its own: it must not wait for one (as
  # Patroni would, drop the synchronous setting on the new primary).
  sed -i -e "s/^port = .*/port = $s_port/" -e "/^synchronous_standby_names/d" \
    "$ha_dir/standby/postgresql.auto.conf"
  ha_as "$ha_bindir/pg_ctl" -D "$ha_dir/standby" -l "$ha_dir/standby.log" -w -t 60 start >/dev/null \
    || { tail -n 5 "$ha_dir/standby.log" >&2; die "pg-ha: standby did not start"; }
  # Wait until the standby streams synchronously: commits are acknowledged only once it has them.
  local i state=""
  for ((i = 0; i < 100; i++)); do
    state="$(ha_as "$ha_bindir/psql" -h 127.0.0.1 -p "$p_port" -U postgres -Atc \
      "SELECT sync_state FROM pg_stat_replication" postgres 2>/dev/null || true)"
    [[ "$state" == "sync" ]] && break
    sleep 0.1
  done
  [[ "$state" == "sync" ]] || die "pg-ha: the standby never became synchronous (state: ${state:-none})"
  say "PostgreSQL primary on 127.0.0.1:$p_port, synchronous standby on 127.0.0.1:$s_port"
  export AIRLOCK_TEST_HA_URL="postgres://postgres@127.0.0.1:$p_port,127.0.0.1:$s_port/postgres?target_session_attrs=read-write"
  export AIRLOCK_TEST_HA_PRIMARY_DIR="$ha_dir/primary"
  export AIRLOCK_TEST_HA_STANDBY_DIR="$ha_dir/standby"
  export AIRLOCK_TEST_HA_PG_CTL="$ha_bindir/pg_ctl"
  export AIRLOCK_TEST_HA_RUN_AS="$ha_user"
}

if [[ -z "${AIRLOCK_TEST_HA_URL:-}" ]]; then
  ha_start
fi
