#!/usr/bin/env bash
# Installs what building, running and testing hutch needs on a Debian machine, and nothing
# that is already there. Runs as root (sandboxes need it).
set -euo pipefail

need=()
command -v cargo >/dev/null || { echo "deps: cargo is required (install Rust 1.95 with rustup)" >&2; exit 1; }
command -v bwrap >/dev/null || need+=(bubblewrap)          # the peer of the sessions benchmark
# The default image is a read-only view of the host's /usr: what sandboxes run comes from here.
# The interpreter's Python environment (seeds 000 and 003 use IPython, numpy, pandas and
# matplotlib), node for JavaScript contexts, pip for `libraries`.
for pkg in python3 python3-ipython python3-numpy python3-pandas python3-matplotlib python3-pip; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
done
[[ -x /usr/bin/node ]] || need+=(nodejs)
command -v ps >/dev/null || need+=(procps)
command -v unshare >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)              # the docs test's private network
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    echo "deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# schemathesis (from PyPI, into a virtualenv under target/) tests the API contract against a
# live server: crates/hutch/tests/schemathesis.rs.
SCHEMATHESIS_VERSION=4.32.5
venv="$(cd "$(dirname "$0")/.." && pwd)/target/venv-schemathesis"
if [[ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != *" $SCHEMATHESIS_VERSION" ]]; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        echo "deps: installing python3-venv"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "deps: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# ipykernel driven by jupyter_client (from PyPI, into target/venv-peers) is the peer of the
# interpreter benchmark (`hutch bench interpreter`); without it the peer is reported skipped.
peers="$(cd "$(dirname "$0")/.." && pwd)/target/venv-peers"
if ! "$peers/bin/python" -c 'import ipykernel, jupyter_client' 2>/dev/null; then
    echo "deps: installing ipykernel and jupyter_client into $peers"
    rm -rf "$peers"
    python3 -m venv "$peers"
    "$peers/bin/pip" install -q --disable-pip-version-check ipykernel jupyter_client
fi

# The Python SDK (python/) and its tests, into a virtualenv under target/.
sdk_venv="$(cd "$(dirname "$0")/.." && pwd)/target/venv-sdk"
if ! "$sdk_venv/bin/python" -c 'import hutch, httpx, websockets, pytest' 2>/dev/null; then
    echo "deps: installing the Python SDK and pytest into $sdk_venv"
    if [[ ! -x "$sdk_venv/bin/python" ]]; then
        if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq python3-venv >/dev/null
        fi
        python3 -m venv "$sdk_venv"
    fi
    "$sdk_venv/bin/pip" install -q --disable-pip-version-check -e "$(dirname "$sdk_venv")/../python" pytest
fi

# openapi-python-client (from PyPI, into a virtualenv under target/) generates a Python client
# from docs/openapi.json in a test: crates/hutch-server/tests/python_client.rs. python-dateutil
# is what the generated client imports besides httpx and attrs.
OPENAPI_PYTHON_CLIENT_VERSION=0.29.1
opc_venv="$(cd "$(dirname "$0")/.." && pwd)/target/venv-openapi-python-client"
if [[ "$("$opc_venv/bin/openapi-python-client" --version 2>/dev/null)" != *" $OPENAPI_PYTHON_CLIENT_VERSION" ]] \
    || ! "$opc_venv/bin/python" -c 'import dateutil' 2>/dev/null; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        echo "deps: installing python3-venv"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "deps: installing openapi-python-client $OPENAPI_PYTHON_CLIENT_VERSION into $opc_venv"
    rm -rf "$opc_venv"
    python3 -m venv "$opc_venv"
    "$opc_venv/bin/pip" install -q --disable-pip-version-check \
        "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION" python-dateutil
fi
