// shmlimit — one rate limiter shared by every worker process on a host.
//
// A Limiter is a handle on a named POSIX shared-memory segment that holds a
// fixed-capacity table of buckets, one per (policy, key). Any number of
// processes open the same segment and see one consistent counter per key.
//
// Thread and process safety
//   * Every method of Limiter may be called concurrently from any number of
//     processes sharing one segment. A single Limiter object may be used by
//     several threads at once, except for move-assignment and destruction.
//   * acquire()/peek() are lock-free: a process killed (SIGKILL) at any
//     instruction never blocks the others. They never throw.
//   * Setup calls (create/open/add_policy/remove) throw shmlimit::Error and
//     nothing else; the hot path reports problems in Decision::reason.
//
// Invariants this API promises (doc/design.md explains how they are kept)
//   (1) Exact: no decision with Reason::kOk admits more than the policy
//       allows, whatever the number of processes. Decisions with another
//       reason (table full, a claimer stalled past claim_timeout, ...) follow
//       the policy's on_full choice: exactness needs OnFull::kDeny there.
//   (2) A bucket that has refilled completely is indistinguishable from an
//       absent one; only such buckets are reclaimed to make room.
//   (3) A corrupt or hostile segment may make decisions wrong, never make a
//       reader crash or write outside the mapping.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace shmlimit {

/// Integer nanoseconds: the unit of every duration in the API.
using Nanos = std::chrono::nanoseconds;

/// What went wrong in a setup call. Stable values (they cross the C API).
enum class ErrorCode : int {
  kInvalidArgument = 1,  ///< a bad name, rate, option or policy spec
  kNotFound = 2,         ///< the segment does not exist (ENOENT)
  kExists = 3,           ///< create() on a name that already exists (EEXIST)
  kPermission = 4,       ///< the segment's mode refuses us (EACCES / EPERM), or it belongs to a
                         ///< user we do not trust (Options::allow_other_users)
  kIncompatible =
      5,         ///< magic, version, fingerprint, size or capacity differ, or not a regular file
  kCorrupt = 6,  ///< the header contradicts itself
  kTimeout = 7,  ///< waited too long for another process (initialisation)
  kPolicyConflict = 8,  ///< same policy name, other parameters, no replace
  kTableFull = 9,       ///< no room in the policy table
  kSystem = 10,         ///< any other operating-system error
  kReadOnly = 11,       ///< a write through a read-only handle
  kNoSpace = 12,        ///< create: /dev/shm (tmpfs) cannot hold every byte of the segment
};

/// The one exception type thrown by setup calls. what() is a full sentence
/// that names the segment and what differs or failed, on one printable
/// line: every byte outside printable ASCII (a control byte, or a byte of
/// input or segment text quoted in it, which may be half a UTF-8
/// character) is shown as \xNN, so it never arrives empty or garbled in a
/// log, a terminal or Python.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& what)
      : std::runtime_error(printable(what)), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  static std::string printable(std::string_view text);
  ErrorCode code_;
};

/// Limiting algorithm of a policy. Values are stored in the segment.
/// doc/algorithms.md gives each one's formula, state layout and limits.
enum class Algorithm : std::uint8_t {
  kGcra = 1,  ///< continuous-refill token bucket: rate.count per rate.period, capacity burst
  kTokenBucket =
      2,  ///< discrete refill: rate.count tokens at each rate.period boundary, capacity burst
  kFixedWindow =
      3,  ///< at most rate.count per window of rate.period (windows aligned to the epoch)
  kSlidingWindow = 4,  ///< approximate sliding window: two fixed windows weighted (Python `limits`)
  kQuietPeriod =
      5,  ///< rate.count per rate.period; once exceeded, every attempt restarts the period
  kLeakyBucket = 6,  ///< meter that drains rate.count per rate.period, capacity burst (= GCRA)
  kConcurrency = 7,  ///< at most rate.count in flight (Limiter::lease); no time, rate.period unused
  kSlidingLog = 8,   ///< exact sliding window: never more than rate.count in any rate.period (DRF)
};

/// "gcra", "token_bucket", "fixed_window", "sliding_window", "quiet_period", "leaky_bucket",
/// "concurrency", "sliding_log".
std::string_view to_string(Algorithm algorithm) noexcept;
/// The inverse of to_string(Algorithm); also accepts '-' for '_'. Throws
/// Error(kInvalidArgument) listing the known names.
Algorithm parse_algorithm(std::string_view name);

