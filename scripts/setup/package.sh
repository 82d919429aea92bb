# shellcheck shell=bash
# Sourced by scripts/test: what the Debian package test needs (dpkg-deb,
# systemd-analyze, setpriv). Installs them with apt-get when missing; the
# test itself installs and purges the package with dpkg (root).

command -v dpkg-deb >/dev/null || apt_install dpkg-deb dpkg
command -v systemd-analyze >/dev/null || apt_install systemd-analyze systemd
command -v setpriv >/dev/null || apt_install setpriv util-linux
say "package tools: $(dpkg-deb --version | head -1 | awk '{print $1, $2, $NF}'), $(systemd-analyze --version | head -1)"
