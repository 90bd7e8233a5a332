#!/usr/bin/env bash
# A short tour of Palisade on the embedded (SQLite) store: the seed's
# recycling scenario across two tenants. Uses a throw-away state file unless
# PALISADE_STATE is set.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p palisade-cli
palisade() { ./target/release/palisade "$@"; }
export PALISADE_STATE="${PALISADE_STATE:-$(mktemp -d)/state.db}"
step() { printf '\n\033[1m$ palisade %s\033[0m\n' "$*"; palisade "$@"; }

step init --pool fd00:cafe::/48
step create acme-corp web-frontend nginx:alpine 3
step create acme-corp api-backend node:18-alpine 2 --port 3000
step create big-corp database postgres:14 1 --port 5432
step allow acme-corp web-frontend api-backend --port 3000
step gateway create per-tenant acme-corp
step delete acme-corp web-frontend
step stats
step create acme-corp new-app nginx:alpine 1
step list
step tenant list
step stats
step check
printf '\nstate kept in %s\n' "$PALISADE_STATE"
