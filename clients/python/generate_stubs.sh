#!/usr/bin/env bash
# Generates the Python gRPC stubs of pagoda_client into pagoda_client/_gen/ (gitignored) from
#   server/proto/pagoda/v1/generation.proto          (the pagoda.v1 API)
#   clients/python/protos/grpc_health/v1/health.proto (grpc.health.v1, copied from gRPC)
#   clients/python/protos/grpc_reflection/v1alpha/reflection.proto
# with Debian's protoc and grpc_python_plugin (packages protobuf-compiler and
# protobuf-compiler-grpc). protoc writes absolute imports (`from pagoda.v1 import ...`); they
# are rewritten to `from pagoda_client._gen.pagoda.v1 import ...` so the stubs live inside the
# package and never clash with other installed modules.
#
# usage: generate_stubs.sh [--if-needed]   (--if-needed: do nothing when _gen/ is up to date)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pkg="$here/pagoda_client"
out="$pkg/_gen"
protos=(
  "$root/server/proto/pagoda/v1/generation.proto"
  "$here/protos/grpc_health/v1/health.proto"
  "$here/protos/grpc_reflection/v1alpha/reflection.proto"
)

# One generator at a time (ctest may start several test processes at once).
if command -v flock >/dev/null; then
  exec 9>"$pkg/._gen.lock"
  flock 9
fi

if [ "${1:-}" = "--if-needed" ] && [ -f "$out/.stamp" ]; then
  stale=0
  for p in "${protos[@]}" "$0"; do [ "$p" -nt "$out/.stamp" ] && stale=1; done
  [ $stale -eq 0 ] && exit 0
fi

protoc="$(command -v protoc || true)"
plugin="$(command -v grpc_python_plugin || true)"
if [ -z "$protoc" ] || [ -z "$plugin" ]; then
  echo "generate_stubs: needs protoc and grpc_python_plugin" \
       "(apt-get install protobuf-compiler protobuf-compiler-grpc)" >&2
  exit 1
fi

tmp="$(mktemp -d "$pkg/._gen.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
"$protoc" -I "$root/server/proto" -I "$here/protos" \
  --python_out="$tmp" --grpc_python_out="$tmp" \
  --plugin=protoc-gen-grpc_python="$plugin" "${protos[@]}"

# Packages for every generated folder, and imports made package-relative.
find "$tmp" -type d -exec touch {}/__init__.py \;
find "$tmp" -name '*.py' -exec sed -i -E \
  's/^from (pagoda\.v1|grpc_health\.v1|grpc_reflection\.v1alpha) import /from pagoda_client._gen.\1 import /' {} +
touch "$tmp/.stamp"

# Swap the new tree in whole, so a concurrent reader never sees half of it.
old="$pkg/._gen.old.$$"
if [ -d "$out" ]; then mv -T "$out" "$old"; fi
mv -T "$tmp" "$out"
rm -rf "$old"
trap - EXIT
