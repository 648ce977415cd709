#!/usr/bin/env bash
# Installs the Debian 12 packages pagoda's build and tests need. Idempotent; silent when
# everything is already there. Uses sudo when not run as root.
set -euo pipefail

packages=(
  cmake ninja-build g++ ccache pkg-config git python3
  libsentencepiece-dev sentencepiece nlohmann-json3-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libyaml-cpp-dev
  libre2-dev libsqlite3-dev
  python3-grpcio python3-protobuf python3-matplotlib python3-jsonschema python3-yaml
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
