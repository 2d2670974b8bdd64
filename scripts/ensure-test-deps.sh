#!/usr/bin/env bash
# Install the real services the test suite starts itself: Mosquitto (tests run their own
# brokers on free ports) and Debian's Chromium (browser tests). Idempotent.
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing test dependencies: ${missing[*]}" >&2
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
if ! command -v apt-get >/dev/null; then
    echo "error: cannot install ${missing[*]}: no apt-get; install them with your package manager" >&2
    exit 1
fi
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
