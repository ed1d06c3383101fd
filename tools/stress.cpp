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
// lock-free atomics (static_asserts in stress.hpp), as the segment is.
//
// Files: stress.cpp (command line, main), stress.hpp (what they share),
// stress_policies.cpp (policy plans, algorithm models), stress_worker.cpp
// (the worker process), stress_run.cpp (the parent), stress_verify.cpp
// (the verifier and its report).
#include "stress.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <vector>

using namespace stress;

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
