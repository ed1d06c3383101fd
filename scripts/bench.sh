#!/usr/bin/env bash
# The one benchmark script. Builds the benchmarks with a CMake preset
# (`bench`: Release, no tests, tools or Python), runs
#   shmlimit_bench        Google Benchmark: a decision against the floor measured
#                         in the same process, and against the alternatives
#                         (mutex map, Redis, memcached), as ratio tables;
#   shmlimit_throughput   multi-process throughput and latency, shmlimit against
#                         the mutex map and the clock + CAS floor (plot:
#                         bench/throughput.png);
#   shmlimit_bench_tiers  the local, Redis and hybrid tiers (when the Redis tier
#                         is built and redis-server is installed);
#   bench/bench_nginx.sh  nginx with no limit, limit_req and the shmlimit module
#                         side by side under wrk (when the module is built:
#                         Debian's nginx-dev; and nginx and wrk are installed);
#   bench/bench_drf.py    the per-call cost of shmlimit's DRF throttle against
#                         DRF's own on LocMemCache (when /usr/bin/python3 has
#                         django and rest_framework; the module is then built
#                         in the same preset, SHMLIMIT_BUILD_PYTHON=ON);
# and writes one report, bench/results.md: the machine, then each section.
# Cases and how to read them: bench/README.md.
#
#   bash scripts/bench.sh                              everything (about 15 minutes)
#   bash scripts/bench.sh --benchmark_filter=HotKey    extra arguments go to shmlimit_bench
#   SHMLIMIT_BENCH_REPETITIONS=1 SHMLIMIT_BENCH_MIN_TIME=0.01 SHMLIMIT_THROUGHPUT_ARGS="--duration=0.1 --procs=1,2" \
#     SHMLIMIT_BENCH_RESULTS=/tmp/smoke.md bash scripts/bench.sh --benchmark_filter='Floor_Clock|HotKey$'
#                                                      a smoke run of the script (seconds, figures meaningless)
#
# Environment:
#   SHMLIMIT_BENCH_PRESET=name      configure and build preset (default bench)
#   SHMLIMIT_BENCH_RESULTS=path     the report (default bench/results.md; the plot goes beside it)
#   SHMLIMIT_BENCH_REPETITIONS=n    repetitions per Google Benchmark case, interleaved at random (default 5)
#   SHMLIMIT_BENCH_MIN_TIME=s       --benchmark_min_time of shmlimit_bench and shmlimit_bench_tiers
#                                   (default: Google Benchmark's own, 0.5 s)
#   SHMLIMIT_THROUGHPUT_ARGS="..."  arguments of shmlimit_throughput (default "--duration=2 --procs=1,2,4";
#                                   "skip": not run)
#   SHMLIMIT_BENCH_TIERS=0          do not run shmlimit_bench_tiers
#   SHMLIMIT_BENCH_NGINX=0          do not run bench/bench_nginx.sh (its own variables: see its header)
#   SHMLIMIT_BENCH_DRF=0            do not run bench/bench_drf.py
#   SHMLIMIT_BENCH_DRF_ARGS="..."   its arguments (default: its own, 7 rounds of 2000 calls)
#   SHMLIMIT_BENCH_WAIT_IDLE=s      wait up to s seconds for the CPUs to be >= 90% idle before running (default 0)
#   SHMLIMIT_BENCH_NO_APT=1         do not apt-get install the alternatives' servers and client
#                                   libraries and matplotlib when missing (installed only as root)
#
# To compare two revisions, check each out (git worktree add) and run this
# script in both, alternating runs: compare ratios, not single nanosecond figures.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

preset="${SHMLIMIT_BENCH_PRESET:-bench}"
results="${SHMLIMIT_BENCH_RESULTS:-bench/results.md}"
plot="$(dirname "$results")/throughput.png"
repetitions="${SHMLIMIT_BENCH_REPETITIONS:-5}"
min_time="${SHMLIMIT_BENCH_MIN_TIME:-}"
tp_args="${SHMLIMIT_THROUGHPUT_ARGS:---duration=2 --procs=1,2,4}"
run_tiers="${SHMLIMIT_BENCH_TIERS:-1}"
run_drf="${SHMLIMIT_BENCH_DRF:-1}"
drf_args="${SHMLIMIT_BENCH_DRF_ARGS:-}"
wait_idle="${SHMLIMIT_BENCH_WAIT_IDLE:-0}"

say() { printf '==> %s\n' "$*" >&2; }
run() { printf '+ %s\n' "$*" >&2; "$@"; }

