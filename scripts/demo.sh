#!/usr/bin/env bash
# The README's first command: install what is needed, build, serve the bundled stories260K model
# over gRPC on a free loopback port, stream a story through the Python client
# (clients/python/pagoda-client), and stop the server with SIGTERM.
#   scripts/demo.sh ["prompt"]
set -euo pipefail
cd "$(dirname "$0")/.."
prompt="${1:-Once upon a time}"
ready_timeout_s="${PAGODA_DEMO_READY_TIMEOUT:-60}"

scripts/setup.sh
scripts/build.sh >/dev/null
clients/python/generate_stubs.sh
if ! /usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null; then
  echo "demo: /usr/bin/python3 cannot import grpc and protobuf (Debian packages python3-grpcio" \
       "and python3-protobuf)" >&2
  exit 1
fi

work="$(mktemp -d -t pagoda-demo.XXXXXX)"
server_pid=""
cleanup() {
  local rc=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ $rc -ne 0 ] && [ -s "$work/server.log" ]; then
    echo "demo: the server's log:" >&2
    tail -n 30 "$work/server.log" >&2
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

build/cli/pagoda serve --port 0 >"$work/server.out" 2>"$work/server.log" &
server_pid=$!

# The port: the server prints "pagoda serve: listening on HOST:PORT" once it listens.
# Then readiness: the health service says SERVING once the model is loaded and warmed up.
client=(clients/python/pagoda-client)
target=""
deadline=$((SECONDS + ready_timeout_s))
while :; do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    wait "$server_pid" && rc=0 || rc=$?
    server_pid=""
    echo "demo: the server exited (code $rc) before it was ready" >&2
    exit 1
  fi
  if [ -z "$target" ]; then
    target="$(sed -n 's/^pagoda serve: listening on \([^ ]*\)$/\1/p' "$work/server.out" | head -n 1)"
  fi
  if [ -n "$target" ] && "${client[@]}" --target "$target" --timeout 2 health --ready \
       >/dev/null 2>&1; then
    break
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "demo: the server was not ready within ${ready_timeout_s} s" \
         "(${target:-no listening line yet})" >&2
    exit 1
  fi
  sleep 0.2
done
echo "demo: pagoda serve is ready on $target; streaming a story through pagoda-client" >&2

"${client[@]}" --target "$target" stream --echo --prompt "$prompt" --max-tokens 200 \
  --temperature 0.8 --top-p 0.95 --seed 42

kill -TERM "$server_pid"
wait "$server_pid" && rc=0 || rc=$?
server_pid=""
if [ $rc -ne 0 ]; then
  echo "demo: the server exited with code $rc after SIGTERM" >&2
  exit 1
fi
echo "demo: server stopped" >&2
