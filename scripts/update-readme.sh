#!/usr/bin/env bash
# Regenerate the generated parts of README.md from their sources:
#   - the option table, from the real option table (`upager-demo --options`,
#     run with no UPG_* variables set);
#   - the API example, from examples/minimal.c.
# Each part sits between "<!-- NAME:begin -->" and "<!-- NAME:end -->".
#
#   bash scripts/update-readme.sh          rewrite README.md
#   bash scripts/update-readme.sh --check  exit 1 if README.md is stale
#
# Needs a build (BUILD_DIR, default build/).
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$src/build}
readme=$src/README.md
demo=$build/examples/upager-demo

[[ -x $demo ]] || {
	echo "update-readme.sh: $demo not found; build first" >&2
	exit 1
}

# "variable  value  default  meaning" columns (two or more spaces apart) to
# a Markdown table without the value column.
options_table() {
	env -i "$demo" --options | awk -F '  +' '
		NR == 1 { print "| Variable | Default | Meaning |"
			  print "|---|---|---|"; next }
		{ printf "| `%s` | `%s` | %s |\n", $1, $3, $4 }'
}

api_example() {
	printf '```c\n'
	sed -n '/^#include/,$p' "$src/examples/minimal.c"
	printf '```\n'
}

# Replace the lines between the markers of part $1 with the file $2.
splice() {
	awk -v name="$1" -v file="$2" '
		$0 == "<!-- " name ":begin -->" {
			print; while ((getline l < file) > 0) print l; skip = 1
			next }
		$0 == "<!-- " name ":end -->" { skip = 0 }
		!skip'
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
options_table >"$tmp/options"
api_example >"$tmp/example"
splice options "$tmp/options" <"$readme" | splice example "$tmp/example" \
	>"$tmp/README.md"

if [[ ${1:-} == --check ]]; then
	if ! diff -u "$readme" "$tmp/README.md"; then
		echo "README.md is stale: run bash scripts/update-readme.sh" >&2
		exit 1
	fi
	exit 0
fi
cp "$tmp/README.md" "$readme"
echo "README.md updated"
