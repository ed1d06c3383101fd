#!/usr/bin/env bash
# Installs shmlimit's build dependencies (Debian 12) and builds the `dev` preset.
#
#   bash scripts/setup.sh              install packages, configure and build build/dev
#   bash scripts/setup.sh --no-build   install packages only (also SHMLIMIT_SETUP_NO_BUILD=1)
#
# Safe to run again: apt-get update is skipped when the package lists are less
# than an hour old, and apt is skipped entirely when every package is already
# installed (SHMLIMIT_SETUP_FORCE_APT=1 runs it anyway).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGES=(
  build-essential
  cmake
  ninja-build
  g++
  libboost-dev
  libcli11-dev
  libfmt-dev
  nlohmann-json3-dev
  libtomlplusplus-dev
  libxxhash-dev
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  clang
  clang-format
  libclang-rt-14-dev
  spin
  python3
  python3-dev
  pybind11-dev
  python3-pytest
  mypy
  python3-django
  python3-djangorestframework
  gunicorn
  python3-limits
  python3-flask
  python3-flask-limiter
  python3-build
  python3-venv
  python3-pip
  python3-setuptools
  python3-wheel
  uwsgi-core
  uwsgi-plugin-python3
  python3-pytest-django
  pkg-config
  libhiredis-dev
  redis-server
  redis-tools
  nginx
  nginx-dev
  wrk
  curl
  help2man
  man-db
  dpkg-dev
  file
  python3-prometheus-client
  bash-completion
)

no_build="${SHMLIMIT_SETUP_NO_BUILD:-0}"
for arg in "$@"; do
  case "$arg" in
    --no-build) no_build=1 ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*"; }
run() { printf '+ %s\n' "$*"; "$@"; }

if [[ ${EUID} -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=()
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == "installed" ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 && "${SHMLIMIT_SETUP_FORCE_APT:-0}" != 1 ]]; then
  say "all ${#PACKAGES[@]} packages already installed: ${PACKAGES[*]}"
else
  if [[ ${EUID} -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
    echo "setup.sh: missing packages (${missing[*]}) and not root, no sudo" >&2
    exit 1
  fi
  say "installing packages (missing: ${missing[*]:-none})"
  if [[ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 -print -quit 2>/dev/null)" ]]; then
    say "apt package lists are less than an hour old, skipping apt-get update"
  else
    run "${SUDO[@]}" apt-get update
  fi
  run "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${PACKAGES[@]}"
fi

if [[ "$no_build" == 1 ]]; then
  say "skipping the build (SHMLIMIT_SETUP_NO_BUILD=1 or --no-build)"
  exit 0
fi

say "configuring and building the dev preset (build/dev)"
run cmake --preset dev
run cmake --build --preset dev -j2
say "done: library in build/dev, tools in build/dev/tools"
