#!/usr/bin/env bash
# Make sure `python -m venv` works (Debian ships venv/ensurepip in python3-venv).
set -euo pipefail
python="${1:-python3}"
if ! command -v "$python" >/dev/null; then
    echo "error: $python not found; install Python >= 3.11 (apt-get install python3 python3-venv)" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: Glucohub needs Python >= 3.11, $python is $("$python" --version)" >&2
    exit 1
fi
probe=$(mktemp -d)
if "$python" -m venv "$probe/v" >/dev/null 2>&1; then
    rm -rf "$probe"
    exit 0
fi
rm -rf "$probe"
echo "python venv support is missing; installing python3-venv" >&2
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq python3-venv
