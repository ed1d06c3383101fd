#!/usr/bin/env bash
# Issue #7 report: builds and runs shmlimit_bench (Google Benchmark: shmlimit
# against the floor and the alternatives, as ratios) and shmlimit_throughput
# (multi-process throughput and latency, shmlimit against the mutex map), and
# writes bench/report.md; if /usr/bin/python3 has matplotlib, also the plot
# bench/throughput.png (throughput against the number of processes).
#
#   bash scripts/bench_report.sh                         everything
#   bash scripts/bench_report.sh --benchmark_filter='Floor_ClockPlusCas|HotKey|Alt_'
#                                                        extra arguments go to shmlimit_bench
#
# Environment:
#   SHMLIMIT_BENCH_PRESET=name          CMake preset to build with (default dev)
#   SHMLIMIT_BENCH_REPETITIONS=n        repetitions per benchmark case (default 5)
#   SHMLIMIT_THROUGHPUT_ARGS="..."      arguments for shmlimit_throughput
#                                       (default "--duration=2 --procs=1,2,4")
#   SHMLIMIT_REPORT=path                report path (default bench/report.md)
#   SHMLIMIT_REPORT_NO_APT=1            do not apt-get install the report's packages
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

preset="${SHMLIMIT_BENCH_PRESET:-dev}"
repetitions="${SHMLIMIT_BENCH_REPETITIONS:-5}"
tp_args="${SHMLIMIT_THROUGHPUT_ARGS:---duration=2 --procs=1,2,4}"
report="${SHMLIMIT_REPORT:-bench/report.md}"
plot="$(dirname "$report")/throughput.png"

say() { printf '==> %s\n' "$*" >&2; }
run() { printf '+ %s\n' "$*" >&2; "$@"; }
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh

# The report's own dependencies (not the build's, which scripts/setup.sh
# installs): the two servers and client libraries the alternatives need,
# and matplotlib for the plot. Installed with apt-get when missing and root.
report_packages=(redis-server libhiredis-dev memcached libmemcached-dev python3-matplotlib)
missing=()
for p in "${report_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 && ${SHMLIMIT_REPORT_NO_APT:-0} != 1 && $(id -u) == 0 ]]; then
  say "installing ${missing[*]}"
  run apt-get update -qq
  DEBIAN_FRONTEND=noninteractive run apt-get install -y --no-install-recommends "${missing[@]}"
  # A fresh configure finds the client libraries.
  rm -f "build/${SHMLIMIT_BENCH_PRESET:-dev}/CMakeCache.txt"
fi

# ---- build ------------------------------------------------------------------
run cmake --preset "$preset" >&2
run cmake --build --preset "$preset" --target shmlimit_bench shmlimit_throughput >&2
bindir="build/$preset/bench"
bench="$bindir/shmlimit_bench"
throughput="$bindir/shmlimit_throughput"

# ---- segments left by a killed run --------------------------------------------
remove_stale_bench_segments

# ---- machine -------------------------------------------------------------------
machine_facts
compiler="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "build/$preset/CMakeCache.txt")"
compiler_version="$("${compiler:-c++}" --version 2>/dev/null | head -n1)"
boost_version="$(sed -n 's/^#define BOOST_LIB_VERSION "\(.*\)"/\1/p' /usr/include/boost/version.hpp 2>/dev/null | tr _ .)"
redis_version="$(redis-server --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p' || true)"
memcached_version="$(memcached -V 2>/dev/null | awk '{print $2}' || true)"
revision="$(git rev-parse --short HEAD 2>/dev/null || echo none)"
if [[ -n "$(git status --porcelain -- src include bench 2>/dev/null)" ]]; then
  revision="$revision + uncommitted changes in src/, include/ or bench/"
fi

# ---- run -----------------------------------------------------------------------
bench_out="$(mktemp)"
tp_out="$(mktemp)"
tp_csv="$(mktemp)"
trap 'rm -f "$bench_out" "$tp_out" "$tp_csv"' EXIT

run_bench "$bench" "$repetitions" "$bench_out" "$@"

say "running $throughput $tp_args"
# shellcheck disable=SC2086  # word splitting of the argument list is intended
"$throughput" $tp_args --csv="$tp_csv" | tee "$tp_out"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- plot ----------------------------------------------------------------------
plot_note="not drawn: /usr/bin/python3 has no matplotlib (Debian package python3-matplotlib)"
if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  if MPLBACKEND=Agg /usr/bin/python3 - "$tp_csv" "$plot" <<'EOF'; then
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = list(csv.DictReader(open(sys.argv[1])))
workloads = sorted({r["workload"] for r in rows}, key=lambda w: (w != "hot", w))
fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.5), squeeze=False)
for ax, w in zip(axes[0], workloads):
    for impl in sorted({r["impl"] for r in rows}):
        pts = sorted((int(r["procs"]), float(r["ops_per_s"]) / 1e6)
                     for r in rows if r["workload"] == w and r["impl"] == impl)
        if pts:
            ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o", label=impl)
    ax.set_title("hot key" if w == "hot" else f"{w} keys")
    ax.set_xlabel("processes")
    ax.set_ylabel("decisions / s (millions, all processes)")
    ax.set_xticks(sorted({int(r["procs"]) for r in rows}))
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
fig.suptitle("shmlimit vs interprocess_mutex + table (shmlimit_throughput)")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
EOF
    plot_note="![throughput vs processes]($(basename "$plot"))"
  else
    plot_note="not drawn: the matplotlib script failed"
  fi
fi

# ---- report --------------------------------------------------------------------
{
  echo "# shmlimit against the alternatives (issue #7)"
  echo
  echo "Written by \`scripts/bench_report.sh\` on $started."
  echo
  echo "## Machine"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| CPU | ${cpu_model:-unknown} (${cpus} CPUs, ${cores_per_socket:-?} cores per socket${hypervisor:+, VM on $hypervisor}) |"
  echo "| Kernel | $kernel |"
  echo "| Clock source | $clocksource |"
  echo "| Compiler | ${compiler_version:-unknown} (CMake preset \`$preset\`) |"
  echo "| Boost | ${boost_version:-unknown} (interprocess_mutex) |"
  echo "| Redis / memcached | ${redis_version:-not installed} / ${memcached_version:-not installed} |"
  echo "| Source | $revision |"
  echo "| Load average before / after | $load_before / $load_after |"
  echo
  echo "How to read the tables: [README.md](README.md). In short: single-process ratios use"
  echo "the fastest repetition's CPU time; for contended cases and for Redis / memcached read"
  echo "the real-time ratio (a blocked mutex waiter or a client waiting on a socket uses no CPU)."
  echo
  bench_tables "$bench_out"
  echo
  cat "$tp_out"
  echo
  echo "### Plot"
  echo
  echo "$plot_note"
  echo
  echo "## Google Benchmark console output"
  echo
  echo '```'
  bench_console "$bench_out"
  echo '```'
} >"$report"
say "wrote $report"
