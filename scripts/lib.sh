# Shared by scripts/run and scripts/test: install what a fresh Debian machine
# with only the Rust toolchain lacks. Sourced, not run.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Pingora builds zlib-ng with cmake and a C compiler.
ensure_build_deps() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v cc >/dev/null || missing+=(build-essential)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} …"
    apt_install "${missing[@]}"
  fi
}

# The transparent-mode and translation tests drive curl; the CA bundle test
# needs the system's trusted roots.
ensure_test_tools() {
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  [ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} …"
    apt_install "${missing[@]}"
  fi
}

# The shared-budget tests start a real redis-server (on a Unix socket).
ensure_redis() {
  command -v redis-server >/dev/null || { echo "installing redis-server …"; apt_install redis-server; }
  # Debian starts a system instance on install; the tests never use it.
}

# benches/engine.sh and benches/callgrind.sh: the load generator, nginx (the
# reference proxy and the upstream), valgrind and python3. Arguments are
# commands; each missing one is installed from its Debian package.
ensure_bench_tools() {
  local missing=() cmd pkg
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null && continue
    case "$cmd" in
      callgrind_control) pkg=valgrind ;;
      taskset) pkg=util-linux ;;
      pgrep) pkg=procps ;;
      *) pkg="$cmd" ;;
    esac
    missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} …"
    apt_install "${missing[@]}"
  fi
}

# A local venv (.venv) with the pinned official SDKs used by the e2e tests.
ensure_python_venv() {
  if ! command -v python3 >/dev/null; then apt_install python3 python3-venv; fi
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' 2>/dev/null; then
    rm -rf .venv
    python3 -m venv .venv 2>/dev/null || { apt_install python3-venv && python3 -m venv .venv; }
  fi
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/sdk/requirements.txt; then
    echo "could not install the Python SDKs into .venv" >&2
    return 1
  fi
}

# tests/monitoring.rs checks the shipped Prometheus rules with promtool, from
# Debian's `prometheus` package. Its postinst starts a Prometheus server on
# :9090 (modelgate's default admin port) where systemd runs; the tests need
# only the tool, so that service is stopped and disabled again.
ensure_promtool() {
  command -v promtool >/dev/null && return
  echo "installing prometheus (for promtool) …"
  apt_install prometheus
  if [ -d /run/systemd/system ]; then as_root systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
}

# tests/ops_systemd.rs runs `systemd-analyze verify` on the unit (the
# `systemd` package; it does not have to be PID 1).
ensure_systemd_analyze() {
  command -v systemd-analyze >/dev/null || { echo "installing systemd (for systemd-analyze) …"; apt_install systemd; }
}

# tests/dashboard.rs drives the web dashboard in headless Chromium (Debian's
# chromium package, fonts for its text) over the DevTools protocol with
# websocket-client in .venv (after ensure_python_venv).
ensure_dashboard_tools() {
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} …"
    apt_install "${missing[@]}"
  fi
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/dashboard/requirements.txt; then
    echo "could not install the dashboard test's Python packages into .venv" >&2
    return 1
  fi
}
