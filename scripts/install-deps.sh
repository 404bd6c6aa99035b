#!/usr/bin/env bash
# Installs, from Debian's archive, everything svmfuzz needs to build and run.
# Idempotent: installs only what is missing and says what it installs.
set -euo pipefail

PACKAGES=(
	# host C++ code, fuzzers, tests
	build-essential cmake ninja-build pkg-config clang llvm lld libclang-rt-14-dev
	libgtest-dev libgmock-dev libbenchmark-dev afl++
	# Python harness and its bindings
	python3 python3-dev python3-pybind11 pybind11-dev python3-pytest
	# QEMU from Debian's source package
	dpkg-dev meson libglib2.0-dev libpixman-1-dev libfdt-dev libslirp-dev flex bison
	qemu-system-data seabios qemu-utils
	# guest kernel
	linux-source-6.12 bc libelf-dev libssl-dev dwarves kmod cpio xz-utils rsync
	# initramfs
	busybox-static
	# campaign reports: plots, and the check of the page in a headless browser
	python3-matplotlib chromium
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install packages" >&2; exit 1; }
	SUDO="sudo"
fi

# QEMU comes from `apt-get source qemu`, which needs a deb-src entry.
ensure_deb_src() {
	if grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		return 1
	fi
	local mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	mirror=$(grep -rhsoE 'https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ | head -n1 | tr -d ' ')
	if [ -z "$mirror" ]; then
		echo "install-deps: no Debian mirror in the apt sources to add a deb-src entry for" >&2
		exit 1
	fi
	echo "install-deps: adding a deb-src entry for bookworm bookworm-updates ($mirror)"
	$SUDO tee /etc/apt/sources.list.d/svmfuzz-deb-src.sources >/dev/null <<SRC
Types: deb-src
URIs: ${mirror%/}
Suites: bookworm bookworm-updates
Components: main
Signed-By: $keyring
SRC
	return 0
}

need_update=0
ensure_deb_src && need_update=1

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -eq 0 ] && [ $need_update -eq 0 ]; then
	echo "install-deps: all ${#PACKAGES[@]} packages present"
	exit 0
fi

$SUDO apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: done"
