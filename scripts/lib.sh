# Shared by the set-up scripts (sourced, not run): output that shows progress on a terminal
# and stays quiet and line-oriented otherwise (CI logs), apt and pip installs in that style,
# and Rust on PATH.
# shellcheck shell=bash

# Whether the output goes to a terminal: progress bars and tool output are shown only then.
if [[ -t 1 ]]; then
    HUTCH_TTY=1
else
    HUTCH_TTY=
fi

# Rust installed by rustup for this user is used even when the shell has not sourced it.
if [[ -x "$HOME/.cargo/bin/cargo" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

# say PREFIX MESSAGE...: one line of progress.
say() {
    local prefix=$1
    shift
    if [[ -n $HUTCH_TTY ]]; then
        printf '\033[1m%s:\033[0m %s\n' "$prefix" "$*"
    else
        printf '%s: %s\n' "$prefix" "$*"
    fi
}

# die PREFIX MESSAGE...: says why on stderr and exits.
die() {
    local prefix=$1
    shift
    printf '%s: %s\n' "$prefix" "$*" >&2
    exit 1
}

# Whether Debian package $1 is installed.
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

# apt_install PACKAGE...: installs Debian packages, with apt's progress bar on a terminal.
APT_UPDATED=
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    # A mirror that drops a connection now and then does not fail the install.
    local retries=(-o Acquire::Retries=5)
    local start=$SECONDS
    if [[ -z $APT_UPDATED ]]; then
        say apt "updating the package lists"
        if [[ -n $HUTCH_TTY ]]; then
            apt-get "${retries[@]}" update
        else
            apt-get "${retries[@]}" update -qq
        fi
        APT_UPDATED=1
    fi
    say apt "installing $# package(s): $*"
    if [[ -n $HUTCH_TTY ]]; then
        apt-get "${retries[@]}" install -y --no-install-recommends -o Dpkg::Progress-Fancy=1 "$@"
    else
        apt-get "${retries[@]}" install -y -qq --no-install-recommends "$@" >/dev/null
    fi
    say apt "installed $* in $((SECONDS - start)) s"
}

# pip_install VENV ARG...: creates the virtualenv VENV if needed and runs `pip install ARG...`
# in it, with pip's progress bars on a terminal.
pip_install() {
    local venv=$1 start=$SECONDS
    shift
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
        python3 -m venv "$venv"
    fi
    say pip "installing $* into $venv"
    if [[ -n $HUTCH_TTY ]]; then
        "$venv/bin/pip" install --disable-pip-version-check --progress-bar on "$@"
    else
        "$venv/bin/pip" install -q --disable-pip-version-check "$@"
    fi
    say pip "installed into $venv in $((SECONDS - start)) s"
}