# What is measured, named before the build (HEAD may move during a long run).
revision="$(git rev-parse --short HEAD 2>/dev/null || echo none)"
if [[ -n "$(git status --porcelain -- src include bench 2>/dev/null)" ]]; then
  revision="$revision + uncommitted changes in src/, include/ or bench/"
fi

# ---- the report's own packages ---------------------------------------------------
# Not the build's (scripts/setup.sh installs those): the servers and client
# libraries the alternatives need, and matplotlib for the plot.
report_packages=(redis-server libhiredis-dev memcached libmemcached-dev python3-matplotlib)
missing=()
for p in "${report_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 && ${SHMLIMIT_BENCH_NO_APT:-0} != 1 && $(id -u) == 0 ]]; then
  say "installing ${missing[*]}"
  run apt-get update -qq
  DEBIAN_FRONTEND=noninteractive run apt-get install -y --no-install-recommends "${missing[@]}"
  rm -f "build/$preset/CMakeCache.txt"  # a fresh configure finds the client libraries
fi

# ---- build ------------------------------------------------------------------------
# The DRF comparison needs Debian's python3 with django and DRF, and the
# Python module built (Release, like the rest) in this preset.
drf_note=""
configure_args=()
if [[ "$run_drf" == 0 ]]; then
  drf_note="Not run (SHMLIMIT_BENCH_DRF=0)."
elif ! /usr/bin/python3 -c 'import django, rest_framework' 2>/dev/null; then
  drf_note="Not run: /usr/bin/python3 has no django and djangorestframework (Debian python3-django, python3-djangorestframework)."
else
  configure_args+=(-DSHMLIMIT_BUILD_PYTHON=ON -DPython3_EXECUTABLE=/usr/bin/python3)
fi
run cmake --preset "$preset" "${configure_args[@]}" >&2
targets=(shmlimit_bench shmlimit_throughput)
if grep -q '^SHMLIMIT_BUILD_REDIS:BOOL=ON' "build/$preset/CMakeCache.txt"; then targets+=(shmlimit_bench_tiers); fi
if [[ -z "$drf_note" ]]; then targets+=(shmlimit_python); fi
nginx_note=""
if [[ "${SHMLIMIT_BENCH_NGINX:-1}" == 0 ]]; then
  nginx_note="Not run (SHMLIMIT_BENCH_NGINX=0)."
elif ! grep -q '^SHMLIMIT_BUILD_NGINX:BOOL=ON' "build/$preset/CMakeCache.txt"; then
  nginx_note="Not run: the nginx module is not built (Debian nginx-dev)."
elif ! command -v wrk >/dev/null || [[ ! -x /usr/sbin/nginx ]]; then
  nginx_note="Not run: needs Debian's nginx and wrk."
else
  targets+=(ngx_http_shmlimit_module)
fi
run cmake --build --preset "$preset" --target "${targets[@]}" >&2
bindir="build/$preset/bench"
build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "build/$preset/CMakeCache.txt")"
build_flags="$(sed -n "s/^CMAKE_CXX_FLAGS_${build_type^^}:[A-Z]*=//p" "build/$preset/CMakeCache.txt")"
compiler="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "build/$preset/CMakeCache.txt")"

