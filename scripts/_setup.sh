# shellcheck shell=bash
# Environment setup shared by scripts/test and scripts/demo. Source it, do not run it:
#
#     source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh" || exit 1
#
# Idempotent and quick when nothing changed. It:
#   - installs missing Debian packages when run as root (prints the apt-get command otherwise),
#   - creates .venv with python3 -m venv if it is missing (or broken),
#   - runs pip install -e '.[dev]' only when pyproject.toml changed since the last install,
#   - cds to the repository root and puts .venv/bin first on PATH.
#
# Every step checks its own errors: when the caller sources this file as `source ... || exit 1`
# bash turns errexit off inside it, so nothing here relies on `set -e`.

# Debian packages the project needs on the machine. Add to this array as the project grows
# (and add a presence check to _edge_pkg_present when the package name is not what dpkg reports).
EDGE_APT_PACKAGES=(
    mosquitto # MQTT broker binary; tests spawn their own instance on free loopback ports
)
# Only for the tests (scripts/test sets EDGE_SETUP_FOR=test): the demo needs no browser.
if [[ "${EDGE_SETUP_FOR:-}" == test ]]; then
    # the operator panel's browser tests drive it with Playwright (no browser download)
    EDGE_APT_PACKAGES+=(chromium)
    # the relay's shared ledger: tests/pg.py runs its own PostgreSQL clusters (initdb, pg_ctl)
    EDGE_APT_PACKAGES+=(postgresql)
fi

EDGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
export EDGE_ROOT

_edge_log() { printf 'setup: %s\n' "$*" >&2; }

_edge_is_root() { [[ "$(id -u)" -eq 0 ]]; }

# True when a package's files are present, whichever way they were installed.
_edge_pkg_present() {
    case "$1" in
        mosquitto)
            command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]]
            ;;
        chromium)
            [[ -x /usr/bin/chromium ]]
            ;;
        postgresql)
            # the server binaries of any version (postgresql is a metapackage for one of them)
            local bindir
            for bindir in /usr/lib/postgresql/*/bin; do
                [[ -x $bindir/initdb && -x $bindir/pg_ctl && -x $bindir/postgres ]] && return 0
            done
            return 1
            ;;
        *)
            dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
            ;;
    esac
}

_EDGE_APT_UPDATED=0

# Install Debian packages as root; apt-get update runs at most once per setup.
_edge_apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        _edge_log "no apt-get on this machine; install these packages by hand: $*"
        return 1
    fi
    if [[ $_EDGE_APT_UPDATED -eq 0 ]]; then
        _edge_log "apt-get update"
        if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2; then
            _edge_log "apt-get update failed"
            return 1
        fi
        _EDGE_APT_UPDATED=1
    fi
    _edge_log "apt-get install $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        >/dev/null; then
        _edge_log "apt-get install $* failed"
        return 1
    fi
}

# The Debian package starts a system-wide broker on port 1883. Tests start their own brokers, so
# stop and disable the service we just installed. Only called right after we installed it, so a
# broker the user set up on purpose is never touched.
_edge_quiet_mosquitto_service() {
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now mosquitto >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/mosquitto ]]; then
        /etc/init.d/mosquitto stop >/dev/null 2>&1 || true
        if command -v update-rc.d >/dev/null 2>&1; then
            update-rc.d mosquitto disable >/dev/null 2>&1 || true
        fi
    fi
}

# The Debian package creates a cluster and starts it on port 5432. The tests run their own
# clusters on free ports, so stop and disable the one we just installed (never one set up before).
_edge_quiet_postgresql_service() {
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now postgresql >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/postgresql ]]; then
        /etc/init.d/postgresql stop >/dev/null 2>&1 || true
        if command -v update-rc.d >/dev/null 2>&1; then
            update-rc.d postgresql disable >/dev/null 2>&1 || true
        fi
    fi
}

_edge_system_packages() {
    local missing=() pkg
    if ! command -v python3 >/dev/null 2>&1; then
        missing+=(python3)
    fi
    for pkg in "${EDGE_APT_PACKAGES[@]}"; do
        _edge_pkg_present "$pkg" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0

    if ! _edge_is_root; then
        _edge_log "missing Debian packages: ${missing[*]}"
        _edge_log "install them with:  sudo apt-get install -y --no-install-recommends ${missing[*]}"
        _edge_log "continuing; tests that need them will fail"
        return 0
    fi
    _edge_apt_install "${missing[@]}" || return 1
    for pkg in "${missing[@]}"; do
        [[ $pkg == mosquitto ]] && _edge_quiet_mosquitto_service
        [[ $pkg == postgresql ]] && _edge_quiet_postgresql_service
    done
    return 0
}

_edge_python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

_edge_make_venv() {
    if ! _edge_python_ok python3; then
        _edge_log "python3 is $(python3 --version 2>&1); this project needs Python 3.11 or newer"
        return 1
    fi
    _edge_log "creating .venv ($(python3 --version 2>&1))"
    if ! python3 -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        # Debian splits venv/ensurepip into python3-venv.
        if _edge_is_root; then
            _edge_apt_install python3-venv || return 1
        else
            _edge_log "python3 -m venv failed; install the venv module with:"
            _edge_log "    sudo apt-get install -y --no-install-recommends python3-venv"
            return 1
        fi
        if ! python3 -m venv .venv >&2; then
            rm -rf .venv
            _edge_log "python3 -m venv .venv failed"
            return 1
        fi
    fi
    _edge_log "upgrading pip in .venv"
    if ! .venv/bin/python -m pip install -q --upgrade pip; then
        _edge_log "pip upgrade failed (continuing with the bundled pip)"
    fi
}

_edge_venv() {
    # A venv whose interpreter no longer runs (Python upgraded, repository moved) is rebuilt.
    if [[ -d .venv ]] && ! _edge_python_ok .venv/bin/python; then
        _edge_log ".venv is broken or too old; recreating it"
        rm -rf .venv
    fi
    if [[ ! -d .venv ]]; then
        _edge_make_venv || return 1
    fi

    local want have=""
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)" || return 1
    [[ -f .venv/.installed-hash ]] && have="$(<.venv/.installed-hash)"
    if [[ "$want" != "$have" ]]; then
        _edge_log "installing Python dependencies from pyproject.toml (a few minutes the first time)"
        if ! .venv/bin/python -m pip install -q -e '.[dev]'; then
            _edge_log "pip install -e '.[dev]' failed"
            return 1
        fi
        printf '%s\n' "$want" >.venv/.installed-hash
    fi
}

_edge_setup_main() {
    cd "$EDGE_ROOT" || return 1
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    _edge_system_packages || return 1
    _edge_venv || return 1
    export VIRTUAL_ENV="$EDGE_ROOT/.venv"
    export PATH="$VIRTUAL_ENV/bin:$PATH"
    unset PYTHONHOME
    hash -r
}

_edge_setup_main
