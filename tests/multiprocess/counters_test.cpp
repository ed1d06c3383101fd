// The exact per-policy totals (Limiter::counters(), src/limiter/counters.hpp)
// across forked processes: they equal what the callers saw, exactly, through
// reclaim churn on a tiny table; they survive SIGKILLs of counting processes
// (losing at most the decisions in flight); they never decrease; and every
// limit that refused an acquire_many is counted, in stat, metrics, dump and
// watch. Counts, not timings.
#include <gtest/gtest.h>
#include <signal.h>

#include <array>
#include <atomic>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "inspect.hpp"  // tools/: the CLI's metrics and watch renderers
#include "mp.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

constexpr std::int64_t kSecond = 1'000'000'000;

struct Tally {
  std::atomic<std::uint64_t> admitted{0};
  std::atomic<std::uint64_t> denied{0};
};

PolicyCounters counters_of(const Limiter& l, PolicyId id) {
  for (const PolicyCounters& c : l.counters()) {
    if (c.id.index == id.index) return c;
  }
  ADD_FAILURE() << "no counters for policy " << id.index;
  return {};
}

// A 16-slot table whose every slot is in every key's probe window: keys
// are claimed, refill and are reclaimed all the time.
Options sixteen_slots(const ScopedName& name) {
  Options o;
  o.name = name.str();
  o.capacity = 16;
  o.max_probe = 16;
  return o;
}

// 10,000 distinct keys through a 16-slot table from 4 processes: buckets are
// claimed, refill and are reclaimed all the time (and the table is often
// full: on_full = deny, counted too), single and multi-limit requests mixed.
TEST(Counters, TenThousandKeysThroughSixteenSlotsFromFourProcessesAreCountedExactly) {
  ScopedName name("counters-churn");
  const Options o = sixteen_slots(name);
  Limiter parent = Limiter::create(o);
  const std::array<PolicyId, 2> ids = {
      parent.add_policy({"a", Algorithm::kGcra, parse_rate("10/s"), 2, OnFull::kDeny}),
      parent.add_policy({"b", Algorithm::kFixedWindow, parse_rate("3/s"), 0, OnFull::kAllow}),
  };
  Shared<Tally> seen(2);
  Shared<std::atomic<std::uint64_t>> start;
  constexpr int kProcs = 4, kKeysEach = 2500;
  const auto pids = fork_workers(kProcs, [&](int w) {
    Limiter l = Limiter::open(o);
    std::array<std::uint64_t, 2> adm{}, den{};
    std::array<Decision, 2> each;
    wait_for(*start, 1);
    for (int k = 0; k < kKeysEach; ++k) {
      const std::string key = "w" + std::to_string(w) + "-k" + std::to_string(k);
      // Each key a second after the previous one: earlier buckets refill
      // and become reclaimable while other processes still use theirs.
      const Nanos t(static_cast<std::int64_t>(k) * kSecond + w * 1000);
      for (int n = 0; n < 3; ++n) {
        const Decision d = l.acquire_at(ids[0], key, 1, t);
        (d.allowed ? adm : den)[0]++;
      }
      const std::array<Request, 2> req = {Request{ids[0], key, 1}, Request{ids[1], key, 1}};
      const Decision d = l.acquire_many_at(req, t, each);
      for (std::size_t i = 0; i < 2; ++i) {
        if (d.allowed) {
          adm[i]++;
        } else if (!each[i].allowed) {
          den[i]++;  // a refused request is one denial of each limit that refused it
        }
      }
    }
    for (std::size_t i = 0; i < 2; ++i) {
      seen[i].admitted.fetch_add(adm[i]);
      seen[i].denied.fetch_add(den[i]);
    }
    return 0;
  });
  start->store(1, std::memory_order_release);
  ASSERT_EQ(wait_all(pids), 0);
  std::uint64_t admitted = 0, denied = 0;
  for (std::size_t i = 0; i < 2; ++i) {
    const PolicyCounters c = counters_of(parent, ids[i]);
    EXPECT_EQ(c.admitted, seen[i].admitted.load()) << c.policy;
    EXPECT_EQ(c.denied, seen[i].denied.load()) << c.policy;
    admitted += c.admitted;
    denied += c.denied;
  }
  // Both outcomes happened (the churn is real), and the segment-wide totals
  // are the policies' sums.
  EXPECT_GT(seen[0].denied.load(), 0u);
  EXPECT_GT(seen[0].admitted.load(), 0u);
  const Stats s = parent.stats();
  EXPECT_EQ(s.admitted, admitted);
  EXPECT_EQ(s.denied, denied);
  EXPECT_LE(s.used, 16u);
}

