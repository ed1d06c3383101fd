// `shmlimit-stress`: forked worker processes hammer one segment, the parent
// SIGKILLs some of them at random moments, and at the end the parent proves
// from what the workers recorded (and from the buckets' own state words)
// that no key was admitted more than its policy allows, nor much less.
// doc/stress.md states every bound it checks and why it holds.
//
//   shmlimit-stress [--processes P] [--duration S | --ops N] [--keys K]
//                   [--distribution uniform|zipf|hot] [--kill-rate R]
//                   [--policy NAME=RATE,burst=B,cost=LO-HI,weight=W ...]
//                   [--capacity N] [--segment /NAME] [--seed S] [--json]
//                   [--inject-bug none|lost-update|peek|unrecorded]
//
// Exit status: 0 every bound held and the table checks clean; 1 a
// violation (over-admission, a lost update, under-admission beyond the
// stated bound, a worker that crashed, a table that does not check clean
// or leaked slots); 2 a usage or setup error.
//
// How it works
//   * The parent creates the segment, registers the policies (a list of
//     PolicyPlan: data, one entry per policy; every one fails closed so
//     that a fallback can never admit), maps an anonymous MAP_SHARED region
//     of counters and forks P workers.
//   * Worker lane w (0..P-1) owns one KeyRecord per (policy, key) in that
//     region. A worker SIGKILLed by the parent is replaced at once by a new
//     process on the same lane, which goes on accumulating into the same
//     records; every record update is an atomic add, min or max, so the
//     last instructions of a dying predecessor cannot spoil them.
//   * Before each decision a worker publishes (policy, key, cost) as its
//     in-flight decision; after recording the result it clears it. When
//     the parent kills a worker it reads that word: a decision in flight
//     may have charged the bucket without being recorded, and is counted as
//     "possibly lost" for that key (the lower bounds allow for it; the upper
//     bounds never need to, since a record is only ever missing, never extra).
//   * Per (policy, key) the workers also keep, shared, a floor under the
//     bucket's state implied by the decisions made so far, and the sum E of
//     the time admissions found the bucket past that floor: refill that may
//     have gone to waste while the bucket sat full, which the lower bound
//     must allow for (it is ~0 for a key that is hammered without pause).
//
// Thread safety: single-threaded processes; the shared region is made of
// lock-free atomics (static_asserts below), as the segment is.
#include <fmt/format.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "format.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace {

namespace tools = shmlimit::tools;
using shmlimit::Nanos;
using u64 = std::uint64_t;
using i64 = std::int64_t;

constexpr int kExitPass = 0;
constexpr int kExitViolation = 1;
constexpr int kExitError = 2;

// Workers wait this long for a live rival that is mid-claim on the same new
// key before the library falls back to on_full (Reason::kContended). With
// more processes than cores a claimer may be descheduled for a few time
// slices; a dead one is detected and repaired within microseconds anyway.
constexpr std::chrono::milliseconds kClaimTimeout{1000};

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
std::vector<PolicyPlan> default_policies(u64 keys) {
  return {
      {"fast", "gcra", "1000/s", 20, 0, 1, 1, 4},
      {"api", "gcra", "100/s", 10, 0, 1, 1, 3},
      {"upload", "gcra", "200/s", 50, 0, 1, 5, 2},
      {"churn", "gcra", "2000/s", 1, 20 * keys, 1, 1, 1},
  };
}

