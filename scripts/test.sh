#!/usr/bin/env bash
# Install what is missing, build, and run the default test suite (one
# Criterion binary; its closing "[====] Synthesis: Tested: ..." line
# summarises every test). Exits non-zero if anything fails.
#
#   bash scripts/test.sh
#
# Installing missing packages needs root or sudo; a machine that already
# has them needs neither. BUILD_DIR overrides the build directory.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$src/build}

bash "$src/scripts/setup.sh" --no-demo

printf '\n==> %s\n' "Running the unit suite (about a minute)"
# -v streams the test binary's output, so Criterion's Synthesis line is
# printed here; --print-errorlogs repeats the log of a failing test.
meson test -C "$build" --suite unit --print-errorlogs -v
