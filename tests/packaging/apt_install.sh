#!/usr/bin/env bash
# Installs the Debian packages that packaging.deb built and checked (it
# leaves them in DEB_DIR) into this machine, as an operator would
# (`apt-get install ./pkg.deb`), uses the installed system, then purges
# them again, whatever happened: the purge runs from the EXIT trap, and
# afterwards no file of the packages and no modules-enabled link may be
# left. Only as root and only when no shmlimit package is installed:
# otherwise it reports SKIP (exit 77) and touches nothing. No network:
# apt is given no sources (it knows only what is installed and the .debs),
# so every dependency must already be installed (scripts/setup.sh installs
# them); a missing one fails the test before anything is installed.
# (`apt-get --no-download` would say the same, but apt 2.6 refuses local
# .deb files with it: "Internal Error, Pathname to install is not absolute".)
#
#   apt_install.sh DEB_DIR VERSION
#
# SHMLIMIT_APT_INSTALL_FAIL=1 fails a check on purpose once the packages
# are installed, to see that the purge still happens.
set -euo pipefail

SKIP_CODE=77
DEB_DIR="$(cd "${1:?usage: apt_install.sh DEB_DIR VERSION}" && pwd)"
VERSION="${2:?usage: apt_install.sh DEB_DIR VERSION}"
# The installed system, not the build tree nor /usr/local or pyenv.
unset PYTHONPATH PYTHONHOME PYTHONDONTWRITEBYTECODE PKG_CONFIG_PATH LD_LIBRARY_PATH LD_PRELOAD CPATH LIBRARY_PATH
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
APT=(apt-get -o DPkg::Lock::Timeout=300 -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/dev/null)

skip() {
  echo "SKIP [packaging.apt_install]: $*"
  exit "$SKIP_CODE"
}
fail() {
  echo "FAIL [packaging.apt_install]: $*" >&2
  exit 1
}

[[ $EUID -eq 0 ]] || skip "not root: it installs the packages into this machine"
# Any shmlimit package known to dpkg (installed, half-installed or with
# its configuration left): the test would change or remove the operator's.
present="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' '*shmlimit*' 2>/dev/null |
  awk '$2 != "un" && $2 != "pn" {print $1 " (" $2 ")"}')" || true
[[ -z "$present" ]] || skip "shmlimit packages are installed already: $(tr '\n' ' ' <<<"$present")"

