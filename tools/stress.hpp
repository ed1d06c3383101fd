// Private to `shmlimit-stress` (stress.cpp): what its files share (formerly
// stress.cpp's anonymous namespace): the policy plans and the verifier's
// algorithm models (stress_policies.cpp), the shared bookkeeping region, the
// configuration, the worker processes (stress_worker.cpp), and the Runner:
// the parent (stress_run.cpp) and the verifier and its report
// (stress_verify.cpp).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace stress {

using shmlimit::Nanos;
using u64 = std::uint64_t;
using i64 = std::int64_t;

constexpr int kExitPass = 0;
constexpr int kExitViolation = 1;
constexpr int kExitError = 2;

// ---------------------------------------------------------------------------
// Policies: data. Each entry is registered in the segment and drives both
// the workers (which share of the decisions, which costs) and the verifier
// (which bounds apply: see AlgorithmModel).

struct PolicyPlan {
  std::string name;
  std::string algorithm = "gcra";  // the verifier must know its bounds (model_for)
  std::string rate;                // parse_rate() syntax
  u64 burst = 0;                   // 0 = the rate's count
  u64 keys = 0;                    // distinct keys; 0 = --keys
  u64 cost_min = 1;                // each decision charges a cost uniform in [cost_min, cost_max]
  u64 cost_max = 1;
  unsigned weight = 1;  // share of the decisions
};

// The default mix: two plain GCRA limits at different speeds, one with
// weighted costs, and one over 20x more keys that refills within half a
// millisecond with a burst of 1: its buckets are full (reclaimable) almost
// at once and most of its decisions meet a key that is not in the table,
// so the table keeps claiming and reclaiming slots and kills land in the
// middle of claims.
std::vector<PolicyPlan> default_policies(u64 keys);

// "NAME=RATE[,burst=B][,cost=N|LO-HI][,weight=W][,keys=K][,algorithm=A]"
PolicyPlan parse_policy_plan(const std::string& text);

// ---------------------------------------------------------------------------
// What the verifier knows of an algorithm. To support a new algorithm, add
// a model here; doc/stress.md states what each function must guarantee.
//   upper(a, b)          the most cost it may admit to one key from decisions
//                        whose clock readings all lie in [a, b] (exact: any
//                        more is over-admission)
//   charged_at_most(s, a)  the most cost the state word s says was charged
//                        to the key since a (a <= its first decision's reading)
//   charged_at_least(s, a, E)  the least cost the state word s says was
//                        charged since a (a >= the end of the first decision
//                        that met the key's bucket), given E, the refill that
//                        may have gone to waste
//   lower(a, d, E)       the least cost the key must have been charged between
//                        the end of the first decision that met its bucket (a)
//                        and the start of its last denial (d), given E (the
//                        verifier then allows a shortfall of one unit per process)
//   state_floor(allowed, cost, t)  a value the state is at least at, right
//                        after a decision that started after time t; E sums,
//                        over admissions, how far their end was past the
//                        floor published before them
// A fallback (Reason not ok: the table was full or a claim contended) meets
// no bucket: it bounds nothing from below, and the key's bucket may be
// created long after it (a tiny table, doc/stress.md "Small capacities").
struct Params {
  u64 emission_ns = 0;  // GCRA: T = ceil(period / count)
  u64 burst = 0;        // B
};

struct AlgorithmModel {
  const char* name = "";
  u64 (*upper)(const Params&, i64 a, i64 b) = nullptr;
  i64 (*charged_at_most)(const Params&, u64 state, i64 a) = nullptr;
  i64 (*charged_at_least)(const Params&, u64 state, i64 a, i64 waste) = nullptr;
  i64 (*lower)(const Params&, u64 cost_max, i64 a, i64 d, i64 waste) = nullptr;
  i64 (*state_floor)(const Params&, bool allowed, u64 cost, i64 t) = nullptr;
};

// The algorithms the verifier can check (names as shmlimit::parse_algorithm
// takes them). The others are registered fine but refused here until their
// bounds are written down.
const AlgorithmModel* model_for(const std::string& algorithm);