/// What a decision does when the table has no slot for a new key (or the
/// key cannot be served: too long, segment past its clock horizon, a
/// claimer stalled for longer than Options::claim_timeout).
enum class OnFull : std::uint8_t {
  kAllow = 0,  ///< fail open: admit, and count the event
  kDeny = 1,   ///< fail closed: refuse, and count the event
};

/// A rate: `count` requests per `period`.
struct Rate {
  std::uint64_t count = 0;
  Nanos period{0};
  friend bool operator==(const Rate&, const Rate&) = default;
};

/// Parses a rate in Django REST framework's syntax and its extensions:
///   "3/s", "100/m", "1000/hour", "5/day"  (only the unit's first letter
///   counts, as in DRF: s, m, h, d; so "5/minute" and "5/min" both work)
///   "10/5m", "50/30s"                     (a multiple of the unit)
///   "10 per minute", "10 per 2 minutes"   (Python `limits` style)
/// Throws Error(kInvalidArgument) naming what is wrong and at which column.
Rate parse_rate(std::string_view text);

/// Formats a rate back in the canonical short form ("10/5m"); a
/// concurrency limit (period 0) is its bare count ("8").
std::string format_rate(const Rate& rate);

/// What retry_after a denied Algorithm::kSlidingLog decision reports.
enum class LogWait : std::uint8_t {
  kExact = 0,  ///< the exact wait until `cost` fits: the cost-th oldest admission + period - now
  kDrf = 1,  ///< DRF SimpleRateThrottle.wait(): (period - (now - oldest)) / (count - in_window + 1)
};

/// A named policy registered in the segment.
///   kConcurrency: rate.count is the limit N (in flight); rate.period is
///                 unused (stored as 0); burst is 0 or N.
///   kSlidingLog:  rate.count per rate.period, exactly; burst is 0 or
///                 rate.count; needs a segment created with
///                 Options::log_entries >= rate.count.
/// A field an algorithm does not use must keep its default (burst: 0 or the
/// count that policies() reports; wait: kExact): anything else is refused
/// (Error kInvalidArgument), never silently dropped. normalize_policy_spec()
/// is the one check, used by add_policy, configuration files and the CLI.
struct PolicySpec {
  std::string name;  ///< 1..31 bytes of [A-Za-z0-9_.:-]
  Algorithm algorithm = Algorithm::kGcra;
  Rate rate;  ///< refill rate
  /// Bucket capacity where the algorithm has one (algorithm_has_burst():
  /// gcra, token_bucket, leaky_bucket); 0 = rate.count. The other
  /// algorithms' capacity is rate.count: 0 or rate.count, nothing else.
  std::uint64_t burst = 0;
  OnFull on_full = OnFull::kAllow;  ///< fail-open by default, like nginx
  LogWait wait = LogWait::kExact;   ///< kSlidingLog only: which retry_after to report
  friend bool operator==(const PolicySpec&, const PolicySpec&) = default;
};

/// Whether `algorithm` has a capacity of its own (PolicySpec::burst): gcra,
/// token_bucket and leaky_bucket. The others admit up to rate.count.
bool algorithm_has_burst(Algorithm algorithm) noexcept;

/// Whether Limiter::reserve queues turns on `algorithm`, first come first
/// served (gcra, leaky_bucket, token_bucket); the others admit now or
/// refuse (doc/outbound.md). What nginx's `max_wait` and the example
/// server's routes need.
bool algorithm_queues_turns(Algorithm algorithm) noexcept;

/// The spec as add_policy() registers it and policies() reports it: burst 0
/// resolved to rate.count, the period of a concurrency limit cleared. Throws
/// Error(kInvalidArgument) with a one-line printable message naming the
/// policy when add_policy() would refuse it: a name that is not 1..31 of
/// [A-Za-z0-9_.:-] (the offending byte shown escaped, e.g. \xc3), no rate,
/// a field the algorithm does not use, or parameters out of the algorithm's
/// range. What depends on a segment (Options::log_entries) is checked by
/// add_policy() only. Thread-safe (a pure function).
PolicySpec normalize_policy_spec(const PolicySpec& spec);

/// Index of a registered policy; valid for the life of the segment.
struct PolicyId {
  std::uint32_t index = 0;
};

