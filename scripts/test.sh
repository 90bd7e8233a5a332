#!/usr/bin/env bash
# Runs Palisade's whole test suite, installing what the tests drive for real
# (curl, kubectl-compatible tools, proxies, nftables, ...) when run as root
# on a machine that lacks them. Tests that need root or Linux features print
# "SKIPPED: <why>" when they cannot run; under CI=true they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg_cmd in curl:curl; do
  cmd=${pkg_cmd#*:}; pkg=${pkg_cmd%%:*}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "WARNING: missing ${need_apt[*]}; some tests will fail. Install them (apt-get install ${need_apt[*]})." >&2
  fi
fi

cargo test --workspace --no-fail-fast
