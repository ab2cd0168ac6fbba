#!/usr/bin/env bash
# Set up upager on Debian 12 (or another Debian-like system): install the
# build dependencies that are missing, build, and run the demo.
#
#   sudo bash scripts/setup.sh [--no-demo] [--integ] [demo options...]
#
# --no-demo stops after the build (scripts/test.sh uses it). --integ also
# installs the programs of the integration suite (INTEG_PACKAGES; meson
# test --suite integ); their services are not started by the tests, which
# run private instances. Any other
# arguments go to build/examples/upager-demo, e.g. --seconds 3 or --json.
# BUILD_DIR overrides the build directory (default: build/ in the source
# tree). Packages are installed only when missing; installing needs root,
# or sudo when run as another user. Safe to run again.
set -euo pipefail

PACKAGES=(build-essential meson ninja-build pkg-config liburing-dev
	liblz4-dev libcriterion-dev gnuplot-nox python3)
INTEG_PACKAGES=(redis-server redis-tools memcached sqlite3 python3)

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$src/build}

step() {
	printf '\n==> %s\n' "$*"
}

die() {
	printf 'setup.sh: error: %s\n' "$*" >&2
	exit 1
}

# Debian and its derivatives (Ubuntu...): ID or ID_LIKE says debian.
check_debian() {
	local id="" id_like=""

	if [[ -r /etc/os-release ]]; then
		# shellcheck source=/dev/null
		id=$(. /etc/os-release && echo "${ID:-}")
		# shellcheck source=/dev/null
		id_like=$(. /etc/os-release && echo "${ID_LIKE:-}")
	fi
	if [[ " $id $id_like " != *" debian "* ]] ||
		! command -v dpkg >/dev/null || ! command -v apt-get >/dev/null; then
		die "this script supports Debian-like systems (apt-get, dpkg) only;" \
			"found '${id:-unknown}'. Install by hand: ${PACKAGES[*]}," \
			"then run: meson setup build && ninja -C build"
	fi
}

installed() {
	dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

# Run a command as root: directly, or through sudo.
as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "installing packages needs root: run this script as root" \
			"or install sudo"
	fi
}

install_missing() {
	local missing=() p

	step "Checking packages: ${PACKAGES[*]}"
	for p in "${PACKAGES[@]}"; do
		installed "$p" || missing+=("$p")
	done
	if [[ ${#missing[@]} -eq 0 ]]; then
		echo "All packages are installed."
		return
	fi
	echo "Missing: ${missing[*]}"
	step "apt-get update"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	step "Installing: ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends "${missing[@]}"
}

# Under sudo, build as the user who ran sudo, so that build/ stays theirs
# and `bash scripts/test.sh` can rebuild it later without sudo.
as_builder() {
	if [[ $EUID -eq 0 && -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
		sudo -u "$SUDO_USER" -- "$@"
	else
		"$@"
	fi
}

configure_and_build() {
	if [[ -e $build ]] && ! as_builder test -w "$build"; then
		die "$build is not writable by $(as_builder id -un)" \
			"(made by an earlier run as root?): remove it, or run" \
			"this script as its owner"
	fi
	if [[ -f $build/meson-private/coredata.dat ]]; then
		step "Reconfiguring $build"
		as_builder meson setup --reconfigure "$build" "$src"
	else
		step "Configuring $build"
		as_builder meson setup "$build" "$src"
	fi
	step "Building"
	as_builder ninja -C "$build"
}

run_demo() {
	local status=0

	step "Running the demo: ${build#"$src"/}/examples/upager-demo $*"
	"$build/examples/upager-demo" "$@" || status=$?
	if [[ $status -ne 0 ]]; then
		printf 'setup.sh: the demo failed with exit status %d\n' \
			"$status" >&2
		exit "$status"
	fi
}

main() {
	local demo=1

	while [[ ${1:-} == --no-demo || ${1:-} == --integ ]]; do
		if [[ $1 == --no-demo ]]; then
			demo=0
		else
			PACKAGES+=("${INTEG_PACKAGES[@]}")
		fi
		shift
	done
	check_debian
	install_missing
	configure_and_build
	if [[ $demo -eq 1 ]]; then
		run_demo "$@"
	fi
	step "setup.sh: done"
}

main "$@"
