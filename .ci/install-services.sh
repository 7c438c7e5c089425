#!/usr/bin/env bash
# Installs the services the tests run for real: Azurite (npm) for Azure Blob, OpenSSH's sshd for SFTP,
# Postgres and Redis for the distributed end-to-end test (the test starts them itself, on loopback
# ports, and stops them). Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .services
if [ ! -x .services/node_modules/.bin/azurite-blob ]; then
  if command -v npm >/dev/null 2>&1; then
    npm install --silent --no-audit --no-fund --prefix .services azurite@3 >/dev/null
  else
    echo "install-services: npm not found; Azure tests will be skipped" >&2
  fi
fi
# Debian packages: installed only when missing (`apt-get update` once, if anything is).
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # policy-rc.d 101: install the servers without starting them (the tests start their own).
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
    fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
      || echo "install-services: could not install ${missing[*]}; their tests will be skipped" >&2
    if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
  else
    echo "install-services: ${missing[*]} missing and not root; their tests will be skipped" >&2
  fi
fi
