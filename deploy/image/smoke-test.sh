#!/usr/bin/env bash
# Starts the `palisade` image's filesystem as an OCI container under gVisor,
# without Docker or a registry, and runs `palisade --version` and
# `palisade proxy check` inside it as uid 65532 on a read-only root, the
# way the rendered Deployments run it.
#
# The rootfs mirrors deploy/image/Dockerfile's final stage: the binaries in
# /usr/local/bin plus the shared libraries they link (what
# distroless/cc-debian12 supplies), and a passwd entry for nonroot (65532).
#
# Usage: deploy/image/smoke-test.sh [BINARY_DIR]   (default target/debug)
# Needs runsc (Debian package runsc) and root; prints SKIPPED otherwise,
# and fails instead under CI=true.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_dir=${1:-target/debug}

skip() {
  echo "SKIPPED: image smoke test: $1"
  if [ "${CI:-}" = true ]; then exit 1; fi
  exit 0
}
command -v runsc >/dev/null 2>&1 || skip "runsc is not installed (apt-get install runsc)"
[ "$(id -u)" = 0 ] || skip "needs root to create the sandbox"
for b in palisade palisade-operator; do
  [ -x "$bin_dir/$b" ] || { echo "no $bin_dir/$b: build it first (cargo build -p palisade-cli -p palisade-operator)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'runsc --root "$work/state" delete -force palisade-smoke >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
root=$work/bundle/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/palisade" "$root/tmp" "$work/state"
cp "$bin_dir/palisade" "$bin_dir/palisade-operator" "$root/usr/local/bin/"
# Shared libraries, at the paths the dynamic loader looks them up.
libs=$(for b in palisade palisade-operator; do
  ldd "$bin_dir/$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u)
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'listen: 0.0.0.0:3128\ntenants: []\n' > "$root/etc/palisade/proxy.yaml"

run() {
  local id=palisade-smoke
  (cd "$work/bundle" && rm -f config.json && runsc spec -- "$@")
  # The pod security context Palisade renders: uid/gid 65532, read-only root.
  python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["user"] = {"uid": 65532, "gid": 65532}
c["process"]["terminal"] = False
c["root"]["readonly"] = True
json.dump(c, open(p, "w"))
PY
  runsc --root "$work/state" --network=none --ignore-cgroups run --bundle "$work/bundle" "$id"
}

out=$(run /usr/local/bin/palisade --version)
echo "in image: $out"
case "$out" in palisade*) ;; *) echo "unexpected --version output: $out" >&2; exit 1 ;; esac
out=$(run /usr/local/bin/palisade proxy check --config /etc/palisade/proxy.yaml)
echo "in image: $out"
case "$out" in *"ok (0 tenants)"*) ;; *) echo "proxy check failed in the image: $out" >&2; exit 1 ;; esac
run /usr/local/bin/palisade-operator --help >/dev/null
echo "image smoke test: ok"
