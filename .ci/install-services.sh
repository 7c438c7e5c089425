#!/usr/bin/env bash
# Installs the services the tests run for real: Azurite (npm) for Azure Blob, OpenSSH's sshd for SFTP.
# Idempotent and quiet when everything is already there.
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
if ! [ -x /usr/sbin/sshd ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null) \
      || echo "install-services: could not install openssh-server; SFTP tests will be skipped" >&2
  else
    echo "install-services: /usr/sbin/sshd missing and not root; SFTP tests will be skipped" >&2
  fi
fi
