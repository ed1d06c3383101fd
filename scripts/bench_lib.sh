# Sourced by scripts/bench.sh and scripts/bench_report.sh: what both do
# around a shmlimit_bench run. Needs say() from the caller.

# Removes /dev/shm/shmlimit-bench-<pid>-* segments whose process is gone
# (left by a killed run).
remove_stale_bench_segments() {
  local f pid
  for f in /dev/shm/shmlimit-bench-*; do
    [[ -e "$f" ]] || continue
    pid="${f#/dev/shm/shmlimit-bench-}"
    pid="${pid%%-*}"
    if [[ "$pid" =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
      say "removing $f (its process $pid is gone)"
      rm -f -- "$f"
    fi
  done
}

# Sets cpu_model, cpu_family, cpu_model_number, cpus, cores_per_socket,
# hypervisor, clocksource, kernel, load_before and started.
machine_facts() {
  local lscpu_out
  lscpu_out="$(lscpu 2>/dev/null || true)"
  lscpu_field() { sed -n "s/^$1:[[:space:]]*//p" <<<"$lscpu_out" | head -n1; }
  cpu_model="$(lscpu_field 'Model name')"
  cpu_family="$(lscpu_field 'CPU family')"
  cpu_model_number="$(lscpu_field 'Model')"
  cpus="$(nproc)"
  cores_per_socket="$(lscpu_field 'Core(s) per socket')"
  hypervisor="$(lscpu_field 'Hypervisor vendor')"
  clocksource="$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo unknown)"
  kernel="$(uname -srm)"
  load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
  started="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
}

# run_bench <binary> <repetitions> <output file> [arguments...]: every case
# <repetitions> times, interleaved at random (a burst of load from other
# processes then does not land on all repetitions of one case), aggregates
# only; the output goes to the terminal and the file.
run_bench() {
  local bin="$1" reps="$2" out="$3"
  shift 3
  say "running $bin ($reps repetitions per case)"
  "$bin" --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true \
    --benchmark_enable_random_interleaving=true --benchmark_color=false "$@" 2>&1 | tee "$out"
}

# The bench prints Google Benchmark's context (stderr) and console output,
# then the ratio tables (markdown, from the first line that starts with "## ").
bench_tables() { awk '/^## /{found=1} found' "$1"; }
# The console output before the tables, without trailing blank lines.
bench_console() { awk '/^## /{exit} {print}' "$1" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'; }