# ---- segments left by a killed run --------------------------------------------------
for f in /dev/shm/shmlimit-bench-*; do
  [[ -e "$f" ]] || continue
  pid="${f#/dev/shm/shmlimit-bench-}"
  pid="${pid%%-*}"
  if [[ "$pid" =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
    say "removing $f (its process $pid is gone)"
    rm -f -- "$f"
  fi
done

# ---- machine ------------------------------------------------------------------------
# Percentage of CPU time idle over the next 2 seconds, from /proc/stat.
idle_percent() {
  local a b total=0 i
  read -r -a a < <(grep '^cpu ' /proc/stat)
  sleep 2
  read -r -a b < <(grep '^cpu ' /proc/stat)
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  local idle=$((b[4] - a[4] + b[5] - a[5]))
  echo $((total > 0 ? 100 * idle / total : 0))
}
idle="$(idle_percent)"
if ((wait_idle > 0)); then
  deadline=$((SECONDS + wait_idle))
  while ((idle < 90 && SECONDS < deadline)); do
    say "CPUs ${idle}% idle; waiting for >= 90% (up to ${wait_idle} s)"
    idle="$(idle_percent)"
  done
fi
lscpu_out="$(lscpu 2>/dev/null || true)"
lscpu_field() { sed -n "s/^$1:[[:space:]]*//p" <<<"$lscpu_out" | head -n1; }
cpu_model="$(lscpu_field 'Model name')"
cpu_family="$(lscpu_field 'CPU family')"
cpu_model_number="$(lscpu_field 'Model')"
cores_per_socket="$(lscpu_field 'Core(s) per socket')"
hypervisor="$(lscpu_field 'Hypervisor vendor')"
cpus="$(nproc)"
clocksource="$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo unknown)"
kernel="$(uname -srm)"
compiler_version="$("${compiler:-c++}" --version 2>/dev/null | head -n1)"
benchmark_version="$(dpkg-query -W -f='${Version}' libbenchmark-dev 2>/dev/null || echo unknown)"
boost_version="$(sed -n 's/^#define BOOST_LIB_VERSION "\(.*\)"/\1/p' /usr/include/boost/version.hpp 2>/dev/null | tr _ .)"
redis_version="$(redis-server --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p' || true)"
memcached_version="$(memcached -V 2>/dev/null | awk '{print $2}' || true)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"

# ---- run ------------------------------------------------------------------------------
bench_out="$(mktemp)"
tp_out="$(mktemp)"
tp_csv="$(mktemp)"
tiers_out="$(mktemp)"
drf_out="$(mktemp)"
nginx_out="$(mktemp)"
trap 'rm -f "$bench_out" "$tp_out" "$tp_csv" "$tiers_out" "$drf_out" "$nginx_out"' EXIT

# Google Benchmark: every case <repetitions> times, interleaved at random (a
# burst of load from other processes then does not land on all repetitions of
# one case), aggregates only; output to the terminal and the file.
# gbench <binary> <output file> <interleave: true|false> [arguments...]
gbench() {
  local bin="$1" out="$2" interleave="$3"
  shift 3
  local args=(--benchmark_repetitions="$repetitions" --benchmark_report_aggregates_only=true
              --benchmark_enable_random_interleaving="$interleave" --benchmark_color=false)
  [[ -n "$min_time" ]] && args+=(--benchmark_min_time="$min_time")
  say "running $bin"
  "$bin" "${args[@]}" "$@" 2>&1 | tee "$out"
}
# shmlimit_bench prints Google Benchmark's context and console output, then
# its ratio tables (markdown, from the first line that starts with "## ").
bench_tables() { awk '/^## /{found=1} found' "$1"; }
bench_console() { awk '/^## /{exit} {print}' "$1" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'; }

gbench "$bindir/shmlimit_bench" "$bench_out" true "$@"

tp_note=""
if [[ "$tp_args" == skip ]]; then
  tp_note="Not run (SHMLIMIT_THROUGHPUT_ARGS=skip)."
else
  say "running $bindir/shmlimit_throughput $tp_args"
  # shellcheck disable=SC2086  # word splitting of the argument list is intended
  "$bindir/shmlimit_throughput" $tp_args --csv="$tp_csv" | tee "$tp_out"
fi

tiers_note=""
if [[ " ${targets[*]} " != *" shmlimit_bench_tiers "* ]]; then
  tiers_note="Not run: this build has no Redis tier (hiredis not found)."
elif [[ "$run_tiers" == 0 ]]; then
  tiers_note="Not run (SHMLIMIT_BENCH_TIERS=0)."
elif ! command -v redis-server >/dev/null 2>&1; then
  tiers_note="Not run: redis-server is not installed."
else
  # In order, not interleaved: x_local divides by the local case, which runs first.
  gbench "$bindir/shmlimit_bench_tiers" "$tiers_out" false
fi

if [[ -z "$nginx_note" ]]; then
  say "running bench/bench_nginx.sh"
  if ! bash bench/bench_nginx.sh "build/$preset/nginx/ngx_http_shmlimit_module.so" | tee "$nginx_out"; then
    nginx_note="Failed: see the output of bench/bench_nginx.sh above."
  fi
fi
if [[ -z "$drf_note" ]]; then
  say "running bench/bench_drf.py $drf_args"
  # shellcheck disable=SC2086  # word splitting of the argument list is intended
  if ! /usr/bin/python3 bench/bench_drf.py --build "build/$preset" $drf_args | tee "$drf_out"; then
    drf_note="Failed: see the output of bench/bench_drf.py above."
  fi
fi
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- plot --------------------------------------------------------------------------------
plot_note="not drawn: /usr/bin/python3 has no matplotlib (Debian package python3-matplotlib)"
if [[ -n "$tp_note" ]]; then
  plot_note="not drawn: shmlimit_throughput was not run"
elif [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  if MPLBACKEND=Agg /usr/bin/python3 - "$tp_csv" "$plot" <<'EOF'; then
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = list(csv.DictReader(open(sys.argv[1])))
workloads = sorted({r["workload"] for r in rows}, key=lambda w: (w != "hot", w))
impls = sorted({r["impl"] for r in rows})
procs = sorted({int(r["procs"]) for r in rows})
# Top row: decisions per second; bottom row: p99 latency of one decision.
fig, axes = plt.subplots(2, len(workloads), figsize=(6 * len(workloads), 8), squeeze=False)
for col, w in enumerate(workloads):
    title = "hot key" if w == "hot" else f"{w} keys"
    for row, (field, scale, label) in enumerate((("ops_per_s", 1e6, "decisions / s (millions, all processes)"),
                                                  ("p99_ns", 1.0, "p99 latency of one decision (ns, log)"))):
        ax = axes[row][col]
        for impl in impls:
            pts = sorted((int(r["procs"]), float(r[field]) / scale)
                         for r in rows if r["workload"] == w and r["impl"] == impl)
            if pts:
                ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o", label=impl)
        ax.set_title(title)
        ax.set_xlabel("processes")
        ax.set_ylabel(label)
        ax.set_xticks(procs)
        if row == 0:
            ax.set_ylim(bottom=0)
        else:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
fig.suptitle("shmlimit vs interprocess_mutex + table, and the clock + CAS floor (shmlimit_throughput)")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
EOF
    plot_note="![throughput and p99 latency vs processes]($(basename "$plot"))"
  else
    plot_note="not drawn: the matplotlib script failed"
  fi
fi

# ---- report --------------------------------------------------------------------------------
{
  echo "# shmlimit benchmark results"
  echo
  echo "Written by \`scripts/bench.sh\` on $started. Google Benchmark cases ran $repetitions time(s) each,"
  echo "interleaved at random. How to read the tables: [README.md](README.md)."
  echo
  echo "## Machine"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| CPU | ${cpu_model:-unknown} (family ${cpu_family:-?} model ${cpu_model_number:-?}; ${cpus} CPUs, ${cores_per_socket:-?} cores per socket${hypervisor:+, VM on $hypervisor}) |"
  echo "| Kernel | $kernel |"
  echo "| Clock source | $clocksource |"
  echo "| Compiler | ${compiler_version:-unknown} |"
  echo "| Build | CMake preset \`$preset\` (${build_type:-?}: ${build_flags:-no flags}) |"
  echo "| Google Benchmark | $benchmark_version${min_time:+ (min time $min_time s per repetition)} |"
  echo "| Boost | ${boost_version:-unknown} (interprocess_mutex) |"
  echo "| Redis / memcached | ${redis_version:-not installed} / ${memcached_version:-not installed} |"
  echo "| Source | $revision |"
  echo "| CPU idle before the run | ${idle}% (over 2 s) |"
  echo "| Load average before / after | $load_before / $load_after |"
  echo
  echo "Single-process ratios use the fastest repetition's CPU time; for contended cases and for"
  echo "Redis / memcached read the real-time ratio (a blocked mutex waiter or a client waiting on"
  echo "a socket uses no CPU)."
  echo
  bench_tables "$bench_out"
  echo
  if [[ -n "$tp_note" ]]; then
    echo "## Multi-process throughput (shmlimit_throughput)"
    echo
    echo "$tp_note"
  else
    cat "$tp_out"  # its own "## Multi-process throughput" section
    echo
    echo "Arguments of \`shmlimit_throughput\`: \`$tp_args\`."
  fi
  echo
  echo "### Plot"
  echo
  echo "$plot_note"
  echo
  echo "## Local, Redis and hybrid tiers (shmlimit_bench_tiers)"
  echo
  if [[ -n "$tiers_note" ]]; then
    echo "$tiers_note"
  else
    echo '```'
    sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$tiers_out"
    echo '```'
  fi
  echo
  if [[ -n "$nginx_note" ]]; then
    echo "## nginx: no limit, limit_req and shmlimit (bench/bench_nginx.sh)"
    echo
    echo "$nginx_note"
  else
    cat "$nginx_out"  # its own section
  fi
  echo
  if [[ -n "$drf_note" ]]; then
    echo "## DRF throttle per call (bench/bench_drf.py)"
    echo
    echo "$drf_note"
  else
    cat "$drf_out"  # its own "## DRF throttle per call" section
  fi
  echo
  echo "## shmlimit_bench console output"
  echo
  echo '```'
  bench_console "$bench_out"
  echo '```'
} >"$results"
say "wrote $results"
