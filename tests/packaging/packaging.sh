#!/usr/bin/env bash
# Builds the Debian packages of this build tree with CPack, unpacks them
# into a scratch root (dpkg -x: the test machine's own package database is
# never changed) and uses them from there: the CLI, a C program built with
# the packaged shmlimit.pc, and `import shmlimit` from the packaged Python
# package; and a C program built with the build tree's own shmlimit.pc.
# Also checks the packages' names, version, contents, that their
# binaries are stripped with the debug information in the -dbgsym
# packages, that the man pages are gzipped and render, and (as root) that
# dpkg accepts their dependencies (`dpkg --dry-run -i`, which installs
# nothing). With NGINX_ABI (the build has the nginx module): the
# libnginx-mod-http-shmlimit package, its Depends on that ABI, and that
# NGINX (the nginx binary, if given) loads the packaged module (`nginx -t`).
# With KEEP_DIR: the .deb files, once every check passed, are copied there
# (emptied first) for packaging.apt_install, which installs them.
#
#   packaging.sh BUILD_DIR VERSION [NGINX_ABI [NGINX [KEEP_DIR]]]
#
# No `cmd | grep -q` nor `cmd | head`: they exit before the end of their
# input, the writer may then die of SIGPIPE, and under pipefail the check
# fails at random (`ldd | grep -q` did, under load). `grep ... >/dev/null`
# reads it all.
set -euo pipefail