/// What Limiter::replace_policy did (doc/algorithms.md, "Replacing a policy").
struct PolicyReplacement {
  PolicyId id;           ///< the policy's id from now on; ids held from before still work
  bool changed = false;  ///< false: the policy already had this spec, nothing was done
  bool fresh = false;    ///< the state encoding changed: every bucket of the policy starts full
  std::uint64_t buckets_reset =
      0;  ///< fresh: buckets that held state (were not full) and were forgotten
};

/// Why a decision came out as it did.
enum class Reason : std::uint8_t {
  kOk = 0,             ///< decided by the policy's algorithm
  kTableFull = 1,      ///< no slot for a new key: on_full applied
  kKeyTooLong = 2,     ///< key longer than Limiter::max_key_bytes(): on_full applied
  kUnknownPolicy = 3,  ///< no such policy: denied
  kCostTooHigh = 4,    ///< cost > burst: can never be admitted, denied
  kContended = 5,      ///< another process stalled mid-claim: on_full applied
  kClockHorizon = 6,   ///< segment older than its clock horizon: on_full applied
  kCorrupt = 7,        ///< the policy entry or slot is corrupt: on_full applied
  kNeedsLease = 8,     ///< acquire() on a concurrency policy: use Limiter::lease(); denied
};

/// Human-readable name of a Reason ("table_full", ...).
std::string_view to_string(Reason reason) noexcept;

/// The outcome of one acquire: the five values HTTP headers and DRF's
/// wait() need, all derived from the bucket's state word.
struct Decision {
  bool allowed = false;
  std::uint64_t limit = 0;      ///< the bucket's capacity (burst), in cost units
  std::uint64_t remaining = 0;  ///< cost units that would be admitted now, after this decision
  Nanos retry_after{0};  ///< when denied: wait this long before the same cost fits; 0 when allowed
  Nanos reset_after{0};  ///< time until the bucket is full again
  Reason reason = Reason::kOk;
};

/// How to open the segment. Defaults are in the comments.
struct Options {
  /// POSIX shm name: "/" then 1..200 bytes of [A-Za-z0-9_.-]. Required.
  std::string name;
  /// Number of bucket slots; rounded up to a power of two. Default 65536.
  /// Used when creating, where 0 is refused (Error kInvalidArgument, and no
  /// file is left); an open checks it when non-zero (0: any capacity, so
  /// open_or_create with 0 opens an existing segment but creates none).
  std::uint32_t capacity = 65536;
  /// Permission bits of a created segment, applied despite the umask. Default 0600.
  mode_t mode = 0600;
  /// Bytes per slot: 64, 128 or 256; the key may use slot_bytes - 40 bytes.
  /// Default 128 (keys up to 88 bytes). Only used when creating.
  std::uint32_t slot_bytes = 128;
  /// Longest probe sequence, in slots. Default 32. Only used when creating.
  std::uint32_t max_probe = 32;
  /// Sliding-log entries per slot (Algorithm::kSlidingLog keeps one per
  /// admission of the last period), 0 .. 4096. The log region takes
  /// capacity * log_entries * 8 bytes. Default 0: no sliding-log policies.
  /// Only used when creating.
  std::uint32_t log_entries = 0;
  /// How long open() waits for a concurrent creator to finish. Default 2 s.
  std::chrono::milliseconds open_timeout{2000};
  /// How long a decision waits for a live process that is claiming the
  /// same new key (normally nanoseconds; long only when that process is
  /// descheduled or stopped) before applying on_full (Reason::kContended).
  /// Default 100 ms: several scheduler time slices on a loaded machine.
  std::chrono::milliseconds claim_timeout{100};
  /// Map read-only (inspection tools). acquire() then only peeks.
  bool read_only = false;
  /// Share the segment with other users. By default open() refuses a
  /// segment owned by a uid other than ours and root's (root accepts only
  /// root's), or writable by 'other', and create() refuses a mode writable
  /// by 'other': whoever can write the file can reset every limit or
  /// truncate it under the workers (SIGBUS). Set it when processes of
  /// several users share one segment on purpose, e.g. mode 0660 and one
  /// group (doc/design.md). Open never follows a symlink and never opens
  /// anything but a regular file, whatever this says.
  bool allow_other_users = false;
};

// The results of inspection and state I/O (stats, counters, dump, check,
// recent_denials, export/import) are defined in <shmlimit/inspect.hpp>;
// include it to call those methods.
struct PolicyCounters;
struct Stats;
struct BucketView;
struct CheckReport;
struct RecentDenials;
struct ImportReport;
enum class ImportMode : std::uint8_t;

