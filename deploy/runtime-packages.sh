#!/usr/bin/env bash
# Prints the Debian/Ubuntu packages that own the shared libraries the given executables load
# (as ldd resolves them), one per line, sorted. deploy/Dockerfile runs it in its build stage on
# `pagoda` and libpagoda_spm_shim.so, and its runtime stage installs exactly these packages, so
# the runtime image carries the run-time libraries and none of the -dev packages, compilers or
# test tools. Libraries of the CUDA toolkit (under /usr/local/cuda*, or the NVIDIA driver's)
# are left out: the CUDA runtime base image provides them. Exits 1 when a library is missing or
# owned by no package.
#   deploy/runtime-packages.sh build/cli/pagoda build/tokenizer/libpagoda_spm_shim.so
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 EXECUTABLE_OR_LIBRARY..." >&2; exit 2; }

libs=()
for bin in "$@"; do
  [ -e "$bin" ] || { echo "runtime-packages: $bin does not exist" >&2; exit 1; }
  deps=$(ldd "$bin")
  if grep -q "not found" <<<"$deps"; then
    echo "runtime-packages: $bin: unresolved libraries:" >&2
    grep "not found" <<<"$deps" >&2
    exit 1
  fi
  # Lines are "libx.so.N => /path (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)";
  # linux-vdso has no file.
  while read -r path; do
    case "$(readlink -f "$path")" in /usr/local/cuda*) continue ;; esac
    libs+=("$path")
  done \
    < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$deps")
done

# Each library under every spelling dpkg may know it by: as ldd says, resolved, and with or
# without /usr (usr-merged systems). One dpkg -S call for all of them.
declare -A spellings=()
candidates=()
for lib in "${libs[@]}"; do
  real=$(readlink -f "$lib")
  s=()
  for p in "$lib" "$real"; do
    s+=("$p")
    case "$p" in /usr/*) s+=("${p#/usr}") ;; *) s+=("/usr$p") ;; esac
  done
  spellings[$lib]="${s[*]}"
  candidates+=("${s[@]}")
done
declare -A owner=()
# "pkg:arch: /path" (or "pkg1, pkg2: /path" for shared paths): the first package.
while IFS= read -r line; do
  path=${line##*: }
  pkg=${line%%: /*}
  pkg=${pkg%%,*}
  owner[$path]=${pkg%%:*}
done < <(dpkg -S "${candidates[@]}" 2>/dev/null || true)

declare -A packages=()
for lib in "${libs[@]}"; do
  found=""
  for p in ${spellings[$lib]}; do
    if [ -n "${owner[$p]:-}" ]; then found=${owner[$p]}; break; fi
  done
  [ -n "$found" ] || { echo "runtime-packages: no package owns $lib" >&2; exit 1; }
  packages[$found]=1
done
printf '%s\n' "${!packages[@]}" | sort