USAGE="usage: packaging.sh BUILD_DIR VERSION [NGINX_ABI [NGINX [KEEP_DIR]]]"
BUILD="$(cd "${1:?$USAGE}" && pwd)"  # the script changes directory
VERSION="${2:?$USAGE}"
NGINX_ABI="${3:-}"
NGINX="${4:-}"
KEEP_DIR="${5:-}"
[[ -z "$KEEP_DIR" ]] || rm -rf "$KEEP_DIR"  # no packages from an earlier run if this one fails
TMP="$(mktemp -d)"
SEG="/shmlimit-test-packaging-$$"
cleanup() {
  [[ -x "$TMP/root/usr/bin/shmlimit" ]] && "$TMP/root/usr/bin/shmlimit" rm "$SEG" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL [packaging]: $*" >&2; exit 1; }

cpack --config "$BUILD/CPackConfig.cmake" -B "$TMP/out" >"$TMP/cpack.log" 2>&1 ||
  { cat "$TMP/cpack.log" >&2; fail "cpack failed"; }
cd "$TMP/out"

ARCH="$(dpkg --print-architecture)"
declare -A DEB
PACKAGES=(libshmlimit libshmlimit-dev shmlimit-tools python3-shmlimit)
[[ -n "$NGINX_ABI" ]] && PACKAGES+=(libnginx-mod-http-shmlimit)
for pkg in "${PACKAGES[@]}"; do
  f="${pkg}_${VERSION}-1_${ARCH}.deb"
  [[ -f "$f" ]] || { ls -l >&2; fail "no $f"; }
  [[ "$(dpkg-deb -f "$f" Package)" == "$pkg" ]] || fail "$f: Package is not $pkg"
  [[ "$(dpkg-deb -f "$f" Version)" == "${VERSION}-1" ]] || fail "$f: Version is not ${VERSION}-1"
  DEB[$pkg]="$f"
done
if [[ -z "$NGINX_ABI" ]] && ls libnginx-mod-http-shmlimit_* >/dev/null 2>&1; then
  fail "a libnginx-mod-http-shmlimit package, but the test was told of no nginx module"
fi

contains() {  # contains DEB PATH...: every PATH is in the package
  local listing deb="$1"
  shift
  listing="$(dpkg-deb -c "$deb" | awk '{print $6}')"
  for p in "$@"; do
    grep -qx "\./$p" <<<"$listing" || fail "$deb does not contain $p"
  done
}
lacks() {  # lacks DEB REGEX: no path of the package matches REGEX
  local listing deb="$1"
  listing="$(dpkg-deb -c "$deb" | awk '{print $6}')"
  if grep -E "$2" <<<"$listing" >/dev/null; then fail "$deb contains $(grep -m1 -E "$2" <<<"$listing")"; fi
}
contains "${DEB[libshmlimit]}" usr/lib/libshmlimit_c.so.1
contains "${DEB[libshmlimit-dev]}" usr/include/shmlimit/shmlimit.h usr/include/shmlimit/shmlimit.hpp \
  usr/lib/libshmlimit.a usr/lib/libshmlimit_c.so usr/lib/pkgconfig/shmlimit.pc \
  usr/lib/cmake/shmlimit/shmlimitConfig.cmake
contains "${DEB[shmlimit-tools]}" usr/bin/shmlimit usr/share/man/man1/shmlimit.1.gz \
  usr/bin/shmlimit-stress usr/share/man/man1/shmlimit-stress.1.gz \
  usr/share/bash-completion/completions/shmlimit usr/lib/systemd/system/shmlimit-exporter.service \
  usr/share/doc/shmlimit-tools/cli.md
contains "${DEB[python3-shmlimit]}" usr/lib/python3/dist-packages/shmlimit/__init__.py
lacks "${DEB[shmlimit-tools]}" '^\./usr/share/man/.*\.[0-9]$'   # man pages only gzipped
# What policy asks of every package: copyright, changelog.Debian.gz; each
# its own one-line synopsis (the first line of Description).
declare -A SYNOPSIS
for pkg in "${PACKAGES[@]}"; do
  contains "${DEB[$pkg]}" "usr/share/doc/$pkg/copyright" "usr/share/doc/$pkg/changelog.Debian.gz"
  synopsis="$(dpkg-deb -f "${DEB[$pkg]}" Description)"
  synopsis="${synopsis%%$'\n'*}"
  [[ -z "${SYNOPSIS[$synopsis]:-}" ]] || fail "$pkg and ${SYNOPSIS[$synopsis]} share the synopsis \"$synopsis\""
  SYNOPSIS[$synopsis]="$pkg"
done
mkdir -p "$TMP/ctl-lib"
dpkg-deb -e "${DEB[libshmlimit]}" "$TMP/ctl-lib"
grep -x "activate-noawait ldconfig" "$TMP/ctl-lib/triggers" >/dev/null 2>&1 || fail "libshmlimit has no ldconfig trigger"
lacks "${DEB[libshmlimit]}" '^\./usr/include'
dpkg-deb -f "${DEB[libshmlimit-dev]}" Depends | grep -F "libshmlimit (= ${VERSION}-1)" >/dev/null ||
  fail "libshmlimit-dev does not depend on libshmlimit (= ${VERSION}-1)"
mkdir -p "$TMP/ctl-py"
dpkg-deb -e "${DEB[python3-shmlimit]}" "$TMP/ctl-py"
for s in postinst prerm; do
  [[ -x "$TMP/ctl-py/$s" ]] || fail "python3-shmlimit has no executable $s"
done
grep -F "py3clean -p python3-shmlimit" "$TMP/ctl-py/prerm" >/dev/null || fail "python3-shmlimit: prerm does not remove the bytecode"
if [[ -n "$NGINX_ABI" ]]; then
  NG="${DEB[libnginx-mod-http-shmlimit]}"
  contains "$NG" usr/lib/nginx/modules/ngx_http_shmlimit_module.so \
    usr/share/nginx/modules-available/mod-http-shmlimit.conf
  depends="$(dpkg-deb -f "$NG" Depends)"
  grep -E "(^|, )${NGINX_ABI}(,|$)" <<<"$depends" >/dev/null || fail "$NG: Depends \"$depends\" lacks $NGINX_ABI"
  [[ "$(dpkg-deb -f "$NG" Section)" == httpd ]] || fail "$NG: Section is not httpd"
  mkdir -p "$TMP/ctl"
  dpkg-deb -e "$NG" "$TMP/ctl"
  for s in postinst prerm postrm; do
    [[ -x "$TMP/ctl/$s" ]] || fail "$NG has no executable $s"
  done
  grep -F "/usr/share/nginx/modules-available/mod-http-shmlimit.conf" "$TMP/ctl/postinst" >/dev/null ||
    fail "$NG: postinst does not enable the module"
fi

mkdir -p "$TMP/root"
for f in "${DEB[@]}"; do dpkg -x "$f" "$TMP/root"; done
ROOT="$TMP/root"

# Stripped, with the debug information in the -dbgsym packages.
BINS=(usr/bin/shmlimit usr/lib/libshmlimit_c.so.1)
[[ -n "$NGINX_ABI" ]] && BINS+=(usr/lib/nginx/modules/ngx_http_shmlimit_module.so)
for bin in "${BINS[@]}"; do
  info="$(file -L "$ROOT/$bin")"
  [[ "$info" == *", stripped"* ]] || fail "$bin is not stripped: $info"
done
ls ./*-dbgsym_*.ddeb >/dev/null 2>&1 || fail "no -dbgsym packages"
mkdir -p "$TMP/dbg"
for f in ./*-dbgsym_*.ddeb; do dpkg -x "$f" "$TMP/dbg"; done
[[ -n "$(find "$TMP/dbg/usr/lib/debug" -name '*.debug')" ]] || fail "no .debug files in the -dbgsym packages"

# The man pages: gzip -9n (no name, no time stamp), and they render.
for page in shmlimit shmlimit-stress; do
  gz="$ROOT/usr/share/man/man1/$page.1.gz"
  gzip -t "$gz" || fail "$page.1.gz is not a valid gzip file"
  # byte 3 is gzip's flags (FNAME = 8), bytes 4-7 the time stamp: all zero with -n
  header="$(od -An -tx1 -j3 -N5 "$gz" | tr -d ' \n')"
  [[ "$header" == 0000000000 ]] || fail "$page.1.gz keeps a name or a time stamp (not gzip -n): $header"
  roff="$(zcat "$gz")"
  grep -E '^\.TH "?'"${page^^}"'"? "?1' <<<"$roff" >/dev/null || fail "$page.1.gz has no .TH line"
  rendered="$(MANWIDTH=80 man -l "$gz" 2>&1)" || fail "man -l $page.1.gz: $rendered"
  if ! grep -E "^NAME$" <<<"$rendered" >/dev/null || ! grep -E "^ +$page +- " <<<"$rendered" >/dev/null; then
    fail "man -l $page.1.gz does not render NAME: $(sed -n 1,20p <<<"$rendered")"
  fi
done
echo "sizes: $(du -k "$ROOT/usr/bin/shmlimit" | cut -f1) KiB shmlimit, $(du -sk "$ROOT/usr/lib/python3/dist-packages/shmlimit" | cut -f1) KiB python package"

# The CLI.
CLI="$ROOT/usr/bin/shmlimit"
[[ "$("$CLI" --version)" == "shmlimit ${VERSION}" ]] || fail "shmlimit --version: $("$CLI" --version)"
"$CLI" create "$SEG" --capacity 64
"$CLI" policy "$SEG" api 2/h
"$CLI" acquire "$SEG" api k >/dev/null
"$CLI" acquire "$SEG" api k >/dev/null
rc=0; "$CLI" acquire "$SEG" api k >/dev/null || rc=$?
[[ $rc == 1 ]] || fail "the third acquire under 2/h exited $rc, expected 1"
"$CLI" ls | grep "^$SEG " >/dev/null || fail "shmlimit ls does not list $SEG"

# A C program built with the packaged shmlimit.pc, run against the packaged library.
cat >"$TMP/app.c" <<'C'
#include <shmlimit/shmlimit.h>
#include <stdio.h>
int main(int argc, char** argv) {
  printf("%s\n", shmlimit_version_string());
  (void)argc; (void)argv;
  return 0;
}
C
export PKG_CONFIG_PATH="$ROOT/usr/lib/pkgconfig"
[[ "$(pkg-config --modversion shmlimit)" == "$VERSION" ]] || fail "pkg-config --modversion"
# shellcheck disable=SC2046
cc -std=c99 -Wall -Werror -o "$TMP/app" "$TMP/app.c" $(pkg-config --cflags --libs shmlimit)
out="$(LD_LIBRARY_PATH="$ROOT/usr/lib" "$TMP/app")"
[[ "$out" == "$VERSION" ]] || fail "the C program printed \"$out\", expected $VERSION"
libs="$(LD_LIBRARY_PATH="$ROOT/usr/lib" ldd "$TMP/app")"
grep -F "$ROOT/usr/lib/libshmlimit_c.so.1" <<<"$libs" >/dev/null ||
  fail "the C program does not load the packaged libshmlimit_c.so.1: $libs"

# The build tree's own shmlimit.pc: the sources' headers, the built library,
# an rpath to it (the program runs without LD_LIBRARY_PATH).
# shellcheck disable=SC2046
cc -std=c99 -Wall -Werror -o "$TMP/app-tree" "$TMP/app.c" $(PKG_CONFIG_PATH="$BUILD" pkg-config --cflags --libs shmlimit)
out="$("$TMP/app-tree")"
[[ "$out" == "$VERSION" ]] || fail "the C program built with the build tree's shmlimit.pc printed \"$out\""

# The Python package, from the packaged dist-packages.
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$ROOT/usr/lib/python3/dist-packages" /usr/bin/python3 -c '
import sys, shmlimit
assert shmlimit.__file__.startswith(sys.argv[1]), shmlimit.__file__
l = shmlimit.Limiter.open(sys.argv[2])
print("python: the packaged shmlimit opened", sys.argv[2])
' "$ROOT" "$SEG"

# nginx loads the packaged (stripped) module: `nginx -t` in a scratch prefix.
if [[ -n "$NGINX_ABI" && -n "$NGINX" ]]; then
  mkdir -p "$TMP/nginx/logs"
  cat >"$TMP/nginx/nginx.conf" <<NGX
load_module $ROOT/usr/lib/nginx/modules/ngx_http_shmlimit_module.so;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log;
events {}
http {}
NGX
  "$NGINX" -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" >"$TMP/nginx.log" 2>&1 ||
    { cat "$TMP/nginx.log" "$TMP/nginx/logs/error.log" >&2 2>/dev/null; fail "nginx -t with the packaged module"; }
  echo "nginx: the packaged module loads"
fi

# dpkg accepts the packages and their dependencies (installs nothing).
if [[ $EUID -eq 0 ]]; then
  dpkg --dry-run -i "${DEB[@]}" >"$TMP/dpkg.log" 2>&1 || { cat "$TMP/dpkg.log" >&2; fail "dpkg --dry-run -i"; }
else
  echo "not root: dpkg --dry-run -i skipped"
fi
if [[ -n "$KEEP_DIR" ]]; then
  mkdir -p "$KEEP_DIR"
  cp "${DEB[@]}" "$KEEP_DIR/"
  echo "packages kept in $KEEP_DIR"
fi
echo "packaging: ok"
