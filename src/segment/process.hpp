// Process identity for claim tokens: which process holds a slot or the
// admin token, and whether it is still alive.
#pragma once

#include <cstdint>

namespace shmlimit::detail {

/// pid (high 32 bits) | start field (low 32 bits). The start field is the
/// low 32 bits of the process start time (clock ticks since boot,
/// /proc/<pid>/stat field 22), or kStartUnknown when /proc cannot tell it
/// (not mounted) or those bits happen to be 0. So neither the pid nor the
/// start field of a token this library makes is ever 0: a token with
/// either is impossible (corrupt bytes, or a build older than this rule),
/// and token_is_dead() treats it as a dead holder, to be repaired. The
/// start time tells a reused pid from the process that died.
using ProcessToken = std::uint64_t;

/// The start field of a process whose start time is unknown: liveness is
/// then decided by the pid alone (a reused pid reads as alive).
inline constexpr std::uint32_t kStartUnknown = 0xFFFFFFFFu;

/// This process's token; recomputed after fork(). Never has pid 0 or
/// start field 0.
ProcessToken self_token();

/// Why no process sharing a segment can hold `token`, or nullptr when one
/// may: "pid 0" (or one beyond pid_max), "start time 0" (self_token never
/// makes it), or "names a kernel thread" (/proc/<pid>/stat flags has
/// PF_KTHREAD). Reads /proc.
const char* token_impossible(ProcessToken token);

/// True when the process named by `token` has exited (or is a zombie, or
/// its pid now belongs to another process), and when the token is
/// impossible (token_impossible). False when alive or unknown.
/// Reads /proc; falls back to kill(pid, 0). All processes sharing a
/// segment must share one pid namespace.
bool token_is_dead(ProcessToken token);

/// The same for a bare pid (no start time to compare): a reused pid reads
/// as alive.
inline bool pid_is_dead(std::uint32_t pid) {
  return token_is_dead((static_cast<ProcessToken>(pid) << 32) | kStartUnknown);
}

inline std::uint32_t token_pid(ProcessToken token) {
  return static_cast<std::uint32_t>(token >> 32);
}
inline std::uint32_t token_start(ProcessToken token) { return static_cast<std::uint32_t>(token); }

}  // namespace shmlimit::detail
