#!/usr/bin/env bash
# The nightly regression, as CI runs it and as anyone can run it here:
#   1. installs what is missing and builds everything (through the cache);
#   2. replays the corpus against its expectations on the default kernel (6.12)
#      and, side by side, on 6.1 (Debian's linux-source-6.1, or the kernel tree
#      in NIGHTLY_AGAINST; NIGHTLY_AGAINST=none leaves it out);
#   3. runs a campaign of NIGHTLY_MINUTES (default 30) from the corpus, triages
#      it and writes its report.
# Everything lands in one directory (the first argument, default
# build/nightly/<UTC date and time>): regress/ (results, regress.html),
# junit.xml, campaign/ (with report/index.html). The exit code is 1 when a
# corpus program regressed or the campaign found something no known outcome
# explains.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(realpath -m "${1:-build/nightly/$(date -u +%Y%m%d-%H%M)}")
minutes=${NIGHTLY_MINUTES:-30}
against=${NIGHTLY_AGAINST:-}
mkdir -p "$out"

scripts/install-deps.sh
cmake -B build -G Ninja
cmake --build build

if [ -z "$against" ]; then
	# Debian's 6.1 source (regress unpacks it into the cache once).
	if ! dpkg-query -W -f='${Status}' linux-source-6.1 2>/dev/null | grep -q 'install ok installed'; then
		SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
		$SUDO apt-get install -y -qq --no-install-recommends linux-source-6.1 >/dev/null
	fi
	against=debian-6.1
fi
against_args=()
[ "$against" != none ] && against_args=(--against "$against")

status=0
./svmfuzz regress --results "$out/regress" --junit "$out/junit.xml" "${against_args[@]}" || status=1
./svmfuzz fuzz --workdir "$out/campaign" --minutes "$minutes" --progress-seconds 60
./svmfuzz triage "$out/campaign"
./svmfuzz report "$out/campaign"
unknown=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["unknown"])' \
	"$out/campaign/triage.json" 2>/dev/null || echo 0)
if [ "$unknown" != 0 ]; then
	echo "nightly: the campaign found $unknown finding(s) no known outcome explains" >&2
	status=1
fi
echo "nightly: reports in $out (regress/regress.html, junit.xml, campaign/report/index.html)"
exit $status
