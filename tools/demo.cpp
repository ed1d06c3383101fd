// `shmlimit-demo`: forked worker processes share one exact rate limit.
//
//   shmlimit-demo [--workers N] [--attempts M] [--name /NAME]
//
// 1. (Re)creates the segment /shmlimit-demo (1024 slots) and registers the
//    policy "api" = 1000/hour, burst 1000, on-full deny.
// 2. Forks N workers (default 4). Each opens the segment itself, signals
//    that it is ready and waits on a pipe barrier; the parent releases them
//    with a common start instant 20 ms ahead, so that they really start
//    together. Each then calls acquire("api", "demo-user") M times (default
//    200000) and reports its counts to the parent through a pipe.
// 3. The parent times the run on the segment's clock, from just before it
//    releases the barrier to just after the last worker is reaped, and
//    checks the exact bound of GCRA: every admission happened inside that
//    window, so
//        total admitted <= allowance = burst + floor(elapsed / T),
//    T = ceil(period / count) = 3.6 s, the emission interval. Admissions may
//    fall short of the allowance only by refill that became available after
//    the workers' last attempts.
// 4. Prints the same report as `shmlimit stat` and `shmlimit dump` (one
//    implementation: format.hpp) and keeps the segment for inspection.
//
// Exit status: 0 exact (no over-admission), 1 over-admitted, 2 error.
#include <fmt/format.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "format.hpp"
#include "shmlimit/shmlimit.hpp"

