#!/usr/bin/env bash
# Installs what hutch needs, builds it, installs /usr/local/bin/hutch and serves with the
# embedded defaults (127.0.0.1:7420, data in /var/lib/hutch). Run as root.
# `--no-serve` stops after installing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
    echo "install: run as root: sandboxes need namespaces and cgroups" >&2
    exit 1
fi
scripts/deps.sh
cargo build --release --locked -p hutch
install -m 0755 target/release/hutch /usr/local/bin/hutch
echo "install: /usr/local/bin/hutch $(hutch --version)"
if [[ ${1:-} == --no-serve ]]; then
    exit 0
fi
exec hutch serve
