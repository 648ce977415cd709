#!/usr/bin/env bash
# The README's first command: install what is needed, build, and let the bundled stories260K
# model tell a story from the command line.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh >/dev/null
build/cli/pagoda generate --prompt "${1:-Once upon a time}" --max-tokens 200 --seed 42
