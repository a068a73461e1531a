#!/usr/bin/env bash
# Installs what hutch needs, builds it, installs /usr/local/bin/hutch (and beside it
# /usr/local/bin/hutch-agent, the agent alone, which sandboxes then run as PID 1 at less memory
# per session) and serves with the embedded defaults (127.0.0.1:7420, data in /var/lib/hutch).
# Run as root.
#
# Where systemd runs, it installs and enables the `hutch` service (deploy/systemd/hutch.service)
# and starts it; elsewhere it runs `hutch serve` in the foreground.
# `--no-serve` stops after installing (the service is enabled but not started).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

serve=1
case ${1:-} in
"") ;;
--no-serve) serve= ;;
*) die install "usage: scripts/install.sh [--no-serve]" ;;
esac
if [[ $(id -u) != 0 ]]; then
    die install "run as root: sandboxes need namespaces and cgroups"
fi

say install "[1/3] installing what building and serving needs"
scripts/deps.sh serve
say install "[2/3] building hutch (release)"
start=$SECONDS
cargo build --release --locked -p hutch
install -m 0755 target/release/hutch-agent /usr/local/bin/hutch-agent
install -m 0755 target/release/hutch /usr/local/bin/hutch
say install "[3/3] installed /usr/local/bin/hutch: $(hutch --version), $(($(stat -c %s /usr/local/bin/hutch) / 1048576)) MiB, and hutch-agent beside it, built in $((SECONDS - start)) s"

if [[ -d /run/systemd/system ]]; then
    install -m 0644 deploy/systemd/hutch.service /etc/systemd/system/hutch.service
    systemctl daemon-reload
    systemctl enable hutch.service
    if [[ -n $serve ]]; then
        systemctl restart hutch.service
        say install "hutch runs as the systemd service hutch (systemctl status hutch; journalctl -u hutch)"
        echo "export TOKEN=\$(hutch token --sub default --ttl 24h)"
        echo "curl -H \"Authorization: Bearer \$TOKEN\" http://127.0.0.1:7420/v1/sessions"
    else
        say install "the systemd service hutch is enabled; start it with: systemctl start hutch"
    fi
    exit 0
fi
if [[ -z $serve ]]; then
    exit 0
fi
say install "no systemd here: serving in the foreground (see docs/operations.md to run it as a service)"
exec hutch serve
