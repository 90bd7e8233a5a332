#!/usr/bin/env bash
# Runs Palisade's whole test suite, first installing what the tests drive
# for real when it is missing: Debian packages (below), and a Python venv
# under target/ with the offline Kubernetes and Cilium schema validators.
# Tests whose tools are missing print "SKIPPED: <why>"; under CI=true they
# fail instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package: curl drives the proxy; ip, nft and runsc build
# the lab's dataplane; chromium runs the dashboard's browser tests;
# containerd loads the gVisor installer's config (palisade-kube tests/cluster.rs);
# git clones a rendered GitOps tree (palisade-kube tests/gitops.rs);
# dig asks the lab's DNS stand-in (palisade-lab tests/dns.rs).
missing=()
for pair in curl:curl ip:iproute2 nft:nftables runsc:runsc chromium:chromium containerd:containerd git:git dig:bind9-dnsutils; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "WARNING: missing ${missing[*]}; the tests that need them will say SKIPPED (apt-get install ${missing[*]})" >&2
  fi
fi
command -v kubectl >/dev/null 2>&1 || echo "WARNING: kubectl is missing; kustomize and plugin tests will fail" >&2

venv=target/venv-kube
# cel-python evaluates the rendered admission policy's CEL.
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! "$venv/bin/python3" -c 'import celpy' 2>/dev/null; then
  [ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q pyyaml jsonschema regex kubernetes-validate cel-python
fi
export PALISADE_VENV="$PWD/$venv"

# The dashboard's browser test: playwright-core from npm (it downloads no
# browser) drives Debian's /usr/bin/chromium.
if command -v npm >/dev/null 2>&1; then
  (cd crates/palisade-dashboard/browser && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "WARNING: npm is missing; the dashboard's browser test will say SKIPPED (apt-get install nodejs npm)" >&2
fi

# The container image's filesystem, started under runsc (deploy/image).
cargo build -p palisade-cli -p palisade-operator
bash deploy/image/smoke-test.sh target/debug

cargo test --workspace --no-fail-fast
