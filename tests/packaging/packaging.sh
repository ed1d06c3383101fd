#!/usr/bin/env bash
# Builds the Debian packages of this build tree with CPack, unpacks them
# into a scratch root (dpkg -x: the test machine's own package database is
# never changed) and uses them from there: the CLI, a C program built with
# the packaged shmlimit.pc, and `import shmlimit` from the packaged Python
# package; and a C program built with the build tree's own shmlimit.pc.
# Also checks the packages' names, version, contents, that their
# binaries are stripped with the debug information in the -dbgsym
# packages, and (as root) that dpkg accepts their dependencies
# (`dpkg --dry-run -i`, which installs nothing).
#
#   packaging.sh BUILD_DIR VERSION
set -euo pipefail

BUILD="${1:?usage: packaging.sh BUILD_DIR VERSION}"
VERSION="${2:?usage: packaging.sh BUILD_DIR VERSION}"
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
for pkg in libshmlimit libshmlimit-dev shmlimit-tools python3-shmlimit; do
  f="${pkg}_${VERSION}-1_${ARCH}.deb"
  [[ -f "$f" ]] || { ls -l >&2; fail "no $f"; }
  [[ "$(dpkg-deb -f "$f" Package)" == "$pkg" ]] || fail "$f: Package is not $pkg"
  [[ "$(dpkg-deb -f "$f" Version)" == "${VERSION}-1" ]] || fail "$f: Version is not ${VERSION}-1"
  DEB[$pkg]="$f"
done

contains() {  # contains DEB PATH...: every PATH is in the package
  local listing deb="$1"
  shift
  listing="$(dpkg-deb -c "$deb" | awk '{print $6}')"
  for p in "$@"; do
    grep -qx "\./$p" <<<"$listing" || fail "$deb does not contain $p"
  done
}
contains "${DEB[libshmlimit]}" usr/lib/libshmlimit_c.so.1
contains "${DEB[libshmlimit-dev]}" usr/include/shmlimit/shmlimit.h usr/include/shmlimit/shmlimit.hpp \
  usr/lib/libshmlimit.a usr/lib/libshmlimit_c.so usr/lib/pkgconfig/shmlimit.pc \
  usr/lib/cmake/shmlimit/shmlimitConfig.cmake
contains "${DEB[shmlimit-tools]}" usr/bin/shmlimit usr/share/man/man1/shmlimit.1 \
  usr/share/bash-completion/completions/shmlimit usr/lib/systemd/system/shmlimit-exporter.service \
  usr/share/doc/shmlimit-tools/cli.md
contains "${DEB[python3-shmlimit]}" usr/lib/python3/dist-packages/shmlimit/__init__.py
if dpkg-deb -c "${DEB[libshmlimit]}" | grep -q 'usr/include'; then fail "headers in libshmlimit"; fi
dpkg-deb -f "${DEB[libshmlimit-dev]}" Depends | grep -q "libshmlimit (= ${VERSION}-1)" ||
  fail "libshmlimit-dev does not depend on libshmlimit (= ${VERSION}-1)"

mkdir -p "$TMP/root"
for f in "${DEB[@]}"; do dpkg -x "$f" "$TMP/root"; done
ROOT="$TMP/root"

# Stripped, with the debug information in the -dbgsym packages.
for bin in usr/bin/shmlimit usr/lib/libshmlimit_c.so.1; do
  file -L "$ROOT/$bin" | grep -q ', stripped' || fail "$bin is not stripped: $(file -L "$ROOT/$bin")"
done
ls ./*-dbgsym_*.ddeb >/dev/null 2>&1 || fail "no -dbgsym packages"
mkdir -p "$TMP/dbg"
for f in ./*-dbgsym_*.ddeb; do dpkg -x "$f" "$TMP/dbg"; done
find "$TMP/dbg/usr/lib/debug" -name '*.debug' | grep -q . || fail "no .debug files in the -dbgsym packages"
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
"$CLI" ls | grep -q "^$SEG " || fail "shmlimit ls does not list $SEG"

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
LD_LIBRARY_PATH="$ROOT/usr/lib" ldd "$TMP/app" | grep -q "$ROOT/usr/lib/libshmlimit_c.so.1" ||
  fail "the C program does not load the packaged libshmlimit_c.so.1"

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

# dpkg accepts the packages and their dependencies (installs nothing).
if [[ $EUID -eq 0 ]]; then
  dpkg --dry-run -i "${DEB[@]}" >"$TMP/dpkg.log" 2>&1 || { cat "$TMP/dpkg.log" >&2; fail "dpkg --dry-run -i"; }
else
  echo "not root: dpkg --dry-run -i skipped"
fi
echo "packaging: ok"