ARCH="$(dpkg --print-architecture)"
PACKAGES=(libshmlimit libshmlimit-dev shmlimit-tools python3-shmlimit)
NGINX_DEB="$DEB_DIR/libnginx-mod-http-shmlimit_${VERSION}-1_${ARCH}.deb"
if [[ -f "$NGINX_DEB" ]]; then
  if [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' nginx 2>/dev/null || true)" == "ii " ]]; then
    PACKAGES+=(libnginx-mod-http-shmlimit)
  else
    echo "nginx is not installed: libnginx-mod-http-shmlimit is left out"
  fi
else
  echo "no libnginx-mod-http-shmlimit package was built: the nginx module is left out"
fi
DEBS=()
for pkg in "${PACKAGES[@]}"; do
  f="$DEB_DIR/${pkg}_${VERSION}-1_${ARCH}.deb"
  [[ -f "$f" ]] || fail "no $f (packaging.deb leaves the packages it checked there)"
  DEBS+=("$f")
done

TMP="$(mktemp -d)"
SEG="/shmlimit-test-apt-install-$$"
INSTALLING=false
cleanup() {
  local rc=$? left=()
  local before=$rc
  trap - EXIT INT TERM
  set +e  # every step of the clean-up runs, whatever the one before said
  cd /
  if $INSTALLING; then
    [[ -x /usr/bin/shmlimit ]] && /usr/bin/shmlimit rm "$SEG" >/dev/null 2>&1
    rm -f "/dev/shm${SEG}"
    # Every package of ours that dpkg knows, whatever state the install left it in.
    local known=() pkg
    for pkg in "${PACKAGES[@]}"; do
      if dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -Ev '^(un|pn) ' >/dev/null; then
        known+=("$pkg")
      fi
    done
    if ((${#known[@]})); then
      if ! "${APT[@]}" purge -y "${known[@]}" >"$TMP/purge.log" 2>&1; then
        cat "$TMP/purge.log" >&2
        echo "FAIL [packaging.apt_install]: apt-get purge ${known[*]}" >&2
        rc=1
      fi
    fi
    for pkg in "${PACKAGES[@]}"; do
      if dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -Ev '^(un|pn) ' >/dev/null; then
        echo "FAIL [packaging.apt_install]: $pkg is still known to dpkg after the purge" >&2
        rc=1
      fi
    done
    # Every path the packages installed that was not there before.
    if [[ -f "$TMP/paths" ]]; then
      local path
      while IFS= read -r path; do
        [[ -e "$path" || -L "$path" ]] && left+=("$path")
      done <"$TMP/paths"
      if ((${#left[@]})); then
        echo "FAIL [packaging.apt_install]: left after the purge: ${left[*]}" >&2
        rc=1
      fi
    fi
    if compgen -G '/etc/nginx/modules-enabled/*shmlimit*' >/dev/null; then
      echo "FAIL [packaging.apt_install]: left after the purge: $(compgen -G '/etc/nginx/modules-enabled/*shmlimit*')" >&2
      rc=1
    fi
    ((rc != before)) || echo "purged: ${PACKAGES[*]}; nothing left"
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
cd "$TMP"

# apt installs nothing but our packages, from nothing but what is here.
"${APT[@]}" install -s "${DEBS[@]}" >"$TMP/sim.log" 2>&1 ||
  { cat "$TMP/sim.log" >&2; fail "apt-get install -s: the packages' dependencies are not all installed"; }
others="$(awk '$1 == "Inst" {print $2}' "$TMP/sim.log" | grep -vxF -f <(printf '%s\n' "${PACKAGES[@]}") || true)"
[[ -z "$others" ]] || fail "apt would also install $(tr '\n' ' ' <<<"$others")(scripts/setup.sh installs the dependencies)"

# The paths the packages bring that the machine does not have yet: all of
# them must be gone after the purge.
for f in "${DEBS[@]}"; do dpkg-deb --fsys-tarfile "$f" | tar -t; done | sed -e 's|^\./|/|' -e 's|/$||' |
  grep -vx '' | sort -u >"$TMP/contents"
while IFS= read -r path; do
  [[ -e "$path" || -L "$path" ]] || echo "$path"
done <"$TMP/contents" >"$TMP/paths"

start=$SECONDS
INSTALLING=true
"${APT[@]}" install -y "${DEBS[@]}" >"$TMP/install.log" 2>&1 ||
  { cat "$TMP/install.log" >&2; fail "apt-get install ${PACKAGES[*]}"; }
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$pkg")"
  [[ "$status" == "ii ${VERSION}-1" ]] || fail "$pkg after the install: $status"
  # What dpkg says the package owns is what the .deb holds, and is there.
  while IFS= read -r path; do
    [[ "$path" == "/." ]] && continue
    [[ -e "$path" || -L "$path" ]] || fail "$pkg: dpkg -L lists $path, which is not there"
    grep -xF "$path" "$TMP/contents" >/dev/null || fail "$pkg: dpkg -L lists $path, which is not in its .deb"
  done < <(dpkg -L "$pkg")
done
echo "installed in $((SECONDS - start)) s: ${PACKAGES[*]}"
[[ "${SHMLIMIT_APT_INSTALL_FAIL:-}" != 1 ]] || fail "SHMLIMIT_APT_INSTALL_FAIL=1: a check fails on purpose"

# The CLI, its man page and its completion.
[[ "$(command -v shmlimit)" == /usr/bin/shmlimit ]] || fail "shmlimit on PATH is $(command -v shmlimit)"
[[ "$(/usr/bin/shmlimit --version)" == "shmlimit ${VERSION}" ]] || fail "shmlimit --version: $(/usr/bin/shmlimit --version)"
[[ "$(man -w shmlimit)" == /usr/share/man/man1/shmlimit.1.gz ]] || fail "man -w shmlimit: $(man -w shmlimit 2>&1)"
[[ "$(man -w shmlimit-stress)" == /usr/share/man/man1/shmlimit-stress.1.gz ]] ||
  fail "man -w shmlimit-stress: $(man -w shmlimit-stress 2>&1)"
[[ -f /usr/share/bash-completion/completions/shmlimit ]] || fail "no bash completion for shmlimit"
/usr/bin/shmlimit create "$SEG" --capacity 64 >/dev/null
/usr/bin/shmlimit policy "$SEG" api 5/h >/dev/null
/usr/bin/shmlimit acquire "$SEG" api k >/dev/null
/usr/bin/shmlimit acquire "$SEG" api k >/dev/null

# A C program built with the installed shmlimit.pc: no rpath, the library
# found in the system's directories (the ldconfig trigger ran).
# (/lib is /usr/lib on a merged-/usr system: the cache may name either.)
cache="$(ldconfig -p)"
grep -E '^\s+libshmlimit_c\.so\.1 .* => (/usr)?/lib/libshmlimit_c\.so\.1$' <<<"$cache" >/dev/null ||
  fail "libshmlimit_c.so.1 is not in ld.so.cache: $(grep -F shmlimit <<<"$cache")"
[[ "$(pkg-config --modversion shmlimit)" == "$VERSION" ]] || fail "pkg-config --modversion shmlimit"
cat >"$TMP/app.c" <<'C'
#include <shmlimit/shmlimit.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char** argv) {
  shmlimit_options options;
  shmlimit_limiter* limiter = NULL;
  shmlimit_decision d;
  if (argc != 2) return 2;
  shmlimit_options_init(&options);
  options.name = argv[1];
  options.capacity = 0;
  if (shmlimit_open(&options, SHMLIMIT_OPEN, &limiter) != SHMLIMIT_OK ||
      shmlimit_acquire_by_name(limiter, "api", "k", 1, 1, &d) != SHMLIMIT_OK) {
    fprintf(stderr, "%s\n", shmlimit_last_error());
    return 1;
  }
  printf("%s allowed=%d remaining=%llu\n", shmlimit_version_string(), d.allowed,
         (unsigned long long)d.remaining);
  shmlimit_close(limiter);
  return 0;
}
C
# shellcheck disable=SC2046
cc -std=c99 -Wall -Werror -o "$TMP/app" "$TMP/app.c" $(pkg-config --cflags --libs shmlimit)
dyn="$(readelf -d "$TMP/app")"
if grep -E 'RPATH|RUNPATH' <<<"$dyn" >/dev/null; then fail "the C program has an rpath: $dyn"; fi
libs="$(ldd "$TMP/app")"
grep -E 'libshmlimit_c\.so\.1 => (/usr)?/lib/libshmlimit_c\.so\.1 ' <<<"$libs" >/dev/null ||
  fail "the C program does not load /usr/lib/libshmlimit_c.so.1: $libs"
out="$("$TMP/app" "$SEG")"
[[ "$out" == "$VERSION allowed=1 remaining=2" ]] || fail "the C program printed \"$out\""

# The installed Python package decides on the same bucket: 2 (CLI) + 1 (C)
# of 5 taken, so it gets 2 more and then a refusal.
# Byte-compiled by its postinst (py3compile); python3 as root writes more
# bytecode (no PYTHONDONTWRITEBYTECODE here): the purge must remove it all.
[[ -n "$(find /usr/lib/python3/dist-packages/shmlimit -name '__init__.*.pyc')" ]] ||
  fail "python3-shmlimit is not byte-compiled"
out="$(/usr/bin/python3 -c 'import shmlimit; print(shmlimit.__version__)')"
[[ "$out" == "$VERSION" ]] || fail "python3: shmlimit.__version__ is \"$out\""
out="$(/usr/bin/python3 -c '
import sys, shmlimit
assert shmlimit.__file__.startswith("/usr/lib/python3/dist-packages/shmlimit/"), shmlimit.__file__
lim = shmlimit.Limiter.open(sys.argv[1])
print(" ".join("%d/%d" % (d.allowed, d.remaining) for d in (lim.acquire("api", "k") for _ in range(3))))
' "$SEG")"
[[ "$out" == "1/1 1/0 0/0" ]] || fail "python3 decided \"$out\" on the bucket, expected \"1/1 1/0 0/0\""
dump="$(/usr/bin/shmlimit dump "$SEG" --csv)"
grep -E '(^|,)k(,|$)' <<<"$dump" >/dev/null || fail "shmlimit dump shows no bucket k: $dump"
/usr/bin/shmlimit rm "$SEG" >/dev/null
[[ ! -e "/dev/shm${SEG}" ]] || fail "shmlimit rm left /dev/shm${SEG}"

# nginx: the package enabled the module; the stock layout loads it (an
# nginx without it refuses shmlimit_status as an unknown directive).
if [[ " ${PACKAGES[*]} " == *" libnginx-mod-http-shmlimit "* ]]; then
  link=/etc/nginx/modules-enabled/50-mod-http-shmlimit.conf
  [[ "$(readlink "$link")" == /usr/share/nginx/modules-available/mod-http-shmlimit.conf ]] ||
    fail "$link: $(ls -l "$link" 2>&1)"
  mkdir -p "$TMP/nginx/logs"
  cat >"$TMP/nginx/nginx.conf" <<NGX
include /etc/nginx/modules-enabled/*.conf;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log;
events {}
http { shmlimit_status 429; }
NGX
  /usr/sbin/nginx -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" >"$TMP/nginx.log" 2>&1 ||
    { cat "$TMP/nginx.log" "$TMP/nginx/logs/error.log" >&2 2>/dev/null; fail "nginx -t with modules-enabled"; }
  echo "nginx: modules-enabled loads the installed module"
fi
echo "apt_install: ok"