// Threads of one process each count in a block of their own; a thread that
// exits gives its block back, and the next thread continues from it.
TEST(Counters, ThreadsOfOneProcessCountExactly) {
  ScopedName name("counters-threads");
  Options o;
  o.name = name.str();
  o.capacity = 1024;
  Limiter l = Limiter::create(o);
  const PolicyId id =
      l.add_policy({"t", Algorithm::kGcra, parse_rate("100/day"), 100, OnFull::kDeny});
  std::atomic<std::uint64_t> admitted{0}, denied{0};
  for (int round = 0; round < 3; ++round) {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int n = 0; n < 2000; ++n) {
          const Decision d = l.acquire(id, "key-" + std::to_string(t % 2));
          (d.allowed ? admitted : denied).fetch_add(1);
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  const PolicyCounters c = counters_of(l, id);
  EXPECT_EQ(c.admitted, admitted.load());
  EXPECT_EQ(c.denied, denied.load());
  EXPECT_EQ(c.admitted + c.denied, 3u * 4 * 2000);
  EXPECT_EQ(c.admitted, 200u);  // two keys, burst 100 each
}

// Processes that die without giving their blocks back (SIGKILL, _exit):
// past the 511 blocks, later processes take the dead ones over and keep
// adding to them. Nothing is lost and nothing counted twice.
TEST(Counters, BlocksOfDeadProcessesAreTakenOverWithoutLosingCounts) {
  ScopedName name("counters-takeover");
  Options o;
  o.name = name.str();
  o.capacity = 1024;
  Limiter parent = Limiter::create(o);
  const PolicyId id =
      parent.add_policy({"p", Algorithm::kGcra, parse_rate("1000000/s"), 1000, OnFull::kAllow});
  constexpr int kProcesses = 700;  // more than the 511 blocks a process can own
  constexpr int kEach = 7;
  int failed = 0;
  for (int batch = 0; batch < kProcesses / 10; ++batch) {
    failed += wait_all(fork_workers(10, [&](int) {
      Limiter l = Limiter::open(o);
      for (int n = 0; n < kEach; ++n) l.acquire(id, "k" + std::to_string(n));
      ::_exit(0);  // no destructors: the block stays owned by a dead process
      return 0;
    }));
  }
  ASSERT_EQ(failed, 0);
  const PolicyCounters c = counters_of(parent, id);
  EXPECT_EQ(c.admitted + c.denied, std::uint64_t{kProcesses} * kEach);
}

// Counting processes SIGKILLed at random moments: the totals equal the
// callers' own records up to the decisions in flight when they died. A
// caller records a decision after the library counted it, so a kill in
// between leaves one counted decision unrecorded (at most one per kill); a
// kill between the bucket's CAS and the count leaves a decision neither
// counted nor recorded.
TEST(Counters, TotalsAfterSigkillsEqualTheCallersRecordsUpToTheDecisionsInFlight) {
  ScopedName name("counters-kill");
  Options o;
  o.name = name.str();
  o.capacity = 64;
  o.max_probe = 16;
  Limiter parent = Limiter::create(o);
  const PolicyId id =
      parent.add_policy({"k", Algorithm::kGcra, parse_rate("50/s"), 5, OnFull::kDeny});
  Shared<Tally> rec;
  std::mt19937 rng(12345);
  int kills = 0;
  for (int round = 0; round < 12; ++round) {
    const auto pids = fork_workers(4, [&](int w) {
      Limiter l = Limiter::open(o);
      for (std::uint64_t n = 0;; ++n) {
        const Decision d = l.acquire(id, "w" + std::to_string(w) + "-" + std::to_string(n % 40));
        (d.allowed ? rec->admitted : rec->denied).fetch_add(1, std::memory_order_relaxed);
      }
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 40));
    for (const pid_t p : pids) {
      ::kill(p, SIGKILL);
      ++kills;
    }
    wait_all(pids);
  }
  const PolicyCounters c = counters_of(parent, id);
  const std::uint64_t counted = c.admitted + c.denied;
  const std::uint64_t recorded = rec->admitted.load() + rec->denied.load();
  EXPECT_GT(recorded, 1000u);
  EXPECT_LE(recorded, counted) << "a decision the caller saw was not counted";
  EXPECT_LE(counted, recorded + static_cast<std::uint64_t>(kills))
      << "more counted than the decisions in flight";
  EXPECT_LE(rec->admitted.load(), c.admitted);
  EXPECT_LE(c.admitted, rec->admitted.load() + static_cast<std::uint64_t>(kills));
  EXPECT_LE(rec->denied.load(), c.denied);
  EXPECT_LE(c.denied, rec->denied.load() + static_cast<std::uint64_t>(kills));
}

// scrape -> churn -> scrape: workers churn keys through a small table (and
// reset buckets) while the parent scrapes again and again; no _total ever
// goes down, in counters(), stats() or the Prometheus text.
TEST(Counters, ScrapesNeverSeeATotalDecrease) {
  ScopedName name("counters-scrape");
  const Options o = sixteen_slots(name);
  Limiter parent = Limiter::create(o);
  const std::array<PolicyId, 2> ids = {
      parent.add_policy({"x", Algorithm::kGcra, parse_rate("1000/s"), 3, OnFull::kDeny}),
      parent.add_policy({"y", Algorithm::kSlidingWindow, parse_rate("200/s"), 0, OnFull::kAllow}),
  };
  Shared<std::atomic<std::uint64_t>> stop;
  const auto pids = fork_workers(3, [&](int w) {
    Limiter l = Limiter::open(o);
    for (std::uint64_t n = 0; stop->load(std::memory_order_acquire) == 0; ++n) {
      const std::string key = "w" + std::to_string(w) + "-" + std::to_string(n % 97);
      l.acquire(ids[n % 2], key);
      if (n % 500 == 0) l.reset(ids[n % 2]);
    }
    return 0;
  });
  std::map<std::string, std::uint64_t> last;  // series -> value
  std::uint64_t last_admitted = 0, last_denied = 0;
  for (int scrape = 0; scrape < 150; ++scrape) {
    const Stats s = parent.stats();
    EXPECT_GE(s.admitted, last_admitted);
    EXPECT_GE(s.denied, last_denied);
    last_admitted = s.admitted;
    last_denied = s.denied;
    const std::string text =
        tools::render_metrics(parent.name(), s, tools::bucket_rows(parent.dump()));
    std::size_t pos = 0;
    while ((pos = text.find("_total{", pos)) != std::string::npos) {
      const std::size_t line = text.rfind('\n', pos) + 1;
      const std::size_t end = text.find('\n', pos);
      const std::string series = text.substr(line, text.rfind(' ', end) - line);
      const std::uint64_t v =
          std::stoull(text.substr(text.rfind(' ', end) + 1, end - text.rfind(' ', end) - 1));
      EXPECT_GE(v, last[series]) << series << " decreased";
      last[series] = v;
      pos = end;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  stop->store(1, std::memory_order_release);
  ASSERT_EQ(wait_all(pids), 0);
  EXPECT_GT(last_admitted, 0u);
  EXPECT_GT(last["shmlimit_policy_denied_total{segment=\"" + name.str() + "\",policy=\"x\"}"], 0u);
}

// As an operator would meet it: "a" = 2/h, five acquire_many([("a","x"),("b","x")])
// are 2 admitted and 3 denied on a, everywhere an operator looks.
TEST(Counters, AcquireManyRefusalsAppearInStatMetricsDumpAndWatch) {
  ScopedName name("counters-many");
  Options o;
  o.name = name.str();
  o.capacity = 64;
  Limiter l = Limiter::create(o);
  const PolicyId a = l.add_policy({"a", Algorithm::kGcra, parse_rate("2/h"), 0, OnFull::kDeny});
  const PolicyId b = l.add_policy({"b", Algorithm::kGcra, parse_rate("100/h"), 0, OnFull::kDeny});
  const tools::WatchSnapshot before = tools::watch_snapshot(l, UINT64_MAX);
  const std::array<Request, 2> req = {Request{a, "x", 1}, Request{b, "x", 1}};
  int admitted = 0;
  for (int i = 0; i < 5; ++i) admitted += l.acquire_many(req).allowed ? 1 : 0;
  ASSERT_EQ(admitted, 2);

  const Stats s = l.stats();
  ASSERT_EQ(s.policies.size(), 2u);
  EXPECT_EQ(s.policies[0].policy, "a");
  EXPECT_EQ(s.policies[0].admitted, 2u);
  EXPECT_EQ(s.policies[0].denied, 3u);
  EXPECT_EQ(s.policies[1].admitted, 2u);
  EXPECT_EQ(s.policies[1].denied, 0u);  // b would have admitted: not a refusal of b
  EXPECT_EQ(s.admitted, 4u);
  EXPECT_EQ(s.denied, 3u);

  const std::string metrics = tools::render_metrics(l.name(), s, tools::bucket_rows(l.dump()));
  const std::string seg = "segment=\"" + name.str() + "\"";
  EXPECT_NE(metrics.find("shmlimit_policy_admitted_total{" + seg + ",policy=\"a\"} 2\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("shmlimit_policy_denied_total{" + seg + ",policy=\"a\"} 3\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("shmlimit_policy_denied_total{" + seg + ",policy=\"b\"} 0\n"),
            std::string::npos)
      << metrics;

  bool seen = false;
  for (const BucketView& v : l.dump()) {
    if (v.policy == "a" && v.key == "x") {
      seen = true;
      EXPECT_EQ(v.admitted, 2u);  // one process: the approximate per-key counts are exact here
      EXPECT_EQ(v.denied, 3u);
    }
  }
  EXPECT_TRUE(seen);

  // The ring folds this thread's repeated refusals of a/x (DenialFold): its
  // next denial on another key writes them. Then the ring shows all three.
  ASSERT_FALSE(l.acquire(a, "y", 3).allowed);
  const tools::WatchSnapshot after = tools::watch_snapshot(l, before.denials.next_cursor);
  std::uint64_t ring_x = 0;
  for (const DenialView& d : after.denials.denials) {
    if (d.policy == "a" && d.key == "x") ring_x += 1 + d.repeats;
  }
  EXPECT_EQ(ring_x, 3u);
  const std::string watch = tools::render_watch(l.name(), before, after, false);
  const std::size_t keys = watch.find("recent denied keys:");
  ASSERT_NE(keys, std::string::npos) << watch;
  // A row "a  x  3" among the recent denied keys.
  bool x_row = false;
  std::istringstream rows(watch.substr(keys));
  for (std::string row; std::getline(rows, row);) {
    std::istringstream cells(row);
    std::vector<std::string> c{std::istream_iterator<std::string>(cells), {}};
    x_row = x_row || c == std::vector<std::string>{"a", "x", "3"};
  }
  EXPECT_TRUE(x_row) << watch;
  // a: 6 decisions, 4 denials; b: 2 decisions, 0 denials, over the interval.
  const auto row_of = [&](const std::string& policy) {
    const std::size_t at = watch.find("\n" + policy + " ");
    return at == std::string::npos ? std::string()
                                   : watch.substr(at + 1, watch.find('\n', at + 1) - at - 1);
  };
  const std::string row_a = row_of("a");
  ASSERT_FALSE(row_a.empty()) << watch;
  const double secs = std::chrono::duration<double>(after.taken - before.taken).count();
  EXPECT_NE(row_a.find(fmt::format("{:.1f}", 4 / secs)), std::string::npos) << watch;
  EXPECT_NE(row_a.find(fmt::format("{:.1f}", 6 / secs)), std::string::npos) << watch;
}

// A replacement that changes the algorithm moves the policy to a fresh
// policy-table entry (its buckets start full); the name's totals carry the
// old entry's counts with them, so no _total goes down.
TEST(Counters, ReplacingAPolicysAlgorithmNeverLowersItsTotals) {
  ScopedName name("counters-replace");
  Options o;
  o.name = name.str();
  o.capacity = 64;
  Limiter l = Limiter::create(o);
  const PolicyId old_id =
      l.add_policy({"api", Algorithm::kGcra, parse_rate("3/h"), 3, OnFull::kDeny});
  for (int i = 0; i < 5; ++i) l.acquire(old_id, "k");  // 3 admitted, 2 denied
  const PolicyCounters before = counters_of(l, old_id);
  ASSERT_EQ(before.admitted, 3u);
  ASSERT_EQ(before.denied, 2u);

  const PolicyReplacement r =
      l.replace_policy({"api", Algorithm::kFixedWindow, parse_rate("2/h"), 0, OnFull::kDeny});
  ASSERT_TRUE(r.fresh);
  ASSERT_NE(r.id.index, old_id.index);
  for (int i = 0; i < 3; ++i) l.acquire(r.id, "k");  // 2 admitted, 1 denied under the new entry

  std::size_t rows = 0;
  for (const PolicyCounters& c : l.counters()) {
    if (c.policy != "api") continue;
    ++rows;
    EXPECT_EQ(c.id.index, r.id.index) << "the row names the entry the name resolves to";
    EXPECT_EQ(c.admitted, 5u);
    EXPECT_EQ(c.denied, 3u);
  }
  EXPECT_EQ(rows, 1u) << "one row per policy name";
  EXPECT_EQ(l.stats().admitted, 5u);
}

// The decision clock in the exposition: one info sample without a segment
// label, this process's clock (the stats' own), and a reason holding any
// bytes at all (the library's reasons are printable, this one is not) stays
// inside its label value: one line, escaped, and `stat` keeps it on one line.
TEST(Counters, DecisionClockInfoIsOneSampleWhateverItsReasonHolds) {
  ScopedName name("counters-clock");
  Options o;
  o.name = name.str();
  o.capacity = 64;
  Limiter l = Limiter::create(o);
  Stats s = l.stats();
  EXPECT_EQ(s.decision_clock.clock, decision_clock_info().clock);
  EXPECT_EQ(s.decision_clock.reason, decision_clock_info().reason);
  std::string want = "shmlimit_decision_clock_info{clock=\"" + s.decision_clock.clock + "\"";
  if (!s.decision_clock.reason.empty()) want += ",reason=\"" + s.decision_clock.reason + "\"";
  std::string text = tools::render_metrics(l.name(), s, {});
  EXPECT_NE(text.find("\n" + want + "} 1\n"), std::string::npos) << text;

  s.decision_clock = {"exact", std::string("a\"b\\c\nd} 1\r\x01\xff", 13)};
  text = tools::render_metrics(l.name(), s, {});
  EXPECT_NE(
      text.find(
          "\nshmlimit_decision_clock_info{clock=\"exact\",reason=\"a\\\"b\\\\c\\\\x0ad} 1\\\\x0d"
          "\\\\x01\\\\xff\"} 1\n"),
      std::string::npos)
      << text;
  std::size_t samples = 0, help = 0, type = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# HELP shmlimit_", 0) == 0) {
      ++help;
      continue;
    }
    if (line.rfind("# TYPE shmlimit_", 0) == 0) {
      ++type;
      continue;
    }
    ++samples;
    EXPECT_EQ(line.rfind("shmlimit_", 0), 0u) << line;
    EXPECT_EQ(line.find('\r'), std::string::npos) << line;
    if (line.rfind("shmlimit_decision_clock_info", 0) == 0) continue;
    EXPECT_NE(line.find("{segment=\"" + name.str() + "\""), std::string::npos) << line;
  }
  EXPECT_EQ(text.find("decision_clock_info{segment"), std::string::npos) << text;
  EXPECT_EQ(help, type);
  EXPECT_EQ(samples, 15u) << text;  // 14 of the segment (no policies), the clock's

  const std::string stat = tools::render_stats(l.name(), s, {}, false);
  EXPECT_NE(stat.find("exact (a\"b\\c\\x0ad} 1\\x0d\\x01\\xff)\n"), std::string::npos) << stat;
}

}  // namespace
}  // namespace shmlimit::test