/// One limit of a multi-limit decision.
struct Request {
  PolicyId policy;
  std::string_view key;
  std::uint64_t cost = 1;
};

struct PolicyView {
  PolicyId id;
  PolicySpec spec;
};

class Lease;
class Reservation;

/// A move-only handle on a mapped segment.
class Limiter {
 public:
  /// Creates a new segment; Error(kExists) if the name is taken.
  static Limiter create(const Options& options);
  /// Opens an existing segment and validates its header; waits up to
  /// options.open_timeout for a concurrent creator to finish.
  static Limiter open(const Options& options);
  /// Opens the segment or creates it. Any number of processes may race
  /// here; all of them end up on one initialised segment.
  static Limiter open_or_create(const Options& options);
  /// Removes the name (mappings already open stay valid). Returns false if
  /// it did not exist; throws on any other failure.
  static bool remove(std::string_view name);

  Limiter(Limiter&&) noexcept;
  Limiter& operator=(Limiter&&) noexcept;
  Limiter(const Limiter&) = delete;
  Limiter& operator=(const Limiter&) = delete;
  ~Limiter();

  /// Registers a policy (process-safe, serialised by a recoverable admin
  /// token). Same name and same spec: returns the existing id. Same name and
  /// another spec: Error(kPolicyConflict) unless `replace`; replacement
  /// is replace_policy(spec).id.
  PolicyId add_policy(const PolicySpec& spec, bool replace = false);
  /// Registers or replaces a policy (process-safe, as add_policy). A new
  /// spec that stores bucket state as the old one did (same algorithm and,
  /// for the windowed ones, the same period; doc/algorithms.md) keeps every
  /// bucket, its waits capped by the new policy's longest wait. Any other
  /// change starts every bucket of the policy full: the name moves to a
  /// fresh policy entry and the old entry is retired (its buckets read as
  /// absent and are reclaimed lazily); the result says how many buckets held
  /// state. Error(kPolicyConflict) when replacing a concurrency policy while
  /// leases are held (naming how many); Error(kTableFull) when no entry is
  /// left for a fresh start (64 per segment, retired ones included).
  PolicyReplacement replace_policy(const PolicySpec& spec);
  /// Looks a policy up by name (a scan of at most 64 entries; keep the
  /// PolicyId for the hot path).
  std::optional<PolicyId> find_policy(std::string_view name) const;
  std::vector<PolicyView> policies() const;

  /// Charges `cost` to the bucket of (policy, key) at the current
  /// segment time (now()). cost 0 = a look that stores nothing but is
  /// counted as a decision (doc/algorithms.md). Process-safe, lock-free,
  /// noexcept.
  Decision acquire(PolicyId policy, std::string_view key, std::uint64_t cost = 1) noexcept;
  /// The same, looking the policy up by name first.
  Decision acquire(std::string_view policy, std::string_view key, std::uint64_t cost = 1) noexcept;
  /// The same at an explicit time (ns since the segment's epoch): the
  /// injected clock used by tests and replays.
  Decision acquire_at(PolicyId policy, std::string_view key, std::uint64_t cost,
                      Nanos now) noexcept;
  /// What acquire() would say for `cost`, without charging. Never claims a slot.
  Decision peek(PolicyId policy, std::string_view key, std::uint64_t cost = 1) noexcept;

  /// Takes `cost` units of a concurrency policy's limit for (policy, key)
  /// until the returned Lease is released or destroyed. Lease::held() says
  /// whether it was granted; Lease::decision() has limit = N, remaining =
  /// N - in flight after the decision, retry_after = reset_after = 0 (a
  /// lease ends when its holder releases it: there is no time to predict).
  /// A refused lease is recorded in recent_denials(), as a denied acquire.
  /// A process that dies holding leases has them reclaimed by the others
  /// (when a lease on a key is denied, and by check()). A process holds at
  /// most 64 leases at once (all its threads and handles together); past
  /// that, and when the process registry is full, the decision is the
  /// policy's on_full answer with reason kTableFull. On a policy of another
  /// algorithm: denied, reason kUnknownPolicy. Process-safe, lock-free,
  /// noexcept. The Lease must not outlive this Limiter.
  Lease lease(PolicyId policy, std::string_view key, std::uint64_t cost = 1) noexcept;

