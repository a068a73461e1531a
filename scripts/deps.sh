#!/usr/bin/env bash
# Installs what building, running and testing hutch needs on a Debian machine, and nothing
# that is already there. Runs as root (sandboxes need it).
set -euo pipefail

need=()
command -v cargo >/dev/null || { echo "deps: cargo is required (install Rust 1.95 with rustup)" >&2; exit 1; }
command -v bwrap >/dev/null || need+=(bubblewrap)          # the peer of the sessions benchmark
command -v python3 >/dev/null || need+=(python3)           # used by tests inside sandboxes
command -v ps >/dev/null || need+=(procps)
command -v unshare >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    echo "deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
