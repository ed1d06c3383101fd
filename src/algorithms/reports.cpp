// The algorithms whose state is not decided from the word alone
// (concurrency: lease.hpp; sliding log: sliding_log.hpp): what
// algo_decide and algo_refund report from the word, never stored.
#include "algorithms/algorithms_impl.hpp"

namespace shmlimit::detail::algo {

// ===========================================================================
// Concurrency (lease.hpp): the word's payload is the in-flight count (bits
// 0-23) and a pending-operation descriptor (bits 24-53). Only leases change
// it; here it is only reported. Full: nothing in flight and nothing pending.
AlgoOutcome conc_report(const AlgoParams& p, u64 state) {
  const u64 in_flight = state & kMaxConcurrency;
  return outcome(make_decision(in_flight < p.count, p.count,
                               in_flight < p.count ? p.count - in_flight : 0, Nanos(0), Nanos(0)));
}

// Sliding log (sliding_log.hpp): the word's payload is when the log is
// empty (the largest t + D of its admissions). From the word alone only
// "empty" is known: reported as a peek, never stored.
AlgoOutcome log_report(const AlgoParams& p, u64 empty_at, i64 now) {
  const bool empty = empty_at <= static_cast<u64>(now);
  return outcome(
      make_decision(true, p.count, empty ? p.count : 0, Nanos(0),
                    Nanos(empty ? 0 : static_cast<i64>(empty_at - static_cast<u64>(now)))));
}

}  // namespace shmlimit::detail::algo