  /// Reserves `cost` units of (policy, key) for the caller's turn, which may
  /// lie in the future: the outbound side of rate limiting, where every
  /// worker calling one vendor API waits for its turn instead of being
  /// refused (Go's x/time/rate Reserve; doc/outbound.md).
  ///   GCRA, leaky bucket, token bucket: queued, first come first served
  ///     in the order of the reservations' CAS. Granted when the turn is at
  ///     most `max_wait` away (Reservation::delay()); refused beyond it,
  ///     charging nothing, with decision().retry_after the wait it would
  ///     have needed. The token bucket's turns are its refill boundaries,
  ///     and its queue is bounded by its 20-bit count of missing tokens
  ///     (2^20 - 1 - burst behind the burst): past that, refused with
  ///     retry_after the refill that makes room (wait() asks again then).
  ///   fixed / sliding window, quiet period, sliding log: never queued
  ///     (their counts are per window): granted with delay 0 when `cost`
  ///     fits now, else refused with retry_after the next opening (wait()
  ///     sleeps until then and asks again).
  ///   concurrency: refused, reason kNeedsLease.
  /// The other reasons (table full, key too long, ...) are those of
  /// acquire(): on_full applies, with delay 0. A reservation counts in the
  /// exact totals as an acquire does (granted = admitted). Process-safe,
  /// lock-free, noexcept.
  Reservation reserve(PolicyId policy, std::string_view key, std::uint64_t cost = 1,
                      Nanos max_wait = Nanos::max()) noexcept;
  /// The same at an explicit time (ns since the segment's epoch).
  Reservation reserve_at(PolicyId policy, std::string_view key, std::uint64_t cost, Nanos max_wait,
                         Nanos now) noexcept;
  /// Reserves, then sleeps until the turn and returns the decision: allowed
  /// when the turn comes before `deadline` (on CLOCK_MONOTONIC, the clock
  /// of std::chrono::steady_clock on Linux); refused at once, without
  /// sleeping and charging nothing, when it would come later. On the
  /// never-queued algorithms it sleeps until each next opening and asks
  /// again while the deadline allows. The sleep blocks the calling thread
  /// (and only it). A process killed while sleeping loses its turn; the
  /// others keep theirs (doc/outbound.md, "Crash safety"). noexcept.
  Decision wait(PolicyId policy, std::string_view key, std::uint64_t cost,
                std::chrono::steady_clock::time_point deadline) noexcept;
  /// wait() with deadline = now + max_wait.
  Decision wait_for(PolicyId policy, std::string_view key, std::uint64_t cost = 1,
                    Nanos max_wait = Nanos::max()) noexcept;

  /// All-or-nothing over several limits (DRF's burst + sustained, per-user
  /// + global): admitted only if every limit admits, and then charged to
  /// every one; when any denies, none is charged. The combined decision
  /// has the largest retry_after of the denials (and that denial's
  /// reason), and remaining/limit of the tightest limit. Admitted, its
  /// reason is kOk unless a limit was admitted by its on_full fallback
  /// (kTableFull, kKeyTooLong, ...): then the first such limit's reason,
  /// so a request that passed only because a limit was not enforced says so. `each`, if given (same
  /// length as `requests`), receives every limit's own decision; when the request is denied, a
  /// limit that admitted reports its bucket as it is (nothing was
  /// charged), not as after this request. Lock-free: limits are charged
  /// one by one, each against its own bound (so none is ever exceeded),
  /// and a limit that another process filled meanwhile rolls the earlier
  /// charges back. A process killed mid-way may leave earlier limits
  /// charged (never over-admitting). A refused request writes nothing
  /// (a quiet-period limit is neither blocked nor restarted). One request
  /// is decided exactly as acquire_at() decides it (state, totals and
  /// denials too). A limit named twice (same policy and key) is charged
  /// for each mention, each mention decided for the costs so far together
  /// (doc/algorithms.md, "Several limits"). Process-safe, noexcept.
  Decision acquire_many(std::span<const Request> requests, std::span<Decision> each = {}) noexcept;
  Decision acquire_many_at(std::span<const Request> requests, Nanos now,
                           std::span<Decision> each = {}) noexcept;

  /// Gives back `cost` already taken (a request that failed before doing
  /// work), never beyond the bucket's capacity. Returns the bucket after
  /// the refund. Process-safe, lock-free, noexcept.
  Decision refund(PolicyId policy, std::string_view key, std::uint64_t cost = 1) noexcept;

