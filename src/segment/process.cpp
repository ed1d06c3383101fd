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

struct ProcStat {
  char state = '?';
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
  // Field 3 is the state; field 22 is starttime: skip 19 more fields.
  const char* p = close + 2;
  for (int field = 3; field < 22 && *p != '\0'; ++p) {
    if (*p == ' ') ++field;
  }
  st.start_time = std::strtoull(p, nullptr, 10);
  return st;
}

ProcessToken make_token(pid_t pid) {
  const auto st = read_proc_stat(pid);
  const std::uint64_t start = st ? (st->start_time & 0xFFFFFFFFu) : 0;
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

bool token_is_dead(ProcessToken token) {
  const auto pid = static_cast<pid_t>(token_pid(token));
  if (pid <= 0) return true;
  const auto st = read_proc_stat(pid);
  if (!st) return true;
  if (st->state == '?') {
    // /proc could not tell: ask the kernel whether the pid exists at all.
    return ::kill(pid, 0) != 0 && errno == ESRCH;
  }
  if (st->state == 'Z' || st->state == 'X') return true;  // exited, not yet reaped
  if ((token & 0xFFFFFFFFu) != 0 && (st->start_time & 0xFFFFFFFFu) != (token & 0xFFFFFFFFu)) {
    return true;  // the pid was reused by another process
  }
  return false;
}

}  // namespace shmlimit::detail
