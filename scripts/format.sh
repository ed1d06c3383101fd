#!/usr/bin/env bash
# Formats every C and C++ file of the project with clang-format (.clang-format
# at the root), or checks that they are formatted.
#
#   bash scripts/format.sh          rewrite the files in place
#   bash scripts/format.sh --check  list the files that differ; exit 1 if any
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fmt="${CLANG_FORMAT:-clang-format}"
if ! command -v "$fmt" >/dev/null 2>&1; then
  echo "format.sh: $fmt not found (Debian: clang-format; scripts/setup.sh installs it)" >&2
  exit 2
fi
mapfile -t files < <(git ls-files -- '*.c' '*.h' '*.cpp' '*.hpp')
case "${1:-}" in
  "")
    "$fmt" -i --style=file "${files[@]}"
    ;;
  --check)
    bad=()
    for f in "${files[@]}"; do
      if ! "$fmt" --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then bad+=("$f"); fi
    done
    if [[ ${#bad[@]} -gt 0 ]]; then
      printf 'format.sh: %d file(s) differ from clang-format (run: bash scripts/format.sh):\n' "${#bad[@]}" >&2
      printf '  %s\n' "${bad[@]}" >&2
      exit 1
    fi
    echo "format.sh: ${#files[@]} files formatted as .clang-format says"
    ;;
  *) echo "format.sh: unknown argument: $1 (none, or --check)" >&2; exit 2 ;;
esac
