// Process identity for claim tokens: which process holds a slot or the
// admin token, and whether it is still alive.
#pragma once

#include <cstdint>

namespace shmlimit::detail {

/// pid (high 32 bits) | low 32 bits of the process start time (clock ticks
/// since boot, /proc/<pid>/stat field 22). Never 0. The start time tells a
/// reused pid from the process that died.
using ProcessToken = std::uint64_t;

/// This process's token; recomputed after fork().
ProcessToken self_token();

/// True when the process named by `token` has exited (or is a zombie, or
/// its pid now belongs to another process). False when alive or unknown.
/// Reads /proc; falls back to kill(pid, 0). All processes sharing a
/// segment must share one pid namespace.
bool token_is_dead(ProcessToken token);

inline std::uint32_t token_pid(ProcessToken token) { return static_cast<std::uint32_t>(token >> 32); }

}  // namespace shmlimit::detail
