#!/usr/bin/env bash
# Installs what cifha's tests and demo need, only where it is missing:
# Debian's PostgreSQL server (binaries under /usr/lib/postgresql/*/bin), the
# postgres OS user, HAProxy, promtool and systemd-analyze. Go itself must
# already be installed.
set -euo pipefail

need_pg=1
for b in /usr/lib/postgresql/*/bin/postgres; do [ -x "$b" ] && need_pg=0; done
if [ "$need_pg" = 1 ] || ! id postgres >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL is missing; run as root (or: sudo apt-get install postgresql)" >&2
    exit 1
  fi
  echo ">> installing PostgreSQL (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Do not let the package create and start its own cluster on port 5432:
  # cifha manages its clusters itself.
  apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
  if [ -f /etc/postgresql-common/createcluster.conf ]; then
    sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
  fi
  apt-get install -y -qq --no-install-recommends postgresql postgresql-contrib >/dev/null
fi
# HAProxy: the tests check deploy/haproxy/haproxy.cfg with the real one.
if ! command -v haproxy >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "haproxy is missing; run as root (or: sudo apt-get install haproxy)" >&2
    exit 1
  fi
  echo ">> installing haproxy (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends haproxy >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends haproxy >/dev/null; }
  # The package starts a service we do not need.
  systemctl disable --now haproxy >/dev/null 2>&1 || service haproxy stop >/dev/null 2>&1 || true
fi
# promtool: the tests check and unit-test deploy/prometheus's alert rules.
# Debian ships it in the prometheus package, whose server must not start.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "promtool is missing; run as root (or: sudo apt-get install prometheus)" >&2
    exit 1
  fi
  echo ">> installing promtool (apt-get prometheus; its service is not started)"
  export DEBIAN_FRONTEND=noninteractive
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
# systemd-analyze: the tests verify deploy/systemd's units with it.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "systemd-analyze is missing; run as root (or: sudo apt-get install systemd)" >&2
    exit 1
  fi
  echo ">> installing systemd-analyze (apt-get systemd)"
  export DEBIAN_FRONTEND=noninteractive
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends systemd >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd >/dev/null; }
fi
# The fault lab (internal/lab, TestLab): network namespaces (iproute2) and
# packet filters (nftables) inside them.
for pair in ip:iproute2 nft:nftables; do
  cmd=${pair%%:*} pkg=${pair#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/sbin/$cmd" ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "$cmd is missing; run as root (or: sudo apt-get install $pkg)" >&2
      exit 1
    fi
    echo ">> installing $pkg (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null; }
  fi
done
# The lab's CIF client connects as CIF v1 does: Perl DBI/DBD::Pg, with
# ~/.cif read by Config::Simple; ss (iproute2) closes connections for
# cif-sync.
if ! perl -MDBD::Pg -MConfig::Simple -e 1 >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "Perl's DBD::Pg or Config::Simple is missing; run as root (or: sudo apt-get install libdbd-pg-perl libconfig-simple-perl)" >&2
    exit 1
  fi
  echo ">> installing libdbd-pg-perl libconfig-simple-perl (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends libdbd-pg-perl libconfig-simple-perl >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends libdbd-pg-perl libconfig-simple-perl >/dev/null; }
fi
if ! command -v go >/dev/null 2>&1; then
  echo "Go is not on PATH (expected /usr/local/go/bin/go)" >&2
  exit 1
fi