// "NAME=RATE[,burst=B][,cost=N|LO-HI][,weight=W][,keys=K][,algorithm=A]"
PolicyPlan parse_policy_plan(const std::string& text) {
  const auto bad = [&](const std::string& why) {
    throw shmlimit::Error(shmlimit::ErrorCode::kInvalidArgument,
                          "invalid --policy \"" + text + "\": " + why);
  };
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    bad("expected NAME=RATE[,burst=B][,cost=LO-HI][,weight=W]");
  PolicyPlan p;
  p.name = text.substr(0, eq);
  std::vector<std::string> parts;
  std::string rest = text.substr(eq + 1);
  for (std::size_t start = 0;;) {
    const auto comma = rest.find(',', start);
    parts.push_back(
        rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  p.rate = parts[0];
  const auto number = [&](const std::string& field, const std::string& v) -> u64 {
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 18) {
      bad(field + " must be a non-negative integer, not \"" + v + "\"");
    }
    return std::stoull(v);
  };
  for (std::size_t i = 1; i < parts.size(); ++i) {
    const auto e = parts[i].find('=');
    if (e == std::string::npos) bad("\"" + parts[i] + "\" is not FIELD=VALUE");
    const std::string field = parts[i].substr(0, e), value = parts[i].substr(e + 1);
    if (field == "burst") {
      p.burst = number(field, value);
    } else if (field == "cost") {
      const auto dash = value.find('-');
      p.cost_min = number(field, value.substr(0, dash));
      p.cost_max = dash == std::string::npos ? p.cost_min : number(field, value.substr(dash + 1));
    } else if (field == "weight") {
      p.weight = static_cast<unsigned>(std::min<u64>(number(field, value), 1'000'000));
    } else if (field == "keys") {
      p.keys = number(field, value);
      if (p.keys == 0) bad("keys must be at least 1");
    } else if (field == "algorithm") {
      p.algorithm = value;
    } else {
      bad("unknown field \"" + field + "\" (burst, cost, weight, keys, algorithm)");
    }
  }
  if (p.cost_min == 0 || p.cost_max < p.cost_min || p.cost_max > 65535)
    bad("cost must be 1 <= LO <= HI <= 65535");
  if (p.weight == 0) bad("weight must be at least 1");
  return p;
}

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

i64 floor_div(i64 num, u64 den) {
  const auto d = static_cast<i64>(den);
  return num >= 0 ? num / d : -((-num + d - 1) / d);
}

struct AlgorithmModel {
  const char* name = "";
  u64 (*upper)(const Params&, i64 a, i64 b) = nullptr;
  i64 (*charged_at_most)(const Params&, u64 state, i64 a) = nullptr;
  i64 (*charged_at_least)(const Params&, u64 state, i64 a, i64 waste) = nullptr;
  i64 (*lower)(const Params&, u64 cost_max, i64 a, i64 d, i64 waste) = nullptr;
  i64 (*state_floor)(const Params&, bool allowed, u64 cost, i64 t) = nullptr;
};

// GCRA (doc/design.md). TAT only grows: each admission of cost c raises it
// to max(TAT, n) + c*T; an admission at time n leaves TAT - n <= B*T; a
// denial of cost c at time n means TAT > n + (B - c)*T. With X0 the key's
// first TAT (its claimer's reading) and W the refill lost while the bucket
// sat full (sum over admissions of max(0, n - TAT before it), and the jump
// from a reclaimed bucket's TAT to the reading that re-inserted the key):
//   TAT_end = X0 + C*T + W.
// a <= X0 <= a', with a the reading before the key's first decision of any
// kind and a' the end of the first decision that met the bucket.
// Upper: X0 >= a and TAT_end <= b + B*T give C <= B + floor((b - a) / T).
// Lower: X0 <= a', W <= E and TAT_end > d + (B - cost_max)*T give
//   C >= B - cost_max + floor((d - a' - E) / T).
const AlgorithmModel kGcraModel{
    "gcra",
    [](const Params& p, i64 a, i64 b) -> u64 {
      return p.burst + static_cast<u64>(std::max<i64>(0, floor_div(b - a, p.emission_ns)));
    },
    [](const Params& p, u64 state, i64 a) -> i64 {
      return floor_div(static_cast<i64>(state) - a, p.emission_ns);
    },
    [](const Params& p, u64 state, i64 a, i64 waste) -> i64 {
      return floor_div(static_cast<i64>(state) - a - waste, p.emission_ns);
    },
    [](const Params& p, u64 cost_max, i64 a, i64 d, i64 waste) -> i64 {
      return static_cast<i64>(p.burst) - static_cast<i64>(cost_max) +
             floor_div(d - a - waste, p.emission_ns);
    },
    [](const Params& p, bool allowed, u64 cost, i64 t) -> i64 {
      // After an admission TAT >= n + c*T; after a denial TAT > n + (B - c)*T; n >= t.
      return t + static_cast<i64>((allowed ? cost : p.burst - cost) * p.emission_ns);
    },
};

// The algorithms the verifier can check (names as shmlimit::parse_algorithm
// takes them). The others are registered fine but refused here until their
// bounds are written down.
const AlgorithmModel* model_for(const std::string& algorithm) {
  if (algorithm == "gcra") return &kGcraModel;
  return nullptr;
}

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

template <typename T>
T* map_shared(std::size_t n) {
  void* p = ::mmap(nullptr, sizeof(T) * n, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    throw std::runtime_error(std::string("cannot map the bookkeeping region: ") +
                             std::strerror(errno));
  auto* t = static_cast<T*>(p);
  for (std::size_t i = 0; i < n; ++i) new (t + i) T{};
  return t;
}

void store_max_release(AtomicI64& a, i64 v) {
  // Release: whoever acquires this value also sees our decision's CAS.
  i64 cur = a.load(std::memory_order_relaxed);
  while (v > cur &&
         !a.compare_exchange_weak(cur, v, std::memory_order_release, std::memory_order_relaxed)) {
  }
}

// Single-writer add (a WorkerSlot's counters): no RMW needed.
void bump(AtomicU64& a, u64 n) {
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// KeyRecord updates. Relaxed: read by the parent after the workers are reaped.
void add(AtomicU64& a, u64 n) { a.fetch_add(n, std::memory_order_relaxed); }
void store_max(AtomicI64& a, i64 v) {
  i64 cur = a.load(std::memory_order_relaxed);
  while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}
void store_min_nonzero(AtomicI64& a, i64 v) {
  i64 cur = a.load(std::memory_order_relaxed);
  while ((cur == 0 || v < cur) && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

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

const char* distribution_name(Distribution d) {
  switch (d) {
    case Distribution::kUniform:
      return "uniform";
    case Distribution::kZipf:
      return "zipf";
    case Distribution::kHot:
      return "hot";
  }
  return "?";
}

const char* inject_name(InjectBug b) {
  switch (b) {
    case InjectBug::kNone:
      return "none";
    case InjectBug::kLostUpdate:
      return "lost-update";
    case InjectBug::kPeek:
      return "peek";
    case InjectBug::kUnrecorded:
      return "unrecorded";
  }
  return "?";
}

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

[[noreturn]] void worker_main(const Plan& plan, unsigned lane, unsigned slot, u64 seed) {
  ::signal(SIGINT, SIG_IGN);  // a terminal's ^C stops the run through the parent
  ::signal(SIGTERM, SIG_DFL);
  // Workers yield to the parent: with more workers than cores, a parent at
  // the same priority wakes late and the kill rate falls behind --kill-rate.
  errno = 0;
  (void)::nice(5);
  int rc = 0;
  try {
    shmlimit::Limiter l = shmlimit::Limiter::open(plan.options);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    WorkerSlot& ws = plan.workers[slot];
    const Config& cfg = plan.cfg;
    const u64 total_weight = plan.policy_cdf.back();
    u64 denies_seen = 0, admits_seen = 0;
    while (plan.control->stop.load(std::memory_order_relaxed) == 0) {
      const u64 w = rng() % total_weight;
      const auto p = static_cast<std::size_t>(
          std::upper_bound(plan.policy_cdf.begin(), plan.policy_cdf.end(), w) -
          plan.policy_cdf.begin());
      u64 k = 0;
      switch (cfg.distribution) {
        case Distribution::kUniform:
          k = rng() % plan.keys_of(p);
          break;
        case Distribution::kHot:
          k = 0;
          break;
        case Distribution::kZipf: {
          const std::vector<double>& cdf = plan.zipf_cdf[p];
          k = static_cast<u64>(std::lower_bound(cdf.begin(), cdf.end(), unit(rng)) - cdf.begin());
          k = std::min(k, plan.keys_of(p) - 1);
          break;
        }
      }
      const PolicyPlan& pp = cfg.policies[p];
      const u64 cost = pp.cost_min + rng() % (pp.cost_max - pp.cost_min + 1);
      KeyRecord& r = plan.record(lane, p, k);
      KeyShared& s = plan.key_shared(p, k);

      // The decision in flight, visible before it can touch the waste sums or
      // charge the bucket: a seq_cst store and fence keep it ahead of the
      // library's CAS (the parent reads it only after reaping this process).
      ws.inflight.store(((plan.pair(p, k) + 1) << 16) | cost, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);

      const i64 pre = l.now().count();
      // Acquire: pairs with the release that published the floor, so the
      // decision that published it has charged the bucket before our CAS:
      // the state we meet is at least this floor (doc/stress.md, E).
      const i64 floor_before = s.state_floor.load(std::memory_order_acquire);
      if (r.first_pre.load(std::memory_order_relaxed) == 0) store_min_nonzero(r.first_pre, pre);
      const shmlimit::Decision d = cfg.inject == InjectBug::kPeek
                                       ? l.peek(plan.ids[p], plan.key_names[k], cost)
                                       : l.acquire(plan.ids[p], plan.key_names[k], cost);
      const i64 post = l.now().count();

      bool admitted = d.allowed && d.reason == shmlimit::Reason::kOk;
      const bool fallback = d.reason != shmlimit::Reason::kOk;
      if (!fallback) {
        // Refill possibly lost: the bucket may have been full since the floor.
        if (admitted && floor_before != 0 && post > floor_before) {
          s.waste.fetch_add(post - floor_before, std::memory_order_relaxed);
        }
        store_max_release(s.state_floor,
                          plan.models[p]->state_floor(plan.params[p], admitted, cost, pre));
      }
      // --inject-bug: the verifier must catch a broken build.
      if (cfg.inject == InjectBug::kLostUpdate && !d.allowed && !fallback &&
          ++denies_seen % 16 == 0) {
        admitted = true;  // as if an update had been lost and two processes got one token
      }
      bool record_it = true;
      if (cfg.inject == InjectBug::kUnrecorded && admitted && ++admits_seen % 8 == 0)
        record_it = false;

      // first_post bounds when the key's bucket was first created (X0 <=
      // first_post), so only a decision that met the bucket sets it: a
      // fallback (table full, contended) never touched one, and a key can
      // meet a full table long before it gets a slot.
      if (!fallback && r.first_post.load(std::memory_order_relaxed) == 0) {
        store_min_nonzero(r.first_post, post);
      }
      store_max(r.last_post, post);
      if (fallback) {
        add(r.fallback_ops, 1);
        bump(ws.fallbacks, 1);
      } else if (admitted) {
        if (record_it) {
          add(r.admitted_cost, cost);
          add(r.admitted_ops, 1);
        }
        bump(ws.admitted, 1);
      } else {
        add(r.denied_ops, 1);
        store_max(r.last_deny_pre, pre);
        bump(ws.denied, 1);
      }
      bump(ws.ops, 1);
      // Release: the records above are complete before the decision stops
      // counting as in flight.
      ws.inflight.store(0, std::memory_order_release);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmlimit-stress: worker on lane %u (pid %d): %s\n", lane,
                 static_cast<int>(::getpid()), e.what());
    rc = 3;
  }
  ::_exit(rc);
}

// ---------------------------------------------------------------------------
// Parent

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) { g_interrupted = 1; }

pid_t spawn(const Plan& plan, unsigned lane, unsigned slot, u64 seed) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) worker_main(plan, lane, slot, seed);
  return pid;
}

std::string group(u64 v) {
  std::string s = std::to_string(v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3)
    s.insert(static_cast<std::size_t>(i), ",");
  return s;
}

std::string rate_text(double per_s) {
  if (per_s >= 1e6) return fmt::format("{:.2f}M", per_s / 1e6);
  if (per_s >= 1e3) return fmt::format("{:.1f}k", per_s / 1e3);
  return fmt::format("{:.0f}", per_s);
}

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

  void setup() {
    Config& c = cfg();
    if (c.processes == 0) c.processes = std::max(1u, std::thread::hardware_concurrency());
    if (c.keys == 0) throw std::invalid_argument("--keys must be at least 1");
    if (c.policies.empty()) c.policies = default_policies(c.keys);
    if (c.policies.size() > 64) throw std::invalid_argument("at most 64 policies");
    u64 max_keys = 0;
    for (PolicyPlan& pp : c.policies) {
      if (pp.keys == 0) pp.keys = c.keys;
      plan_.key_base.push_back(plan_.total_keys);
      plan_.total_keys += pp.keys;
      max_keys = std::max(max_keys, pp.keys);
    }
    if (c.duration_s <= 0 && c.ops == 0) c.duration_s = 10;
    if (c.capacity == 0) {
      // Half the (policy, key) pairs: long-lived keys fit, full buckets get reclaimed.
      std::uint32_t cap = 1024;
      while (cap < plan_.total_keys / 2 && cap < (1u << 28)) cap <<= 1;
      c.capacity = cap;
    }
    const double bytes = static_cast<double>(c.processes) * static_cast<double>(plan_.total_keys) *
                         sizeof(KeyRecord);
    if (bytes > 2.0 * (1ull << 30)) {
      throw std::invalid_argument(fmt::format(
          "{} processes x {} (policy, key) pairs need {:.1f} GiB of records; use fewer keys",
          c.processes, plan_.total_keys, bytes / (1ull << 30)));
    }
    for (const PolicyPlan& p : c.policies) {
      const AlgorithmModel* m = model_for(p.algorithm);
      if (m == nullptr)
        throw std::invalid_argument("policy " + p.name +
                                    ": the verifier has no model of algorithm \"" + p.algorithm +
                                    "\"");
      plan_.models.push_back(m);
    }

    name_ = c.segment.empty() ? fmt::format("/shmlimit-stress-{}", ::getpid()) : c.segment;
    shmlimit::Options o;
    o.name = name_;
    o.capacity = c.capacity;
    o.claim_timeout = kClaimTimeout;
    limiter_.emplace(shmlimit::Limiter::create(o));
    created_ = true;
    u64 total = 0;
    for (const PolicyPlan& pp : c.policies) {
      shmlimit::PolicySpec spec;
      spec.name = pp.name;
      spec.algorithm = shmlimit::parse_algorithm(pp.algorithm);
      spec.rate = shmlimit::parse_rate(pp.rate);
      spec.burst = pp.burst;
      spec.on_full = shmlimit::OnFull::kDeny;  // a fallback may deny, never admit: exactness holds
      plan_.ids.push_back(limiter_->add_policy(spec));
      const u64 burst = pp.burst == 0 ? spec.rate.count : pp.burst;
      const auto period = static_cast<u64>(spec.rate.period.count());
      plan_.params.push_back(
          Params{period / spec.rate.count + (period % spec.rate.count != 0 ? 1 : 0), burst});
      if (pp.cost_max > burst) {
        throw std::invalid_argument(
            fmt::format("policy {}: cost {} exceeds the burst {} (never admitted)", pp.name,
                        pp.cost_max, burst));
      }
      total += pp.weight;
      plan_.policy_cdf.push_back(total);
    }
    if (c.distribution == Distribution::kZipf) {
      for (const PolicyPlan& pp : c.policies) {
        std::vector<double> cdf(pp.keys);
        double sum = 0;
        for (u64 k = 0; k < pp.keys; ++k)
          cdf[k] = (sum += 1.0 / std::pow(static_cast<double>(k + 1), c.zipf_s));
        for (double& v : cdf) v /= sum;
        plan_.zipf_cdf.push_back(std::move(cdf));
      }
    }
    plan_.key_names.reserve(max_keys);
    for (u64 k = 0; k < max_keys; ++k) plan_.key_names.push_back("k" + std::to_string(k));

    plan_.options = o;
    plan_.options.capacity = 0;
    plan_.control = map_shared<Control>(1);
    // Spare WorkerSlots for replacements while killed workers die: on a
    // loaded machine a SIGKILLed process can wait tens of ms for a CPU to
    // exit on. (64 bytes each; the records are per lane.)
    const unsigned spares =
        c.kill_rate <= 0
            ? 0u
            : std::max(4 * c.processes,
                       static_cast<unsigned>(std::min(4096.0, std::ceil(c.kill_rate))));
    plan_.lanes = c.processes;
    plan_.nslots = c.processes + spares;
    plan_.workers = map_shared<WorkerSlot>(plan_.nslots);
    plan_.records = map_shared<KeyRecord>(static_cast<std::size_t>(plan_.lanes) * plan_.total_keys);
    plan_.shared = map_shared<KeyShared>(plan_.total_keys);
    lost_.assign(plan_.total_keys, 0);
  }

  // Worker processes: one per lane at any time. A killed worker's
  // replacement takes over its lane at once, in a free WorkerSlot; the
  // victim's slot is freed (and its in-flight decision accounted) when its
  // process has been reaped. The parent never blocks on a dying process:
  // with more workers than cores, a SIGKILLed process may wait several
  // milliseconds for a CPU to finish dying on.
  enum class SlotState { kFree, kRunning, kDying };

  void execute() {
    const Config& c = plan_.cfg;
    std::mt19937_64 rng(c.seed ^ 0x5EED5EED5EED5EEDULL);
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);

    const bool tty = ::isatty(STDERR_FILENO) == 1;
    facts_.t0 = limiter_->now().count();
    const auto start = std::chrono::steady_clock::now();
    pids_.assign(plan_.nslots, 0);
    state_.assign(plan_.nslots, SlotState::kFree);
    lane_of_.assign(plan_.nslots, 0);
    for (unsigned s = 0; s < c.processes; ++s) start_worker(s, s);

    std::exponential_distribution<double> next_kill(c.kill_rate > 0 ? c.kill_rate : 1.0);
    const auto after = [](double seconds) {
      return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(seconds));
    };
    auto kill_at = start + after(next_kill(rng));
    const auto status_every =
        tty ? std::chrono::milliseconds(200) : std::chrono::milliseconds(2000);
    auto status_at = start + status_every;
    const auto end = start + after(c.duration_s > 0 ? c.duration_s : 1e9);
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      const u64 ops = sum_ops();
      if (g_interrupted != 0 || now >= end || (c.ops > 0 && ops >= c.ops)) break;
      reap(false);
      if (c.kill_rate > 0 && now >= kill_at) {
        kill_one(rng);
        kill_at += after(next_kill(rng));
        if (kill_at < now - std::chrono::milliseconds(100))
          kill_at = now;  // far behind: do not burst
        continue;
      }
      if (now >= status_at) {
        print_status(tty, std::chrono::duration<double>(now - start).count(), ops);
        status_at += status_every;
      }
      auto wake =
          std::min({end, status_at, now + std::chrono::milliseconds(c.kill_rate > 0 ? 1 : 50)});
      if (c.kill_rate > 0) wake = std::min(wake, kill_at);
      std::this_thread::sleep_until(wake);
    }
    plan_.control->stop.store(1, std::memory_order_relaxed);
    reap(true);
    facts_.t1 = limiter_->now().count();
    facts_.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (tty) std::fprintf(stderr, "\r\x1b[K");
    for (unsigned s = 0; s < plan_.nslots; ++s) {
      const WorkerSlot& w = plan_.workers[s];
      facts_.ops += w.ops.load();
      facts_.admitted += w.admitted.load();
      facts_.denied += w.denied.load();
      facts_.fallbacks += w.fallbacks.load();
    }
  }

  void start_worker(unsigned lane, unsigned slot) {
    const u64 seed = plan_.cfg.seed * 0x9E3779B97F4A7C15ULL + lane * 1000003ULL + spawned_++;
    lane_of_[slot] = lane;
    pids_[slot] = spawn(plan_, lane, slot, seed);
    state_[slot] = SlotState::kRunning;
  }

  u64 sum_ops() const {
    u64 n = 0;
    for (unsigned s = 0; s < plan_.nslots; ++s)
      n += plan_.workers[s].ops.load(std::memory_order_relaxed);
    return n;
  }

  void kill_one(std::mt19937_64& rng) {
    std::vector<unsigned> running, free;
    for (unsigned s = 0; s < plan_.nslots; ++s) {
      if (state_[s] == SlotState::kRunning) running.push_back(s);
      if (state_[s] == SlotState::kFree) free.push_back(s);
    }
    if (running.empty()) return;
    if (free.empty()) {
      // Every spare WorkerSlot is still dying: wait for one (rare).
      reap_one_dying();
      for (unsigned s = 0; s < plan_.nslots; ++s) {
        if (state_[s] == SlotState::kFree) free.push_back(s);
      }
      if (free.empty()) return;
    }
    const unsigned victim = running[rng() % running.size()];
    ::kill(pids_[victim], SIGKILL);
    state_[victim] = SlotState::kDying;
    ++facts_.kills;
    start_worker(lane_of_[victim], free.front());
  }

  // Reaps what has ended: dying workers (expected: SIGKILL), and running
  // ones that ended on their own (a crash, unless `all`: then they were
  // told to stop and must exit 0). With `all`, waits for every worker.
  void reap(bool all) {
    for (unsigned s = 0; s < plan_.nslots; ++s) {
      if (state_[s] == SlotState::kFree) continue;
      int status = 0;
      pid_t r = 0;
      do {
        r = ::waitpid(pids_[s], &status, all ? 0 : WNOHANG);
      } while (r < 0 && errno == EINTR);
      if (r != pids_[s]) continue;
      finish(s, status);
    }
  }

  void reap_one_dying() {
    int status = 0;
    for (;;) {
      const pid_t r = ::waitpid(-1, &status, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return;
      for (unsigned s = 0; s < plan_.nslots; ++s) {
        if (pids_[s] == r && state_[s] != SlotState::kFree) {
          finish(s, status);
          if (state_[s] == SlotState::kFree) return;
        }
      }
    }
  }

  void finish(unsigned s, int status) {
    const bool expected =
        state_[s] == SlotState::kDying
            ? WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL
            : WIFEXITED(status) && WEXITSTATUS(status) == 0 && plan_.control->stop.load() != 0;
    if (!expected) note_crash(s, status);
    account_inflight(s);
    pids_[s] = 0;
    state_[s] = SlotState::kFree;  // a crashed worker is not replaced: the run has failed
  }

  // A decision in flight when its process died may have charged the bucket
  // without being recorded: count it as possibly admitted.
  void account_inflight(unsigned slot) {
    const u64 f = plan_.workers[slot].inflight.exchange(0);
    if (f == 0) return;
    ++facts_.kills_in_flight;
    const u64 index = (f >> 16) - 1;
    if (index < lost_.size()) lost_[index] += f & 0xFFFF;
  }

  void note_crash(unsigned slot, int status) {
    ++facts_.crashes;
    std::string how =
        WIFSIGNALED(status)
            ? fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)))
            : fmt::format("exited with status {}", WEXITSTATUS(status));
    violations_.push_back(
        {"worker_crash", "", "", fmt::format("worker on lane {} {}", lane_of_[slot], how)});
  }

  void print_status(bool tty, double elapsed, u64 ops) {
    u64 admitted = 0, denied = 0;
    for (unsigned s = 0; s < plan_.nslots; ++s) {
      admitted += plan_.workers[s].admitted.load(std::memory_order_relaxed);
      denied += plan_.workers[s].denied.load(std::memory_order_relaxed);
    }
    const double rate = elapsed > 0 ? static_cast<double>(ops) / elapsed : 0;
    const std::string total =
        plan_.cfg.duration_s > 0 ? fmt::format("/{:.0f}s", plan_.cfg.duration_s) : "";
    const std::string line = fmt::format(
        "[{:6.1f}s{}] {} decisions ({} ops/s), admitted {}, denied {}, kills {}", elapsed, total,
        group(ops), rate_text(rate), group(admitted), group(denied), group(facts_.kills));
    if (tty) {
      std::fprintf(stderr, "\r\x1b[K%s", line.c_str());
    } else if (elapsed > 0) {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
  }

  // ---- verification -------------------------------------------------------
  int verify_and_report() {
    const Config& c = plan_.cfg;
    const std::size_t npol = c.policies.size();
    summaries_.assign(npol, PolicySummary{});

    // 1. The table: repair what dead workers left, then every invariant.
    check_ = limiter_->check(true);
    for (const std::string& p : check_.problems) violations_.push_back({"table", "", "", p});
    if (check_.in_progress != 0) {
      violations_.push_back({"table", "", "",
                             fmt::format("{} slots still being claimed after every worker stopped",
                                         check_.in_progress)});
    }
    stats_ = limiter_->stats();
    if (stats_.claiming != 0 || stats_.used + stats_.dead + stats_.empty != stats_.capacity) {
      violations_.push_back(
          {"table", "", "",
           fmt::format(
               "slot states do not add up: {} used + {} dead + {} empty + {} claiming != {}",
               stats_.used, stats_.dead, stats_.empty, stats_.claiming, stats_.capacity)});
    }

    // 2. Every key's bounds. The buckets as they are now: (policy, key) -> state.
    std::map<std::pair<std::string, std::string>, u64> states;
    for (const shmlimit::BucketView& b : limiter_->dump()) states[{b.policy, b.key}] = b.state;

    for (std::size_t p = 0; p < npol; ++p) {
      const PolicyPlan& pp = c.policies[p];
      const Params& prm = plan_.params[p];
      const AlgorithmModel& m = *plan_.models[p];
      PolicySummary& sum = summaries_[p];
      sum.deficit_allowed = c.processes;
      for (u64 k = 0; k < pp.keys; ++k) {
        Merged r = merge(p, k);
        if (r.first_pre == 0) continue;  // never attempted
        ++sum.keys_touched;
        sum.ops += r.admitted_ops + r.denied_ops + r.fallback_ops;
        sum.admitted_ops += r.admitted_ops;
        sum.admitted_cost += r.admitted_cost;
        sum.denied += r.denied_ops;
        sum.fallbacks += r.fallback_ops;
        const std::string& key = plan_.key_names[k];
        const auto fail = [&](const char* kind, std::string detail) {
          ++sum.violations;
          violations_.push_back({kind, pp.name, key, std::move(detail)});
        };

        // (U) exact upper bound over the key's whole window. Without kills
        // every decision ended before the latest post-decision reading;
        // with kills a decision may have been cut short, so the window
        // ends when the parent had reaped every worker.
        const i64 b = facts_.kills > 0 || facts_.crashes > 0 ? facts_.t1 : r.last_post;
        const u64 upper = m.upper(prm, r.first_pre, b);
        sum.allowance += upper;
        if (r.admitted_cost > upper) {
          fail("over_admission",
               fmt::format("recorded {} admitted, the most {} can admit in {} is {}",
                           r.admitted_cost, pp.rate, tools::format_duration(Nanos(b - r.first_pre)),
                           upper));
        } else {
          sum.min_headroom = std::min(sum.min_headroom, upper - r.admitted_cost);
        }

        // (S) the state word: what the bucket says it was charged since the
        // key's first decision bounds what the workers were told.
        const auto st = states.find({pp.name, key});
        if (st != states.end()) {
          const i64 at_most = m.charged_at_most(prm, st->second, r.first_pre);
          ++sum.state_checked;
          if (static_cast<i64>(r.admitted_cost) > at_most) {
            fail("lost_update",
                 fmt::format("recorded {} admitted but the bucket's state was charged at most {} "
                             "(an admission did not reach the state word)",
                             r.admitted_cost, at_most));
          }
        }

        // (L) lower bound: the key must have admitted what the policy
        // allows between its first decision and its last denial, less the
        // refill that may have gone to waste while the bucket sat full (E).
        const KeyShared& ks = plan_.key_shared(p, k);
        const i64 waste = ks.waste.load();
        const u64 lost = lost_[plan_.pair(p, k)];
        const u64 allowed_short = c.processes;
        if (r.last_deny_pre != 0) {
          ++sum.lower_checked;
          if (waste == 0) ++sum.no_waste_keys;
          const i64 ideal = m.lower(prm, pp.cost_max, r.first_post, r.last_deny_pre, waste);
          const i64 deficit = ideal - static_cast<i64>(r.admitted_cost + lost);
          sum.max_deficit = std::max(sum.max_deficit, deficit);
          if (deficit > static_cast<i64>(allowed_short)) {
            fail("under_admission",
                 fmt::format("admitted {} (+{} possibly lost to kills) but must get at least {} - "
                             "{}: {} until its "
                             "last denial {} later, less {} of possibly wasted refill",
                             r.admitted_cost, lost, ideal, allowed_short, pp.rate,
                             tools::format_duration(Nanos(r.last_deny_pre - r.first_post)),
                             tools::format_duration(Nanos(waste))));
          }
          // (S') every charge in the state word was reported to someone.
          if (st != states.end()) {
            const i64 at_least = m.charged_at_least(prm, st->second, r.first_post, waste);
            if (at_least > static_cast<i64>(r.admitted_cost + lost + allowed_short)) {
              fail("unreported_charge", fmt::format("the bucket's state was charged at least {} "
                                                    "but only {} (+{} possibly lost) were "
                                                    "reported as admitted",
                                                    at_least, r.admitted_cost, lost));
            }
          }
        }
      }
      if (sum.min_headroom == std::numeric_limits<u64>::max()) sum.min_headroom = 0;
    }

    // 3. No slot leaked: once every bucket is full again (far in the
    // future), every slot can be taken by a new key.
    fill_check();

    report();
    return violations_.empty() ? kExitPass : kExitViolation;
  }

  struct Merged {
    u64 admitted_cost = 0, admitted_ops = 0, denied_ops = 0, fallback_ops = 0;
    i64 first_pre = 0, first_post = 0, last_post = 0, last_deny_pre = 0;
  };

  Merged merge(std::size_t p, u64 k) const {
    Merged m;
    const auto min_set = [](i64& into, i64 v) {
      if (v != 0 && (into == 0 || v < into)) into = v;
    };
    for (unsigned lane = 0; lane < plan_.lanes; ++lane) {
      const KeyRecord& r = plan_.record(lane, p, k);
      m.admitted_cost += r.admitted_cost.load();
      m.admitted_ops += r.admitted_ops.load();
      m.denied_ops += r.denied_ops.load();
      m.fallback_ops += r.fallback_ops.load();
      min_set(m.first_pre, r.first_pre.load());
      min_set(m.first_post, r.first_post.load());
      m.last_post = std::max(m.last_post, r.last_post.load());
      m.last_deny_pre = std::max(m.last_deny_pre, r.last_deny_pre.load());
    }
    return m;
  }

  // No slot leaked: once every bucket is full again (far in the future),
  // new keys must be able to take every slot. A handle with a 1 ms
  // claim_timeout: no worker is alive, so a claim that waits at all is
  // stuck on a slot nobody will ever release (Reason::kContended).
  void fill_check() {
    const Config& c = plan_.cfg;
    i64 horizon = 0;
    for (const Params& prm : plan_.params)
      horizon = std::max<i64>(horizon, static_cast<i64>(prm.burst * prm.emission_ns));
    const Nanos later(facts_.t1 + horizon + 1'000'000'000);
    shmlimit::Options o = plan_.options;
    o.claim_timeout = std::chrono::milliseconds(1);
    shmlimit::Limiter fill = shmlimit::Limiter::open(o);
    u64 taken = 0, stuck = 0;
    const u64 cap = stats_.capacity;
    for (u64 i = 0; i < 16 * cap && taken < cap; ++i) {
      const auto d = fill.acquire_at(plan_.ids[0], fmt::format("fill-{}", i), 1, later);
      taken += d.allowed ? 1 : 0;
      stuck += d.reason == shmlimit::Reason::kContended ? 1 : 0;
    }
    reusable_ = taken;
    if (taken < cap || stuck > 0) {
      violations_.push_back(
          {"table", c.policies[0].name, "",
           fmt::format("only {} of {} slots could take a new key once every bucket was full, "
                       "{} claims stuck (slots leaked)",
                       taken, cap, stuck)});
    }
    const shmlimit::CheckReport again = limiter_->check(false);
    for (const std::string& p : again.problems)
      violations_.push_back({"table", "", "", "after refilling: " + p});
  }

  void report() {
    const Config& c = plan_.cfg;
    const double secs = std::max(facts_.seconds, 1e-9);
    if (c.json) {
      tools::Json j;
      j["config"] = {{"processes", c.processes},
                     {"duration_s", c.duration_s},
                     {"ops", c.ops},
                     {"keys", c.keys},
                     {"distribution", distribution_name(c.distribution)},
                     {"kill_rate", c.kill_rate},
                     {"capacity", c.capacity},
                     {"segment", name_},
                     {"seed", c.seed},
                     {"inject_bug", inject_name(c.inject)}};
      j["run"] = {{"seconds", facts_.seconds},
                  {"decisions", facts_.ops},
                  {"ops_per_s", static_cast<double>(facts_.ops) / secs},
                  {"admitted", facts_.admitted},
                  {"denied", facts_.denied},
                  {"fallbacks", facts_.fallbacks},
                  {"kills", facts_.kills},
                  {"kills_mid_decision", facts_.kills_in_flight},
                  {"crashes", facts_.crashes}};
      tools::Json pols = tools::Json::array();
      for (std::size_t p = 0; p < c.policies.size(); ++p) {
        const PolicyPlan& pp = c.policies[p];
        const PolicySummary& s = summaries_[p];
        pols.push_back({{"name", pp.name},
                        {"algorithm", pp.algorithm},
                        {"rate", pp.rate},
                        {"burst", plan_.params[p].burst},
                        {"cost_min", pp.cost_min},
                        {"cost_max", pp.cost_max},
                        {"weight", pp.weight},
                        {"keys_configured", pp.keys},
                        {"keys", s.keys_touched},
                        {"decisions", s.ops},
                        {"ops_per_s", static_cast<double>(s.ops) / secs},
                        {"admitted_ops", s.admitted_ops},
                        {"admitted_cost", s.admitted_cost},
                        {"denied", s.denied},
                        {"fallbacks", s.fallbacks},
                        {"allowance", s.allowance},
                        {"min_headroom", s.min_headroom},
                        {"state_checked", s.state_checked},
                        {"lower_checked", s.lower_checked},
                        {"no_waste_keys", s.no_waste_keys},
                        {"max_deficit", s.max_deficit},
                        {"deficit_allowed", s.deficit_allowed},
                        {"violations", s.violations},
                        {"verdict", s.violations == 0 ? "pass" : "fail"}});
      }
      j["policies"] = pols;
      j["table"] = {{"check_clean", check_.clean()},
                    {"problems", check_.problems},
                    {"repaired", check_.repaired},
                    {"repairs_total", stats_.repairs},
                    {"used", stats_.used},
                    {"dead", stats_.dead},
                    {"empty", stats_.empty},
                    {"claiming", stats_.claiming},
                    {"full_events", stats_.full_events},
                    {"contended_events", stats_.contended_events},
                    {"reusable_slots", reusable_},
                    {"capacity", stats_.capacity}};
      tools::Json v = tools::Json::array();
      for (const Violation& x : violations_) {
        v.push_back({{"kind", x.kind}, {"policy", x.policy}, {"key", x.key}, {"detail", x.detail}});
      }
      j["violations"] = v;
      j["verdict"] = violations_.empty() ? "pass" : "fail";
      tools::write_stdout(tools::to_text(j, 2) + "\n");
      return;
    }

    std::string out;
    out += fmt::format(
        "shmlimit-stress: {} processes, {} keys ({}), {} policies, capacity {}, kill-rate {}/s, "
        "seed {}{}\n",
        c.processes, c.keys, distribution_name(c.distribution), c.policies.size(), c.capacity,
        c.kill_rate, c.seed,
        c.inject == InjectBug::kNone ? ""
                                     : fmt::format(", INJECTED BUG: {}", inject_name(c.inject)));
    out += fmt::format(
        "run: {} decisions in {:.2f} s = {} ops/s; {} kills ({} mid-decision), {} crashes\n\n",
        group(facts_.ops), facts_.seconds, rate_text(static_cast<double>(facts_.ops) / secs),
        group(facts_.kills), group(facts_.kills_in_flight), facts_.crashes);
    tools::Table t;
    t.headers = {"POLICY", "RATE",     "BURST",     "COST",  "KEYS",    "OPS/S",  "ADMITTED",
                 "DENIED", "FALLBACK", "ALLOWANCE", "LOWER", "DEFICIT", "VERDICT"};
    t.right = {false, false, true, false, true, true, true, true, true, true, true, true, false};
    for (std::size_t p = 0; p < c.policies.size(); ++p) {
      const PolicyPlan& pp = c.policies[p];
      const PolicySummary& s = summaries_[p];
      t.rows.push_back(
          {pp.name, pp.rate, std::to_string(plan_.params[p].burst),
           pp.cost_min == pp.cost_max ? std::to_string(pp.cost_min)
                                      : fmt::format("{}-{}", pp.cost_min, pp.cost_max),
           group(s.keys_touched), rate_text(static_cast<double>(s.ops) / secs),
           group(s.admitted_cost), group(s.denied), group(s.fallbacks), group(s.allowance),
           fmt::format("{}/{}", group(s.lower_checked), group(s.no_waste_keys)),
           s.lower_checked == 0 ? "-" : fmt::format("{}/{}", s.max_deficit, s.deficit_allowed),
           s.violations == 0 ? "ok" : fmt::format("FAIL ({})", s.violations)});
      t.styles.push_back(s.violations == 0 ? nullptr : tools::kRed);
    }
    out += tools::render_table(t, tools::use_color());
    out +=
        "\nADMITTED and ALLOWANCE are cost units; ALLOWANCE sums each key's exact upper bound "
        "(U).\n"
        "LOWER: keys whose lower bound (L) was checked / of those, keys never found full after "
        "their first\n"
        "decision (E = 0). DEFICIT: the worst key's shortfall from (L) / the shortfall allowed "
        "(processes).\n\n";
    out += fmt::format(
        "table: check {} ({} problems), {} claims of killed workers repaired by check, {} repairs "
        "in all; "
        "{} live, {} dead, {} empty, {} claiming; {} table-full, {} contended fallbacks\n",
        check_.clean() ? "clean" : "NOT CLEAN", check_.problems.size(), check_.repaired,
        stats_.repairs, stats_.used, stats_.dead, stats_.empty, stats_.claiming, stats_.full_events,
        stats_.contended_events);
    out += fmt::format("slots reusable after the run: {} of {}\n", reusable_, stats_.capacity);
    if (!violations_.empty()) {
      out += fmt::format("\n{} violations:\n", violations_.size());
      std::size_t shown = 0;
      for (const Violation& v : violations_) {
        if (++shown > 20) {
          out += fmt::format("  ... and {} more\n", violations_.size() - 20);
          break;
        }
        out += fmt::format("  {}: {}{}{}\n", v.kind,
                           v.policy.empty() ? "" : "policy " + v.policy + " ",
                           v.key.empty() ? "" : "key " + v.key + ": ", v.detail);
      }
    }
    out += fmt::format("\nverdict: {}\n", violations_.empty() ? "PASS (0 violations)"
                                                              : fmt::format("FAIL ({} violations)",
                                                                            violations_.size()));
    tools::write_stdout(out);
  }

  void teardown() {
    if (plan_.control != nullptr && pids_.size() > 0) {
      plan_.control->stop.store(1);
      for (pid_t& pid : pids_) {
        if (pid > 0) {
          ::kill(pid, SIGKILL);
          ::waitpid(pid, nullptr, 0);
          pid = 0;
        }
      }
    }
    if (created_ && !plan_.cfg.keep) {
      try {
        shmlimit::Limiter::remove(name_);
      } catch (...) {
      }
      created_ = false;
    }
  }

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

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  std::string distribution = "zipf", inject = "none";
  std::vector<std::string> policy_texts;
  CLI::App app{
      "shmlimit-stress: forked processes hammer one shmlimit segment, some are SIGKILLed, and the "
      "parent verifies per key that nothing was over- or under-admitted (doc/stress.md)."};
  app.add_option("-p,--processes", cfg.processes, "worker processes (default: number of cores)");
  app.add_option("-d,--duration", cfg.duration_s, "seconds to run (default 10, or until --ops)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("-n,--ops", cfg.ops, "stop after this many decisions in total");
  app.add_option("-k,--keys", cfg.keys,
                 "keys per policy (default 1000; the default churn policy has 20x more)")
      ->check(CLI::Range(u64{1}, u64{100'000'000}));
  app.add_option("--distribution", distribution,
                 "key choice: uniform, zipf (default) or hot (every decision on one key)")
      ->check(CLI::IsMember({"uniform", "zipf", "hot"}));
  app.add_option("--zipf-s", cfg.zipf_s, "zipf exponent (default 1.0)")->check(CLI::PositiveNumber);
  app.add_option("--kill-rate", cfg.kill_rate,
                 "SIGKILLs of random workers per second, each replaced at once (default 0)")
      ->check(CLI::NonNegativeNumber);
  app.add_option(
      "--policy", policy_texts,
      "NAME=RATE[,burst=B][,cost=LO-HI][,weight=W][,keys=K] (repeatable; replaces the default mix "
      "fast=1000/s,burst=20,weight=4 api=100/s,burst=10,weight=3 "
      "upload=200/s,burst=50,cost=1-5,weight=2 "
      "churn=2000/s,burst=1,keys=20*K,weight=1)");
  app.add_option("--capacity", cfg.capacity,
                 "segment slots (default: half the (policy, key) pairs, at least 1024)");
  app.add_option("--segment", cfg.segment,
                 "segment name to create (default /shmlimit-stress-PID); must not exist");
  app.add_flag("--keep", cfg.keep, "keep the segment afterwards (inspect it with `shmlimit dump`)");
  app.add_option("--seed", cfg.seed, "random seed (default 1)");
  app.add_flag("--json", cfg.json, "print the summary as one JSON object");
  app.add_option("--inject-bug", inject,
                 "TEST ONLY: break the workers' bookkeeping so the verifier must fail: lost-update "
                 "(record a "
                 "denial as admitted), peek (decide with peek, never charging), unrecorded (drop "
                 "admissions)")
      ->check(CLI::IsMember({"none", "lost-update", "peek", "unrecorded"}));
  app.footer("Exit status: 0 every bound held, 1 a violation, 2 an error.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    app.exit(e);
    return kExitError;
  }
  cfg.distribution = distribution == "uniform" ? Distribution::kUniform
                     : distribution == "hot"   ? Distribution::kHot
                                               : Distribution::kZipf;
  cfg.inject = inject == "lost-update"  ? InjectBug::kLostUpdate
               : inject == "peek"       ? InjectBug::kPeek
               : inject == "unrecorded" ? InjectBug::kUnrecorded
                                        : InjectBug::kNone;
  try {
    for (const std::string& t : policy_texts) cfg.policies.push_back(parse_policy_plan(t));
    Runner runner(std::move(cfg));
    return runner.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmlimit-stress: %s\n", e.what());
    return kExitError;
  }
}
