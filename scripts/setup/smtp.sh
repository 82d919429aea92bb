# shellcheck shell=bash
# Sourced by scripts/test. Starts a real SMTP server (Python aiosmtpd, see
# scripts/smtp/server.py) on a free 127.0.0.1 port, requiring STARTTLS with a
# throwaway CA-signed certificate and AUTH, and storing every message as JSON.
#
# aiosmtpd is installed with pip into a venv under ~/.cache/airlock-test/ when
# missing (python3 with venv is needed; installed with apt-get if absent).
# Exports:
#   AIRLOCK_TEST_SMTP_ADDR      127.0.0.1:PORT
#   AIRLOCK_TEST_SMTP_DIR       folder of received messages (<n>.json)
#   AIRLOCK_TEST_SMTP_CA        PEM of the CA that signed the server certificate
#   AIRLOCK_TEST_SMTP_USER      AUTH user
#   AIRLOCK_TEST_SMTP_PASSWORD  AUTH password

smtp_dir=""
smtp_pid=""

stop_smtp() {
  [[ -n "$smtp_pid" ]] && kill "$smtp_pid" 2>/dev/null && wait "$smtp_pid" 2>/dev/null
  [[ -n "$smtp_dir" ]] && rm -rf "$smtp_dir"
  return 0
}

smtp_setup() {
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/airlock-test"
  local venv="$cache/smtp-venv"
  if ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
      [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null \
        || die "python3 with venv is missing; install python3-venv"
      say "installing python3-venv (apt-get)"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \
        || die "apt-get could not install python3-venv"
    fi
    command -v openssl >/dev/null || die "openssl is missing; install openssl"
    say "installing aiosmtpd (pip) into $venv"
    mkdir -p "$cache"
    python3 -m venv "$venv" || die "cannot create a venv in $venv"
    "$venv/bin/pip" install -q aiosmtpd || die "pip could not install aiosmtpd"
  fi
  smtp_dir="$(mktemp -d "${TMPDIR:-/tmp}/airlock-smtp.XXXXXX")"
  on_exit stop_smtp
  mkdir -p "$smtp_dir/mail"
  # A throwaway CA and a server certificate for 127.0.0.1 signed by it
  # (rustls refuses a self-signed CA certificate used as the server's own).
  (
    cd "$smtp_dir" || exit 1
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=airlock test SMTP CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile ext.cnf -out server.pem
  ) >"$smtp_dir/openssl.log" 2>&1 || { cat "$smtp_dir/openssl.log" >&2; die "cannot create the SMTP test certificate"; }
  local password
  password="$(openssl rand -hex 16)"
  printf '%s\n' "$password" >"$smtp_dir/password"
  local port attempt
  for attempt in 1 2 3; do
    port="$(free_port)"
    "$venv/bin/python" scripts/smtp/server.py --port "$port" --dir "$smtp_dir/mail" \
      --cert "$smtp_dir/server.pem" --key "$smtp_dir/server.key" \
      --user airlock-test --password-file "$smtp_dir/password" >"$smtp_dir/server.log" 2>&1 &
    smtp_pid=$!
    local i
    for ((i = 0; i < 50; i++)); do
      grep -q "smtp listening" "$smtp_dir/server.log" 2>/dev/null && break
      kill -0 "$smtp_pid" 2>/dev/null || break
      sleep 0.1
    done
    if grep -q "smtp listening" "$smtp_dir/server.log"; then
      export AIRLOCK_TEST_SMTP_ADDR="127.0.0.1:$port"
      export AIRLOCK_TEST_SMTP_DIR="$smtp_dir/mail"
      export AIRLOCK_TEST_SMTP_CA="$smtp_dir/ca.pem"
      export AIRLOCK_TEST_SMTP_USER=airlock-test
      export AIRLOCK_TEST_SMTP_PASSWORD="$password"
      say "AIRLOCK_TEST_SMTP_ADDR=$AIRLOCK_TEST_SMTP_ADDR (aiosmtpd $("$venv/bin/python" -c 'import aiosmtpd; print(aiosmtpd.__version__)'), STARTTLS + AUTH)"
      return 0
    fi
    kill "$smtp_pid" 2>/dev/null
    echo "SMTP server on port $port did not start (attempt $attempt):" >&2
    tail -n 5 "$smtp_dir/server.log" >&2
  done
  die "could not start the SMTP test server; log: $smtp_dir/server.log"
}

smtp_setup
