# shellcheck shell=bash
# Sourced by scripts/test. The ssh provider's tests start their own sshd per
# test (non-daemon, temp config, free loopback port); this only makes sure
# OpenSSH is installed and tells the tests where sshd is.
#
# Installs openssh-server + openssh-client with apt-get when sshd, ssh or
# ssh-keygen is missing, without starting the distribution's sshd on port 22,
# and creates sshd's privilege-separation folder (/run/sshd), which sshd
# refuses to start without when it runs as root.

sshd_setup() {
  local sshd=/usr/sbin/sshd
  if [[ ! -x "$sshd" ]] || ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null; then
    apt_install "OpenSSH (sshd, ssh, ssh-keygen)" openssh-server openssh-client
    [[ -x "$sshd" ]] || die "openssh-server installed but $sshd is missing"
  fi
  if [[ "$(id -u)" == 0 && ! -d /run/sshd ]]; then
    mkdir -p /run/sshd
    chmod 755 /run/sshd
  fi
  export AIRLOCK_TEST_SSHD="$sshd"
  say "AIRLOCK_TEST_SSHD=$AIRLOCK_TEST_SSHD ($(ssh -V 2>&1))"
}

sshd_setup
