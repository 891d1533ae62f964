#!/bin/sh
# cifha's postinst: make /etc/cifha (configuration and secrets; each secret
# file is mode 0600, owned by postgres, see install.md) and tell systemd
# about the units. Nothing is enabled or started: an agent must not start
# before its configuration and secrets exist.
set -e
if [ "$1" = configure ]; then
  install -d -m 0755 -o root -g root /etc/cifha
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
  fi
fi
exit 0