  /// Counts `amount` in the bucket of a quiet_period policy whatever the
  /// count already is: a counter whose period starts at its first count
  /// and ends `rate.period` later (with `restart`, `rate.period` after the
  /// latest count, never earlier than before). This is `INCRBY` with
  /// `EXPIRE` on the first hit, the fixed window of Python `limits`
  /// (doc/limits.md). `limit - remaining` is the count; past `rate.count`
  /// it saturates there and `allowed` is false (the key is not blocked).
  /// `amount = 0` reports without counting; so does a read-only handle.
  /// Tallies are not decisions: the policy's admitted/denied totals
  /// (counters(), stats) do not count them. Process-safe and lock-free
  /// (one CAS on the key's slot), as acquire(); throws Error(kInvalidArgument)
  /// for a policy of another algorithm (one replaced by another algorithm
  /// meanwhile: denied, reason kCorrupt, nothing stored).
  Decision tally(PolicyId policy, std::string_view key, std::uint64_t amount = 1,
                 bool restart = false);

  /// Forgets buckets, as if their keys had never been seen: one key of a
  /// policy, every key of a policy, or (no arguments) everything. Returns
  /// how many buckets were forgotten. Process-safe; a concurrent decision
  /// on a forgotten key starts from a full bucket.
  std::uint64_t reset(std::optional<PolicyId> policy = std::nullopt,
                      std::optional<std::string_view> key = std::nullopt);

  /// Current time in ns since the segment's epoch, as decisions read it:
  /// CLOCK_MONOTONIC_RAW (never slewed by NTP), through the decision clock
  /// (doc/design.md, "Time": never ahead of it, at most about 0.2 us
  /// behind, never decreasing within a thread).
  Nanos now() const noexcept;
  /// Longest key this segment stores (slot_bytes - 40).
  std::uint32_t max_key_bytes() const noexcept;
  const std::string& name() const noexcept;
  bool read_only() const noexcept;

  /// Counters and occupancy; reads every slot (O(capacity)), never writes.
  Stats stats() const;
  /// Every registered policy's exact totals (PolicyCounters), in policy
  /// order. Reads only the segment's counter blocks (512 per policy), never
  /// the slots, never writes. Each total read is at least the one any
  /// earlier call returned. Process-safe; lock-free for the writers.
  std::vector<PolicyCounters> counters() const;
  /// Every live bucket, each row read consistently without blocking writers.
  std::vector<BucketView> dump() const;
  /// Verifies every invariant of the header, the policy table and the slots
  /// (no duplicate keys, every key reachable from its home slot, versions
  /// consistent, no claim left by a dead process). With `repair` (ignored on
  /// a read-only handle) the claims of dead processes are repaired first.
  /// Never crashes on garbage; O(capacity). Process-safe.
  CheckReport check(bool repair = true);

  /// Checks the segment `name` without validating it first: maps it
  /// read-only whatever its bytes and lists every problem found, field by
  /// field (bad magic, version, fingerprint, geometry and offsets, a size
  /// other than its header says, corrupt policy entries, slots with
  /// impossible states, key lengths or policy indices, versions that do not
  /// match, claims without a live owner). Never crashes on garbage and never
  /// writes. Throws Error(kNotFound / kPermission / kSystem) only when the
  /// object cannot be mapped at all, Error(kIncompatible) if it is not a
  /// regular file; trusts the file's owner as Options::allow_other_users says.
  static CheckReport check_segment(std::string_view name, bool allow_other_users = false);

  /// Denials recorded at or after `since_cursor` that are still in the ring,
  /// oldest first. 0 reads everything still there; the returned
  /// next_cursor reads only what came after. Never writes; lock-free for
  /// the writers; O(entries). Process-safe.
  RecentDenials recent_denials(std::uint64_t since_cursor = 0) const;

