#!/usr/bin/env bash
# Installs what hutch needs on a Debian machine, and nothing that is already there. Run as root.
#
#   scripts/deps.sh serve   building and serving: a C toolchain, Rust, and what sandboxes run
#                           (scripts/install.sh)
#   scripts/deps.sh test    the above, plus the test and benchmark tools (scripts/test.sh)
#
# Each path is one function below; add a new need to the path that uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Rust, at the version rust-toolchain.toml pins. Debian's own rustc is older than hutch needs,
# so Rust comes from rustup: Debian's package when this release has one, otherwise the user
# installs it (the exact command is printed).
ensure_rust() {
    command -v cargo >/dev/null && return
    local channel
    channel=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
    local rustup_cmd=(rustup toolchain install "$channel" --profile minimal -c rustfmt -c clippy)
    if ! command -v rustup >/dev/null; then
        if apt-cache policy rustup 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            apt_install rustup
        else
            die deps "cargo is missing, and this Debian release has no rustup package. Install Rust $channel, then run this again:
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain $channel -c rustfmt -c clippy"
        fi
    fi
    say deps "installing Rust $channel with rustup"
    if ! "${rustup_cmd[@]}"; then
        die deps "rustup could not install Rust $channel (see above). Once this machine can reach static.rust-lang.org, run: ${rustup_cmd[*]}"
    fi
    hash -r
    command -v cargo >/dev/null || die deps "rustup installed Rust $channel but cargo is not on PATH; add $HOME/.cargo/bin to PATH and run this again"
}