// ---------------------------------------------------------------------------
// The shared bookkeeping region.

using AtomicU64 = std::atomic<u64>;
using AtomicI64 = std::atomic<i64>;
static_assert(
    AtomicU64::is_always_lock_free && AtomicI64::is_always_lock_free,
    "the counters are shared by processes: a lock-based atomic would not be atomic across them");

struct alignas(64) Control {
  AtomicU64 stop{0};  // set by the parent: workers finish their decision and exit
};

/// One per worker process (a slot is reused only after its process was
/// reaped): totals for the live status, and the decision in flight.
struct alignas(64) WorkerSlot {
  AtomicU64 ops{0};
  AtomicU64 admitted{0};
  AtomicU64 denied{0};
  AtomicU64 fallbacks{0};
  // 0 = none; else ((policy * keys + key + 1) << 16) | cost, written
  // before the decision and cleared after it is recorded.
  AtomicU64 inflight{0};
};

/// One per (lane, policy, key). Written by the lane's process (and for a
/// moment by a killed predecessor that has not stopped yet): adds, mins and
/// maxes only, which commute. Times are ns on the segment clock; 0 = never.
struct KeyRecord {
  AtomicU64 admitted_cost{0};
  AtomicU64 admitted_ops{0};
  AtomicU64 denied_ops{0};
  AtomicU64 fallback_ops{0};   // decisions whose reason was not "ok"
  AtomicI64 first_pre{0};      // clock reading before this lane's first decision (any reason)
  AtomicI64 first_post{0};     // after its first decision that met the bucket (reason "ok")
  AtomicI64 last_post{0};      // after the latest decision
  AtomicI64 last_deny_pre{0};  // before the latest denial that met the bucket (reason "ok")
};

/// One per (policy, key), shared by all workers (one cache line each).
struct alignas(64) KeyShared {
  AtomicI64 state_floor{0};  // the largest state_floor() of a completed decision; 0 = none yet
  AtomicI64 waste{0};        // E: sum over admissions of max(0, end - state_floor seen before)
};

// ---------------------------------------------------------------------------
// Configuration

enum class Distribution { kUniform, kZipf, kHot };
enum class InjectBug { kNone, kLostUpdate, kPeek, kUnrecorded };

struct Config {
  unsigned processes = 0;
  double duration_s = 0;
  u64 ops = 0;
  u64 keys = 1000;
  Distribution distribution = Distribution::kZipf;
  double zipf_s = 1.0;
  double kill_rate = 0;
  bool json = false;
  std::string segment;
  bool keep = false;
  std::uint32_t capacity = 0;
  u64 seed = 1;
  InjectBug inject = InjectBug::kNone;
  std::vector<PolicyPlan> policies;
};

/// Everything a worker needs; built by the parent before the first fork
/// and inherited (copy-on-write) by every worker.
struct Plan {
  Config cfg;
  std::vector<shmlimit::PolicyId> ids;
  std::vector<Params> params;
  std::vector<const AlgorithmModel*> models;
  std::vector<u64> policy_cdf;                // cumulative weights
  std::vector<std::vector<double>> zipf_cdf;  // per policy
  std::vector<std::string> key_names;         // "k0", "k1", ... as many as the largest policy needs
  std::vector<u64> key_base;  // per policy: index of its key 0 among all (policy, key) pairs
  u64 total_keys = 0;         // (policy, key) pairs
  shmlimit::Options options;
  unsigned lanes = 0;   // = processes: each running worker owns one lane of records
  unsigned nslots = 0;  // WorkerSlots: processes, plus spares for replacements while victims die
  Control* control = nullptr;
  WorkerSlot* workers = nullptr;
  KeyRecord* records = nullptr;  // [lane][policy][key]
  KeyShared* shared = nullptr;   // [policy][key]

  u64 keys_of(std::size_t p) const { return cfg.policies[p].keys; }
  u64 pair(std::size_t p, u64 k) const { return key_base[p] + k; }
  KeyRecord& record(std::size_t lane, std::size_t p, u64 k) const {
    return records[lane * total_keys + pair(p, k)];
  }
  KeyShared& key_shared(std::size_t p, u64 k) const { return shared[pair(p, k)]; }
};