namespace {

namespace tools = shmlimit::tools;

constexpr const char* kDefaultName = "/shmlimit-demo";
constexpr const char* kPolicy = "api";
constexpr const char* kRate = "1000/hour";
constexpr std::uint64_t kBurst = 1000;
constexpr const char* kKey = "demo-user";
constexpr std::uint32_t kCapacity = 1024;
// Lead time between the barrier's release and the common start: enough for
// every worker to wake up and be spinning when it comes.
constexpr std::int64_t kStartDelayNs = 20'000'000;
constexpr unsigned kMaxWorkers = 256;  // the start instants fit in one PIPE_BUF write
// All workers insert the same new key at the same instant. A claimer that
// is descheduled mid-claim for longer than Options::claim_timeout (10 ms by
// default: likely on a loaded machine) makes the others apply on_full
// (Reason::kContended). So the workers wait longer, and the policy fails
// closed: a fallback may deny, never admit beyond the limit.
constexpr std::chrono::milliseconds kClaimTimeout{2000};

/// What a worker sends the parent: one write, smaller than PIPE_BUF, so
/// the reports of concurrent workers never interleave.
struct Report {
  std::int64_t pid = 0;
  std::uint64_t attempts = 0;
  std::uint64_t admitted = 0;
  std::uint64_t fallbacks = 0;  // decisions whose reason was not "ok"
  std::int64_t last_ns = 0;     // segment clock right after the last attempt
};
static_assert(sizeof(Report) <= PIPE_BUF, "a report is written atomically");
static_assert(kMaxWorkers * sizeof(std::int64_t) <= PIPE_BUF,
              "the start instants are written atomically");

bool write_all(int fd, const void* data, std::size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

/// Reads up to `size` bytes; returns how many were read before EOF.
std::size_t read_all(int fd, void* data, std::size_t size) {
  auto* p = static_cast<char*>(data);
  std::size_t got = 0;
  while (got < size) {
    const ssize_t n = ::read(fd, p + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  return got;
}

void make_pipe(int fds[2]) {
  if (::pipe(fds) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
}

/// The body of one forked worker. Never returns.
[[noreturn]] void worker(const std::string& name, std::uint64_t attempts, int ready_fd, int go_fd,
                         int result_fd) {
  int rc = 0;
  try {
    shmlimit::Options options;
    options.name = name;
    options.capacity = 0;
    options.claim_timeout = kClaimTimeout;
    shmlimit::Limiter limiter = shmlimit::Limiter::open(options);
    const auto id = limiter.find_policy(kPolicy);
    if (!id)
      throw std::runtime_error(fmt::format("policy \"{}\" is missing from {}", kPolicy, name));
    // Ready; then block on the barrier until the parent sends the start
    // instant, and spin until it: a pipe wakes its readers one by one, and
    // the first one awake would take the whole burst before the others run.
    if (!write_all(ready_fd, "r", 1)) throw std::runtime_error("cannot signal readiness");
    ::close(ready_fd);
    std::int64_t start_at = 0;
    if (read_all(go_fd, &start_at, sizeof start_at) != sizeof start_at) {
      throw std::runtime_error("the parent went away before the start");
    }
    while (limiter.now().count() < start_at) {
    }
    Report r;
    r.pid = ::getpid();
    r.attempts = attempts;
    for (std::uint64_t i = 0; i < attempts; ++i) {
      const shmlimit::Decision d = limiter.acquire(*id, kKey);
      r.admitted += d.allowed ? 1 : 0;
      r.fallbacks += d.reason != shmlimit::Reason::kOk ? 1 : 0;
    }
    r.last_ns = limiter.now().count();
    if (!write_all(result_fd, &r, sizeof r))
      throw std::runtime_error("cannot report to the parent");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmlimit-demo: worker %d: %s\n", static_cast<int>(::getpid()), e.what());
    rc = 2;
  }
  ::_exit(rc);  // not exit(): the parent's stdio buffers and atexit handlers are not ours
}

int run(const std::string& name, unsigned workers, std::uint64_t attempts) {
  // 1. A fresh segment and its policy.
  const bool replaced = shmlimit::Limiter::remove(name);
  shmlimit::Options options;
  options.name = name;
  options.capacity = kCapacity;
  shmlimit::Limiter limiter = shmlimit::Limiter::create(options);
  shmlimit::PolicySpec spec;
  spec.name = kPolicy;
  spec.rate = shmlimit::parse_rate(kRate);
  spec.burst = kBurst;
  spec.on_full = shmlimit::OnFull::kDeny;
  limiter.add_policy(spec);
  const std::int64_t t_ns = tools::emission_interval_ns(spec.rate);

  std::printf("shmlimit-demo: %u worker processes share one limit through %s%s\n", workers,
              name.c_str(), replaced ? " (replaced the previous one)" : "");
  std::printf(
      "  policy \"%s\" = %s, burst %llu (one more every %s), on-full deny; key \"%s\";"
      " %llu attempts per worker\n\n",
      kPolicy, shmlimit::format_rate(spec.rate).c_str(), static_cast<unsigned long long>(kBurst),
      tools::format_duration(shmlimit::Nanos(t_ns)).c_str(), kKey,
      static_cast<unsigned long long>(attempts));
  std::fflush(stdout);
  std::fflush(stderr);

  // 2. Fork the workers behind a barrier: `ready` tells the parent that a
  // worker has opened the segment, `go` carries the common start instant.
  int ready[2], go[2], results[2];
  make_pipe(ready);
  make_pipe(go);
  make_pipe(results);
  std::vector<pid_t> pids;
  for (unsigned i = 0; i < workers; ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      ::close(go[1]);
      ::close(results[0]);
      worker(name, attempts, ready[1], go[0], results[1]);
    }
    if (pid < 0) {
      const int err = errno;
      for (const pid_t p : pids) ::kill(p, SIGKILL);  // our own children, still at the barrier
      for (const pid_t p : pids) ::waitpid(p, nullptr, 0);
      throw std::runtime_error(std::string("fork: ") + std::strerror(err));
    }
    pids.push_back(pid);
  }
  ::close(ready[1]);
  ::close(go[0]);
  ::close(results[1]);

  // Each worker writes one byte when ready and then closes its end, so a
  // worker that failed to start shows up as EOF instead of a hang.
  std::vector<char> ready_bytes(workers);
  read_all(ready[0], ready_bytes.data(), ready_bytes.size());
  ::close(ready[0]);

  // The window starts here, before any worker can attempt anything.
  const std::int64_t start = limiter.now().count();
  const std::int64_t start_at = start + kStartDelayNs;
  // One write of every worker's copy of the start instant (atomic: below
  // PIPE_BUF), then release: each worker reads exactly one copy.
  const std::vector<std::int64_t> starts(workers, start_at);
  if (!write_all(go[1], starts.data(), starts.size() * sizeof(std::int64_t))) {
    throw std::runtime_error(std::string("cannot release the workers: ") + std::strerror(errno));
  }
  ::close(go[1]);

  std::vector<Report> reports;
  for (Report r; read_all(results[0], &r, sizeof r) == sizeof r;) reports.push_back(r);
  ::close(results[0]);
  int failed = 0;
  for (const pid_t pid : pids) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  const std::int64_t end = limiter.now().count();

  // 3. The exact bound.
  const std::int64_t elapsed = end - start;
  const auto refill = static_cast<std::uint64_t>(elapsed / t_ns);
  const std::uint64_t allowance = kBurst + refill;
  std::uint64_t total = 0, fallbacks = 0;
  std::int64_t last = start;
  tools::Table table;
  table.headers = {"WORKER PID", "ATTEMPTS", "ADMITTED", "DENIED"};
  table.right = {true, true, true, true};
  std::sort(reports.begin(), reports.end(),
            [](const Report& a, const Report& b) { return a.pid < b.pid; });
  for (const Report& r : reports) {
    total += r.admitted;
    fallbacks += r.fallbacks;
    last = std::max(last, r.last_ns);
    table.rows.push_back({std::to_string(r.pid), std::to_string(r.attempts),
                          std::to_string(r.admitted), std::to_string(r.attempts - r.admitted)});
  }
  const std::uint64_t over = total > allowance ? total - allowance : 0;
  const auto refill_after_last = refill - static_cast<std::uint64_t>((last - start) / t_ns);

  std::string out = tools::render_table(table, tools::use_color());
  out +=
      fmt::format("\ntotal admitted: {}   allowance: {}   (burst {} + refill {} over {})\n", total,
                  allowance, kBurst, refill, tools::format_duration(shmlimit::Nanos(elapsed)));
  out += fmt::format("over-admitted: {}\n", over);
  if (total < allowance) {
    out += fmt::format(
        "under-admitted: {} (refill that became available after the last attempt: {})\n",
        allowance - total, refill_after_last);
  }
  if (fallbacks > 0) out += fmt::format("fallback decisions (reason not ok): {}\n", fallbacks);
  if (failed > 0 || reports.size() != workers) {
    out += fmt::format("workers failed: {} of {} (see the messages above)\n", failed, workers);
  }
  out += fmt::format("exact: {}\n", over == 0 ? "yes" : "NO");
  tools::write_stdout(out);

  // 4. The segment, as `shmlimit stat` and `shmlimit dump` show it.
  tools::write_stdout(fmt::format("\n$ shmlimit stat {}\n", name));
  const shmlimit::Limiter inspect = tools::open_for_inspection(name);
  tools::print_stat(inspect, false);
  tools::write_stdout(fmt::format("\n$ shmlimit dump {}\n", name));
  tools::print_dump(inspect, false);
  tools::write_stdout(
      fmt::format("\nThe segment {0} is kept: run `shmlimit dump {0}` to inspect it, `shmlimit rm "
                  "{0}` to remove it.\n",
                  name));

  if (failed > 0 || reports.size() != workers) return 2;
  return over == 0 ? 0 : 1;
}

int parse_and_run(int argc, char** argv) {
  CLI::App app{
      "shmlimit-demo: forked worker processes share one exact rate limit (policy \"api\" = "
      "1000/hour on one key) through a POSIX shared-memory segment, then show the segment.",
      "shmlimit-demo"};
  unsigned workers = 4;
  std::uint64_t attempts = 200000;
  std::string name = kDefaultName;
  app.add_option("--workers", workers, "worker processes to fork")
      ->check(CLI::Range(1u, kMaxWorkers))
      ->capture_default_str();
  app.add_option("--attempts", attempts, "acquire() calls per worker")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1'000'000'000}))
      ->capture_default_str();
  app.add_option("--name", name, "segment name (replaced if it exists)")->capture_default_str();
  app.footer("Exit status: 0 exact, 1 over-admitted, 2 error.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    std::fprintf(stderr, "shmlimit-demo: %s (see `shmlimit-demo --help`)\n", e.what());
    return 2;
  }
  return run(name, workers, attempts);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int rc = parse_and_run(argc, argv);
    std::fflush(stdout);
    return rc;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "shmlimit-demo: %s\n", e.what());
    return 2;
  }
}
