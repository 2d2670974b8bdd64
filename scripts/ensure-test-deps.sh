#!/usr/bin/env bash
# Install the real services the test suite starts itself: Mosquitto (tests run their own
# brokers on free ports), Debian's Chromium (browser tests), dbus-daemon and python3-dbusmock
# (the Bluetooth tests run bleak against a BlueZ mock on a private system bus; the mock runs
# under the system Python, so dbus-python and PyGObject come from Debian, not a compiler).
# PostgreSQL's server binaries (storage tests initdb their own cluster on a free port; the
# machine's own server, if any, is never used). The fonts the PDF report embeds (DejaVu Sans,
# Droid Sans Fallback for CJK): the hub needs them at run time too, so `--runtime` checks
# only those (`make demo`). npm: the accessibility browser tests install axe-core with it
# into var/test-cache (tests/support/axe.py).
# Idempotent.
set -euo pipefail
missing=()
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
[ -f /usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf ] || missing+=(fonts-droid-fallback)
if [ "${1:-}" != "--runtime" ]; then
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v dbus-daemon >/dev/null 2>&1 || [ -x /usr/bin/dbus-daemon ] || missing+=(dbus)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v npm >/dev/null 2>&1 || missing+=(npm)
/usr/bin/python3 -c 'import dbusmock, dbus, gi' >/dev/null 2>&1 || missing+=(python3-dbusmock)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing system packages: ${missing[*]}" >&2
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
if ! command -v apt-get >/dev/null; then
    echo "error: cannot install ${missing[*]}: no apt-get; install them with your package manager" >&2
    exit 1
fi
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
