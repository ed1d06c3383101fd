#include "segment/process.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace shmlimit::detail {
namespace {

// PF_KTHREAD in /proc/<pid>/stat field 9 (flags): a kernel thread, which
// never maps a segment.
constexpr std::uint64_t kPfKthread = 0x00200000;

struct ProcStat {
  char state = '?';
  std::uint64_t flags = 0;
  std::uint64_t start_time = 0;
};

// Reads /proc/<pid>/stat. nullopt when the process does not exist; a
// ProcStat with state '?' when /proc cannot tell.
std::optional<ProcStat> read_proc_stat(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ESRCH) return std::nullopt;
    return ProcStat{};
  }
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return n == 0 ? std::nullopt : std::optional<ProcStat>(ProcStat{});
  buf[n] = '\0';
  // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so the
  // fields start after the last ')'.
  const char* close = std::strrchr(buf, ')');
  if (close == nullptr || close[1] != ' ') return ProcStat{};
  ProcStat st;
  st.state = close[2];
  // Field 3 is the state, field 9 the flags, field 22 starttime.
  const char* p = close + 2;
  for (int field = 3; field < 22 && *p != '\0'; ++p) {
    if (*p == ' ') {
      ++field;
      if (field == 9) st.flags = std::strtoull(p + 1, nullptr, 10);
    }
  }
  st.start_time = std::strtoull(p, nullptr, 10);
  return st;
}

// The start field of a token (process.hpp): never 0, so that a start
// field of 0 is always corruption.
std::uint32_t start_field(const std::optional<ProcStat>& st) {
  const auto start = st && st->state != '?' ? static_cast<std::uint32_t>(st->start_time) : 0u;
  return start != 0 ? start : kStartUnknown;
}

ProcessToken make_token(pid_t pid) {
  const std::uint32_t start = start_field(read_proc_stat(pid));
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(pid)) << 32) | start;
}

std::atomic<std::uint64_t> g_cached{0};

// fork() (and everything built on it: Python's os.fork, posix_spawn's
// fallback) runs this in the child, so the child computes its own token.
void forget_token_after_fork() { g_cached.store(0, std::memory_order_relaxed); }

}  // namespace

ProcessToken self_token() {
  // Computed once per process: getpid() is a system call (about 1 us in a
  // VM) and claims are frequent when keys churn. Relaxed: a process-local
  // cache; the atfork handler clears it in every forked child.
  static const int registered = ::pthread_atfork(nullptr, nullptr, &forget_token_after_fork);
  (void)registered;
  std::uint64_t cached = g_cached.load(std::memory_order_relaxed);
  if (cached != 0) return cached;
  cached = make_token(::getpid());
  g_cached.store(cached, std::memory_order_relaxed);
  return cached;
}

const char* token_impossible(ProcessToken token) {
  if (token_pid(token) == 0) return "pid 0";
  if (static_cast<pid_t>(token_pid(token)) < 0) return "a pid beyond any pid_max";
  if (token_start(token) == 0) return "start time 0";
  const auto st = read_proc_stat(static_cast<pid_t>(token_pid(token)));
  if (st && (st->flags & kPfKthread) != 0) return "names a kernel thread";
  return nullptr;
}

bool token_is_dead(ProcessToken token) {
  const auto pid = static_cast<pid_t>(token_pid(token));
  if (pid <= 0 || token_start(token) == 0) return true;  // impossible: no token of ours
  const auto st = read_proc_stat(pid);
  if (!st) return true;
  if ((st->flags & kPfKthread) != 0) return true;  // impossible: a kernel thread holds nothing
  if (st->state == '?') {
    // /proc could not tell: ask the kernel whether the pid exists at all.
    return ::kill(pid, 0) != 0 && errno == ESRCH;
  }
  if (st->state == 'Z' || st->state == 'X') return true;  // exited, not yet reaped
  if (token_start(token) != kStartUnknown && start_field(st) != token_start(token)) {
    return true;  // the pid was reused by another process
  }
  return false;
}

}  // namespace shmlimit::detail
