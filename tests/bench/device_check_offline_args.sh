#!/usr/bin/env bash
# The serving-mix runs of scripts/device-check.sh, on the CPU: each entry of its offline_runs
# list runs through `pagoda-bench offline` (stories260K, 2 requests, lengths cut to 4), so a
# flag the bench does not know or a value it refuses shows here and not in a GPU machine's
# few minutes. Usage: device_check_offline_args.sh PAGODA_BENCH DEVICE_CHECK_SH
set -uo pipefail
bench="$1"
script="$2"
mapfile -t runs < <(sed -n '/^offline_runs=(/,/^)/p' "$script" | sed -n 's/^ *"\(.*\)"$/\1/p')
if ((${#runs[@]} == 0)); then
  echo "no offline_runs entries found in $script"
  exit 1
fi
failed=0
for run in "${runs[@]}"; do
  name="${run%%|*}"
  args="${run#*|}"
  args="$(sed -E 's/--(input|output)-len [0-9]+/--\1-len 4/g' <<<"$args")"
  read -r -a argv <<<"$args"
  if out="$("$bench" offline --num-requests 2 --threads 1 "${argv[@]}" 2>&1)"; then
    echo "ok: $name"
  else
    echo "FAILED: $name: pagoda-bench offline ${argv[*]}"
    echo "$out" | tail -3
    failed=1
  fi
done
echo "${#runs[@]} runs checked"
exit $failed