  /// The live buckets as a JSON document (doc/state-format.md): every
  /// bucket's policy and its spec, key, decoded state with times on the
  /// wall clock (ISO 8601, ns), and counters; only one policy and/or one
  /// key when given. Buckets that have refilled completely are left out.
  /// Process-safe, never writes.
  std::string export_state(std::optional<PolicyId> policy = std::nullopt,
                           std::optional<std::string_view> key = std::nullopt) const;
  /// Writes the buckets of a document made by export_state(), possibly on
  /// another segment or host: validates the whole document first (JSON,
  /// format and version, every policy registered here with the same spec,
  /// every time representable) and throws Error(kInvalidArgument, or
  /// kPolicyConflict for a spec that differs) naming the item, writing
  /// nothing; then claims each key and stores its state. Wall-clock times
  /// are converted to this segment's clock. Process-safe.
  /// `mode` says what happens to a key that already has a bucket
  /// (ImportMode, <shmlimit/inspect.hpp>); without it, kReplace.
  ImportReport import_state(std::string_view json);
  ImportReport import_state(std::string_view json, ImportMode mode);

 private:
  struct Impl;
  explicit Limiter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  friend class Lease;
  friend class Reservation;
};

/// A held share of a concurrency limit (Limiter::lease). Move-only; releases
/// on destruction. Belongs to the process that took it: in a fork()ed
/// child, release() and the destructor of the copy do nothing. Not for
/// concurrent use from several threads (like any object); different Leases
/// may be used by different threads at once.
class Lease {
 public:
  Lease() noexcept = default;  ///< holds nothing
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;  ///< releases what this held first
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease();

  /// True while the lease is granted and not yet released. A lease granted
  /// by the policy's on_full = allow (decision().reason is not kOk: table
  /// full, registry full, ...) is held but takes nothing from the limit.
  bool held() const noexcept { return impl_ != nullptr; }
  explicit operator bool() const noexcept { return held(); }
  /// The decision that granted or refused it.
  const Decision& decision() const noexcept { return decision_; }
  /// Gives the units back now. Returns true if this call released them;
  /// false when nothing was held (refused, moved from, already released,
  /// or a copy in a forked child). Lock-free, noexcept.
  bool release() noexcept;

 private:
  friend class Limiter;
  friend struct Limiter::Impl;
  Limiter::Impl* impl_ = nullptr;  // null: holds nothing
  std::uint32_t entry_ = 0;        // process registry entry of the record
  std::uint32_t record_ = 0;       // record index in that entry's LeaseArea
  std::uint64_t ctl_ = 0;          // the record's HELD control word, checked before release
  std::int32_t pid_ = 0;           // the process that took it
  Decision decision_;
};

/// A turn reserved by Limiter::reserve. Move-only (a copy could cancel
/// twice). Dropping it does nothing: the turn stays taken, whether or not
/// the caller acts. Belongs to the process that took it: in a fork()ed
/// child, cancel() does nothing. Must not outlive its Limiter.
class Reservation {
 public:
  Reservation() noexcept = default;  ///< refused (a default Decision), holds nothing
  Reservation(Reservation&& other) noexcept;
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() = default;

  /// Granted: the caller may act after delay().
  bool ok() const noexcept { return decision_.allowed; }
  explicit operator bool() const noexcept { return ok(); }
  /// Granted: how long after the reservation the caller may act (0: now).
  /// Refused: the wait it would have needed (Nanos::max(): never fits).
  Nanos delay() const noexcept { return delay_; }
  /// When the caller may act, in ns since the segment's epoch
  /// (Limiter::now()'s clock): the reservation's time plus delay().
  Nanos time_to_act() const noexcept { return act_at_; }
  /// The reservation's decision (allowed = ok()).
  const Decision& decision() const noexcept { return decision_; }
  /// Gives the reserved units back when nothing has charged the bucket
  /// since (this is still the last turn of the queue) and the turn has not
  /// come yet; otherwise gives nothing back (later turns were computed
  /// from this one; a turn that has come counts as used). Returns true if
  /// units were given back. Either way the reservation is spent: ok() stays
  /// as it was, a second cancel() returns false. Lock-free, noexcept.
  bool cancel() noexcept;

 private:
  friend class Limiter;
  friend struct Limiter::Impl;
  Limiter::Impl* impl_ = nullptr;  // non-null: a queued turn that cancel() may give back
  std::uint32_t policy_ = 0;       // resolved policy entry
  std::uint32_t slot_ = 0;         // the bucket's slot, and the word version it was stored under
  std::uint64_t version_ = 0;
  std::uint64_t reserved_ = 0;  // the state this reservation stored (TAT; token bucket: the debt)
  std::uint64_t span_ = 0;      // cost * T, ns (token bucket: tokens added)
  std::int32_t pid_ = 0;        // the process that took it
  Nanos delay_{0};
  Nanos act_at_{0};
  Decision decision_;
};

}  // namespace shmlimit
