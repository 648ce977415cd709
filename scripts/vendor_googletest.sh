#!/usr/bin/env bash
# Brings the sources a device build needs but the GPU machine lacks (DESIGN.md §5) into the
# ignored folder third_party/, so that `run` can carry them (carry: ["third_party"]):
#   third_party/googletest      Debian's GoogleTest sources (/usr/src/googletest, package
#                               googletest), built there by scripts/device-check.sh;
#   third_party/nlohmann_json   Debian's nlohmann_json headers + CMake package files (package
#                               nlohmann-json3-dev): the top-level CMakeLists needs
#                               find_package(nlohmann_json 3 REQUIRED) in every build.
# Idempotent: a second run replaces the copies with fresh ones. About 5 MiB in all.
#   usage: scripts/vendor_googletest.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/third_party"
gtest_src="${GTEST_SRC:-/usr/src/googletest}"
json_include="${JSON_INCLUDE:-/usr/include/nlohmann}"
json_cmake="${JSON_CMAKE:-/usr/share/cmake/nlohmann_json}"

if [[ ! -f "$gtest_src/CMakeLists.txt" ]]; then
  echo "vendor_googletest: no GoogleTest sources at $gtest_src (apt-get install googletest)" >&2
  exit 1
fi
mkdir -p "$dest"

rm -rf "$dest/googletest.tmp"
cp -a "$gtest_src" "$dest/googletest.tmp"
rm -rf "$dest/googletest"
mv "$dest/googletest.tmp" "$dest/googletest"
echo "vendor_googletest: $gtest_src -> third_party/googletest ($(du -sh "$dest/googletest" | cut -f1))"

if [[ -f "$json_include/json.hpp" && -f "$json_cmake/nlohmann_jsonConfig.cmake" ]]; then
  # Prefix layout: the package files compute the prefix as three folders above themselves.
  rm -rf "$dest/nlohmann_json"
  mkdir -p "$dest/nlohmann_json/include" "$dest/nlohmann_json/share/cmake"
  cp -a "$json_include" "$dest/nlohmann_json/include/nlohmann"
  cp -a "$json_cmake" "$dest/nlohmann_json/share/cmake/nlohmann_json"
  echo "vendor_googletest: nlohmann_json -> third_party/nlohmann_json"
else
  echo "vendor_googletest: warning: nlohmann_json not found ($json_include, $json_cmake);" \
    "the device build needs it (apt-get install nlohmann-json3-dev)" >&2
fi
echo "vendor_googletest: carry [\"third_party\"] ($(du -sh "$dest" | cut -f1))"