// ---------------------------------------------------------------------------
// Worker

// Forks a worker process for `lane` in WorkerSlot `slot` (stress_worker.cpp).
pid_t spawn(const Plan& plan, unsigned lane, unsigned slot, u64 seed);

// ---------------------------------------------------------------------------
// Parent

// Numbers as the status line and the report print them: "1,234,567", "1.2k".
std::string group(u64 v);
std::string rate_text(double per_s);

struct Violation {
  std::string
      kind;  // over_admission, lost_update, under_admission, unreported_charge, worker_crash, table
  std::string policy;
  std::string key;
  std::string detail;
};

struct PolicySummary {
  u64 keys_touched = 0;
  u64 ops = 0;
  u64 admitted_ops = 0;
  u64 admitted_cost = 0;
  u64 denied = 0;
  u64 fallbacks = 0;
  u64 allowance = 0;      // sum over touched keys of the exact upper bound
  u64 lower_checked = 0;  // keys whose lower bound (L) applied
  u64 no_waste_keys =
      0;  // of those, keys whose E was 0 (never found full after the first decision)
  i64 max_deficit =
      std::numeric_limits<i64>::min();  // over those keys: ideal - (recorded + possibly lost)
  u64 deficit_allowed =
      0;  // the bound on it: cost_max + processes (+ 1 per killed decision on the key)
  u64 min_headroom = std::numeric_limits<u64>::max();  // upper bound - recorded, over keys
  u64 state_checked = 0;  // keys cross-checked against their state word
  u64 violations = 0;
};

struct RunFacts {
  double seconds = 0;
  u64 ops = 0, admitted = 0, denied = 0, fallbacks = 0;
  u64 kills = 0, kills_in_flight = 0, crashes = 0;
  i64 t0 = 0, t1 = 0;
};

class Runner {
 public:
  explicit Runner(Config cfg) { plan_.cfg = std::move(cfg); }

  int run() {
    setup();
    execute();
    const int rc = verify_and_report();
    teardown();
    return rc;
  }

  ~Runner() { teardown(); }
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

 private:
  Config& cfg() { return plan_.cfg; }

  // The parent (stress_run.cpp).
  void setup();

  // Worker processes: one per lane at any time. A killed worker's
  // replacement takes over its lane at once, in a free WorkerSlot; the
  // victim's slot is freed (and its in-flight decision accounted) when its
  // process has been reaped. The parent never blocks on a dying process:
  // with more workers than cores, a SIGKILLed process may wait several
  // milliseconds for a CPU to finish dying on.
  enum class SlotState { kFree, kRunning, kDying };

  void execute();
  void start_worker(unsigned lane, unsigned slot);
  u64 sum_ops() const;
  void kill_one(std::mt19937_64& rng);
  void reap(bool all);
  void reap_one_dying();
  void finish(unsigned s, int status);
  void account_inflight(unsigned slot);
  void note_crash(unsigned slot, int status);
  void print_status(bool tty, double elapsed, u64 ops);
  void teardown();

  // The verifier and the report (stress_verify.cpp).
  int verify_and_report();

  struct Merged {
    u64 admitted_cost = 0, admitted_ops = 0, denied_ops = 0, fallback_ops = 0;
    i64 first_pre = 0, first_post = 0, last_post = 0, last_deny_pre = 0;
  };

  Merged merge(std::size_t p, u64 k) const;
  void fill_check();
  void report();

  Plan plan_;
  std::string name_;
  bool created_ = false;
  std::optional<shmlimit::Limiter> limiter_;
  std::vector<pid_t> pids_;
  std::vector<SlotState> state_;
  std::vector<unsigned> lane_of_;
  u64 spawned_ = 0;
  std::vector<u64>
      lost_;  // [policy][key]: cost of decisions in flight when their process was killed
  RunFacts facts_;
  std::vector<PolicySummary> summaries_;
  std::vector<Violation> violations_;
  shmlimit::CheckReport check_;
  shmlimit::Stats stats_;
  u64 reusable_ = 0;
};

}  // namespace stress
