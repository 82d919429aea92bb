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
    [[ "$(id -u)" == 0 ]] || die "OpenSSH (sshd, ssh, ssh-keygen) is missing; install openssh-server and openssh-client"
    command -v apt-get >/dev/null || die "OpenSSH is missing and apt-get is not available; install openssh-server and openssh-client"
    say "installing OpenSSH (apt-get)"
    # A policy-rc.d that answers 101 stops the package from starting a system
    # sshd on port 22; only ours (on free ports) should run.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e "$policy" ]]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 755 "$policy"
      made_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
    if [[ "$rc" == 0 ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        openssh-server openssh-client >/dev/null || rc=$?
    fi
    [[ "$made_policy" == 1 ]] && rm -f "$policy"
    [[ "$rc" == 0 ]] || die "apt-get could not install openssh-server/openssh-client"
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
