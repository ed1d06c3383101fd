// The ratio tables of bench_acquire.cpp: a Google Benchmark reporter that
// forwards to the display reporter and keeps every case's times, then
// prints each case as a ratio to the floor cases of the same run, and the
// verdicts of the targets. Included by bench_acquire.cpp alone: its
// anonymous namespace is that file's.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace {

// ---------------------------------------------------------------------------
// Ratio table

// Forwards everything to the reporter chosen by --benchmark_format and keeps
// each case's real and CPU time per operation.
//
// Ratios use CPU time: on a shared machine (other processes on the same 2
// cores) real time also counts the slices in which the benchmark was not
// running at all, and that noise does not cancel out between two cases.
// On an idle machine the two agree (the real time column shows it).
class RatioReporter final : public benchmark::BenchmarkReporter {
 public:
  explicit RatioReporter(benchmark::BenchmarkReporter* inner) : inner_(inner) {}

  bool ReportContext(const Context& context) override { return inner_->ReportContext(context); }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) collect(r);
    inner_->ReportRuns(runs);
  }
  void Finalize() override { inner_->Finalize(); }

  void print(std::ostream& os) const {
    if (times_.empty()) return;  // nothing ran (--benchmark_list_tests, an empty filter)
    // The order of kCases, whatever order the runs were reported in.
    std::vector<std::string> order;
    for (const Case& c : kCases) {
      if (times_.count(c.name)) order.emplace_back(c.name);
    }
    const auto clock = cpu_of("BM_Floor_ClockGettime");
    const auto floor1 = cpu_of("BM_Floor_ClockPlusCas");
    const auto floor2 = cpu_of("BM_Floor_ClockPlusCas_2Proc");
    const auto ratio = [](std::optional<double> a, std::optional<double> b) {
      if (!a || !b || *b <= 0) return std::string("n/a");
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.2fx", *a / *b);
      return std::string(buf);
    };
    const auto ns = [](std::optional<double> v) {
      if (!v) return std::string("n/a");
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.1f", *v);
      return std::string(buf);
    };
    const auto row = [&](const std::string& name, std::optional<double> a,
                         std::optional<double> b) {
      os << "| " << name << " | " << ns(cpu_of(name)) << " | " << ns(median_cpu_of(name)) << " | "
         << ns(real_of(name)) << " | " << ratio(cpu_of(name), a) << " | " << ratio(cpu_of(name), b)
         << " |\n";
    };
    const std::string head =
        "| case | CPU ns/op (min) | CPU ns/op (median) | real ns/op (median) | ";
    const std::string rule = "|---|---:|---:|---:|---:|---:|\n";
    os << "\n## Ratios to the floor measured in the same process\n\n"
       << repetitions_ << " repetition(s) per case. Ratios are of the fastest repetition's "
       << "CPU time (min), the one least disturbed by other processes.\n\n"
       << head << "/ clock+CAS | / clock alone |\n"
       << rule;
    bool any2 = false;
    for (const std::string& name : order) {
      if (name.starts_with("BM_Alt_")) continue;  // their own table below
      if (name.ends_with("_2Proc")) {
        any2 = true;
        continue;
      }
      row(name, floor1, clock);
    }
    if (any2) {
      os << "\n## Under contention: a child process pinned to the other core runs the same "
            "operation on the same word / key\n\n"
         << head << "/ clock+CAS (2 proc) | / clock+CAS (1 proc) |\n"
         << rule;
      for (const std::string& name : order) {
        if (name.ends_with("_2Proc") && !name.starts_with("BM_Alt_")) row(name, floor2, floor1);
      }
    }
    const auto cold = cpu_of("BM_Floor_ClockPlusCas_ColdSlot");
    const auto cold_prefetched = cpu_of("BM_Floor_PrefetchClockCas_ColdSlot");
    if (cold) {
      os << "\n## Cold keys: ratio to the same floor on a cache- and TLB-cold slot\n\n"
         << head << "/ cold clock+CAS | / cold prefetch+clock+CAS |\n"
         << rule;
      for (const char* name :
           {"BM_Floor_ClockPlusCas_ColdSlot", "BM_Floor_PrefetchClockCas_ColdSlot",
            "BM_Acquire_ManyKeys", "BM_Acquire_NewKeys"}) {
        if (times_.count(name)) row(name, cold, cold_prefetched);
      }
    }
    print_alternatives(os, ratio, ns);
    const auto hot = cpu_of("BM_Acquire_HotKey");
    if (hot && floor1 && *floor1 > 0) {
      const double r = *hot / *floor1;
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "\nHot-key acquire: %.1f ns = %.2fx clock+CAS (%.1f ns); target <= 1.50x: %s\n",
                    *hot, r, *floor1, r <= 1.5 ? "MET" : "NOT MET");
      os << buf;
    }
    // Denied and peek no slower than admitted (same key, same run).
    for (const char* name : {"BM_Acquire_HotKey_Denied", "BM_Peek_HotKey"}) {
      const auto t = cpu_of(name);
      if (!t || !hot || *hot <= 0) continue;
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "%s / BM_Acquire_HotKey: %.2fx (CPU, min); target <= 1.00x: %s\n", name,
                    *t / *hot, *t <= *hot ? "MET" : "NOT MET");
      os << buf;
    }
    // Outbound quotas: a reservation next to an acquire (same key, same run).
    for (const char* name : {"BM_Reserve_HotKey", "BM_Reserve_Queued"}) {
      const auto t = cpu_of(name);
      if (!t || !hot || *hot <= 0) continue;
      char buf[200];
      std::snprintf(buf, sizeof buf, "%s / BM_Acquire_HotKey: %.2fx (CPU, min)\n", name, *t / *hot);
      os << buf;
    }
    const auto busy = [&](const std::string& name) {
      const auto c = median_cpu_of(name), w = real_of(name);
      return c && w && *c > 0 && *w / *c > 1.2;
    };
    if (busy("BM_Floor_ClockGettime") || busy("BM_Floor_ClockPlusCas") ||
        busy("BM_Acquire_HotKey")) {
      os << "\nWARNING: real time exceeds CPU time by more than 20% on single-process cases: "
            "other processes were using the CPUs during this run; treat the numbers with care.\n";
    }
  }

  // Each alternative against shmlimit on the same workload and
  // number of processes. A mutex that is contended blocks in the kernel
  // (futex) without using CPU, so under contention CPU time flatters it:
  // the real-time ratio is given as well and is the one to read for _2Proc.
  // Redis and memcached spend their time in another process (the server)
  // and in the network stack: only the real-time ratio means anything there.
  template <class Ratio, class Ns>
  void print_alternatives(std::ostream& os, const Ratio& ratio, const Ns& ns) const {
    struct Pair {
      const char* alt;
      const char* ours;
    };
    constexpr Pair kPairs[] = {
        {"BM_Alt_MutexMap_HotKey", "BM_Acquire_HotKey"},
        {"BM_Alt_MutexMap_HotKey_DecisionClock", "BM_Acquire_HotKey"},
        {"BM_Alt_MutexMap_HotKey_2Proc", "BM_Acquire_HotKey_2Proc"},
        {"BM_Alt_Redis_HotKey", "BM_Acquire_HotKey"},
        {"BM_Alt_Memcached_HotKey", "BM_Acquire_HotKey"},
    };
    bool any = false;
    for (const Pair& p : kPairs) any = any || times_.count(p.alt) != 0;
    if (!any) return;
    os << "\n## Alternatives: the same decision implemented as a user would\n\n"
       << "| case | CPU ns/op (min) | real ns/op (median) | shmlimit case | alt / shmlimit (CPU, "
          "min) | alt / shmlimit (real, median) |\n"
       << "|---|---:|---:|---|---:|---:|\n";
    for (const Pair& p : kPairs) {
      if (!times_.count(p.alt)) continue;
      os << "| " << p.alt << " | " << ns(cpu_of(p.alt)) << " | " << ns(real_of(p.alt)) << " | "
         << p.ours << " | " << ratio(cpu_of(p.alt), cpu_of(p.ours)) << " | "
         << ratio(real_of(p.alt), real_of(p.ours)) << " |\n";
    }
    // Faster than the mutex map in one process (CPU, fastest
    // repetition, as the other single-process ratios).
    const auto m1 = cpu_of("BM_Alt_MutexMap_HotKey");
    const auto s1 = cpu_of("BM_Acquire_HotKey");
    if (m1 && s1 && *m1 > 0) {
      char buf[200];
      std::snprintf(
          buf, sizeof buf,
          "\nHot key, 1 process: shmlimit / mutex map = %.2fx (CPU, min); target < 1.00x: %s\n",
          *s1 / *m1, *s1 < *m1 ? "MET" : "NOT MET");
      os << buf;
    }
    const auto a = real_of("BM_Alt_MutexMap_HotKey_2Proc");
    const auto b = real_of("BM_Acquire_HotKey_2Proc");
    if (a && b && *b > 0) {
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "\nHot key, 2 processes: mutex map / shmlimit = %.2fx (real time, median); "
                    "target > 1.00x (ahead): %s\n",
                    *a / *b, *a / *b > 1.0 ? "MET" : "NOT MET");
      os << buf;
    }
  }

 private:
  struct Times {
    std::optional<double> median_real, median_cpu;  // the "median" aggregate, when reported
    std::optional<double> min_cpu;                  // the "min" aggregate, when reported
    std::vector<double> real, cpu;                  // per-repetition values otherwise
    bool error = false;
  };

  static double to_ns(double v, benchmark::TimeUnit unit) {
    switch (unit) {
      case benchmark::kNanosecond:
        return v;
      case benchmark::kMicrosecond:
        return v * 1e3;
      case benchmark::kMillisecond:
        return v * 1e6;
      case benchmark::kSecond:
        return v * 1e9;
    }
    return v;
  }

  static std::optional<double> median(std::vector<double> v) {
    if (v.empty()) return std::nullopt;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }

  void collect(const Run& r) {
    Times& t = times_[r.run_name.function_name];
    if (r.error_occurred) {
      t.error = true;
      return;
    }
    const double real = to_ns(r.GetAdjustedRealTime(), r.time_unit);
    const double cpu = to_ns(r.GetAdjustedCPUTime(), r.time_unit);
    if (r.run_type == Run::RT_Aggregate) {
      if (r.aggregate_name == "median") {
        t.median_real = real;
        t.median_cpu = cpu;
        repetitions_ = r.repetitions;
      } else if (r.aggregate_name == "min") {
        t.min_cpu = cpu;
      }
    } else {
      t.real.push_back(real);
      t.cpu.push_back(cpu);
    }
  }

  const Times* find(const std::string& name) const {
    const auto it = times_.find(name);
    return it == times_.end() || it->second.error ? nullptr : &it->second;
  }
  // The figure ratios are taken of: the fastest repetition's CPU time.
  std::optional<double> cpu_of(const std::string& name) const {
    const Times* t = find(name);
    if (t == nullptr) return std::nullopt;
    if (t->min_cpu) return t->min_cpu;
    if (t->cpu.empty()) return std::nullopt;
    return *std::min_element(t->cpu.begin(), t->cpu.end());
  }
  std::optional<double> median_cpu_of(const std::string& name) const {
    const Times* t = find(name);
    if (t == nullptr) return std::nullopt;
    return t->median_cpu ? t->median_cpu : median(t->cpu);
  }
  std::optional<double> real_of(const std::string& name) const {
    const Times* t = find(name);
    if (t == nullptr) return std::nullopt;
    return t->median_real ? t->median_real : median(t->real);
  }

  benchmark::BenchmarkReporter* inner_;
  std::map<std::string, Times, std::less<>> times_;
  std::int64_t repetitions_ = 1;
};

}  // namespace