# Building and serving.
deps_serve() {
    local need=()
    # The build: `cc` links the binary and compiles the C parts of some crates (SQLite, ring).
    command -v cc >/dev/null || need+=(build-essential)
    command -v pkg-config >/dev/null || need+=(pkg-config)
    [[ -e /etc/ssl/certs/ca-certificates.crt ]] || need+=(ca-certificates) # cargo's downloads
    # The default image is a read-only view of the host's /usr: what sandboxes run comes from
    # here. The interpreter's Python environment (seeds 000 and 003 use IPython, numpy, pandas
    # and matplotlib), node for JavaScript contexts, pip for `libraries`.
    local pkg
    for pkg in python3 python3-ipython python3-numpy python3-pandas python3-matplotlib python3-pip; do
        pkg_installed "$pkg" || need+=("$pkg")
    done
    [[ -x /usr/bin/node ]] || need+=(nodejs)
    command -v npm >/dev/null || need+=(npm) # builds the web console (console/)
    command -v ps >/dev/null || need+=(procps)
    command -v unshare >/dev/null || need+=(util-linux)
    command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs) # per-session disk quotas
    command -v mkfs.btrfs >/dev/null || need+=(btrfs-progs) # the shared disk pool (quotas)
    command -v curl >/dev/null || need+=(curl)
    # Sessions with network (--network-allowed): veth pairs and token buckets through ip and
    # tc, filtering and NAT through nft.
    command -v ip >/dev/null || need+=(iproute2)
    command -v nft >/dev/null || need+=(nftables)
    if ((${#need[@]})); then
        apt_install "${need[@]}"
    fi
    ensure_rust
    build_console
}

# The web console (console/): its packages as package-lock.json pins them, then its build into
# console/dist, which building hutch embeds (crates/hutch-server/build.rs). Rebuilt only when
# a source is newer than the last build.
build_console() {
    if ! (cd console && npm ls --silent >/dev/null 2>&1); then
        (cd console && npm ci --no-audit --no-fund)
    fi
    local sources=(console/src console/build.mjs console/package-lock.json typescript/src/errors.ts typescript/src/generated)
    if [[ -f console/dist/index.html ]] && [[ -z $(find "${sources[@]}" -newer console/dist/index.html) ]]; then
        return
    fi
    say deps "building the web console"
    (cd console && npm run build)
}

# Tests and benchmarks: the API contract checker, the Python SDK's tests, shell checks, and
# the peers the benchmarks compare against.
deps_test() {
    local need=()
    command -v bwrap >/dev/null || need+=(bubblewrap)      # the peer of the sessions benchmark
    command -v shellcheck >/dev/null || need+=(shellcheck) # checks the scripts
    command -v systemd-analyze >/dev/null || need+=(systemd) # checks the service unit
    python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    command -v ip >/dev/null || need+=(iproute2)           # the docs test's private network
    command -v openssl >/dev/null || need+=(openssl)       # the image tests' token service
    pkg_installed chromium || need+=(chromium)             # the console's browser test
    # OCI image tests (crates/hutch-image/tests) run their own registry and fill it with images
    # built from real files: Debian's docker-registry, skopeo and umoci, busybox-static for a
    # no-libc image, and mmdebstrap for a Debian image with python3 (built once, cached in
    # target/).
    local pkg
    for pkg in docker-registry skopeo umoci busybox-static mmdebstrap; do
        pkg_installed "$pkg" || need+=("$pkg")
    done
    # The musl image of the session image tests (crates/hutch/tests/images.rs): a C program
    # linked by musl-gcc, beside busybox.
    pkg_installed musl-tools || need+=(musl-tools)
    # The clock-jump test (crates/hutch/tests/lifecycle.rs) shifts a server's wall clock with
    # libfaketime; the fuzz runner (scripts/fuzz.sh) builds libFuzzer with a C++ compiler.
    pkg_installed libfaketime || need+=(libfaketime)
    command -v c++ >/dev/null || need+=(g++)
    # The peer of the idle benchmark: podman containers, run by runc (crun refuses hybrid
    # cgroup hosts).
    for pkg in podman runc; do
        pkg_installed "$pkg" || need+=("$pkg")
    done
    # The store tests (crates/hutch-server/src/store/testing.rs) run against a real
    # PostgreSQL they start themselves (initdb + postgres on a temporary directory); setpriv
    # (util-linux) runs it as the package's postgres user.
    pkg_installed postgresql || need+=(postgresql)
    if ((${#need[@]})); then
        apt_install "${need[@]}"
    fi

    # schemathesis (from PyPI) tests the API contract against a live server:
    # crates/hutch/tests/schemathesis.rs.
    local schemathesis_version=4.32.5 venv="$PWD/target/venv-schemathesis"
    if [[ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != *" $schemathesis_version" ]]; then
        rm -rf "$venv"
        pip_install "$venv" "schemathesis==$schemathesis_version"
    fi

    # ipykernel driven by jupyter_client is the peer of the interpreter benchmark
    # (`hutch bench interpreter`); without it the peer is reported skipped.
    local peers="$PWD/target/venv-peers"
    if ! "$peers/bin/python" -c 'import ipykernel, jupyter_client' 2>/dev/null; then
        rm -rf "$peers"
        pip_install "$peers" ipykernel jupyter_client
    fi

    # The Python SDK (python/) and its tests; build, setuptools and wheel make the wheel its
    # packaging test installs into a fresh environment.
    local sdk_venv="$PWD/target/venv-sdk"
    if ! "$sdk_venv/bin/python" -c 'import hutch, httpx, sniffio, websockets, pytest, build, setuptools, wheel' 2>/dev/null; then
        pip_install "$sdk_venv" -e "$PWD/python" pytest build setuptools wheel
    fi

    # The MCP server's tests (crates/hutch-mcp/tests/python) drive it with the official MCP
    # Python client, over streamable HTTP and stdio; they start servers with the Python SDK
    # tests' helpers, so the SDK is installed beside it.
    local mcp_version=2.3.0 mcp_venv="$PWD/target/venv-mcp"
    if [[ "$("$mcp_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null)" != "$mcp_version" ]] \
        || ! "$mcp_venv/bin/python" -c 'import hutch, pytest' 2>/dev/null; then
        rm -rf "$mcp_venv"
        pip_install "$mcp_venv" "mcp==$mcp_version" pytest -e "$PWD/python"
    fi

    # The TypeScript SDK (typescript/) and its tests: node (Debian's nodejs, installed above
    # for JavaScript contexts), npm, and the packages package-lock.json pins.
    command -v npm >/dev/null || apt_install npm
    if ! (cd typescript && npm ls --silent >/dev/null 2>&1); then
        (cd typescript && npm ci --no-audit --no-fund)
    fi

    # moto in server mode stands in for S3 in the tests of storage contexts on object storage
    # (crates/hutch/tests/common/s3.rs, run by scripts/test.sh with HUTCH_TEST_BLOB_STORE=s3).
    local moto_version=5.2.5 moto_venv="$PWD/target/venv-moto"
    if [[ "$("$moto_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" != "$moto_version" ]] \
        || [[ ! -x "$moto_venv/bin/moto_server" ]]; then
        rm -rf "$moto_venv"
        pip_install "$moto_venv" "moto[server]==$moto_version"
    fi

    # openapi-python-client generates a Python client from docs/openapi.json in a test:
    # crates/hutch-server/tests/python_client.rs. python-dateutil is what the generated client
    # imports besides httpx and attrs.
    local opc_version=0.29.1 opc_venv="$PWD/target/venv-openapi-python-client"
    if [[ "$("$opc_venv/bin/openapi-python-client" --version 2>/dev/null)" != *" $opc_version" ]] \
        || ! "$opc_venv/bin/python" -c 'import dateutil' 2>/dev/null; then
        rm -rf "$opc_venv"
        pip_install "$opc_venv" "openapi-python-client==$opc_version" python-dateutil
    fi
}

case ${1:-} in
serve) deps_serve ;;
test)
    deps_serve
    deps_test
    ;;
*) die deps "usage: scripts/deps.sh serve|test" ;;
esac
