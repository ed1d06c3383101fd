// Reservations: reserve, wait and cancel (limiter_impl.hpp; the maths and
// which algorithms queue are in algorithms/reserve.hpp, the guide in
// doc/outbound.md).
//
// Protocol: a reservation on GCRA / the leaky bucket / the token bucket is
// one decision like acquire's (decide.cpp): find or claim the key's slot,
// then one Table::update CAS that moves the state from TAT to the new TAT
// (token bucket: from missing to missing + cost, plus what a full bucket
// would lose at the turn's refill: a debt past burst). The CAS
// is relaxed, as every bucket write that publishes nothing but the word
// itself (table.hpp): the turn a reservation hands out is a function of the
// word it replaced, and CAS order on one word is total, so two reservations
// can never get the same turn. Cancel is a second Table::update on the same
// slot, guarded by the version read at reservation time (a slot reclaimed
// for another key since is left alone) and by the state still being the
// word the reservation stored.
//
// Crash safety: nothing is held while the caller sleeps; the turn is only a
// time in the word. A process killed before its turn leaves the bucket
// exactly as if it had acted at its turn: the others lose that turn (cost *
// T ns of the schedule; on a token bucket, cost tokens of the refills),
// never more, and nobody waits for the dead one.
#include <cerrno>
#include <ctime>
#include <utility>

#include "limiter/limiter_impl.hpp"

namespace shmlimit {

using detail::u64;

namespace {

// Sleeps until `mono_ns` on CLOCK_MONOTONIC (absolute), through signals.
void sleep_until_mono(std::int64_t mono_ns) noexcept {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(mono_ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(mono_ns % 1'000'000'000);
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// Sleeps until segment time `at` (CLOCK_MONOTONIC_RAW, which no sleep
// can name): for what is left on it, measured on CLOCK_MONOTONIC, again
// until it has passed (the two run at rates that differ while NTP slews).
// `at` and `epoch` as Limiter::Impl keeps them.
void sleep_until_segment(std::int64_t epoch, std::int64_t at) noexcept {
  const auto left = [&] { return at - (detail::segment_clock_ns() - epoch); };
  for (std::int64_t l = left(); l > 0; l = left()) sleep_until_mono(detail::monotonic_ns() + l);
}

std::int32_t own_pid() noexcept {
  return static_cast<std::int32_t>(detail::token_pid(detail::self_token()));
}

// Reservation::act_at_: the reservation's time plus its delay, saturated.
Nanos act_time(std::int64_t now, std::int64_t delay) noexcept {
  return delay >= detail::kClockHorizonNs ? Nanos::max() : Nanos(now + delay);
}

}  // namespace

Reservation Limiter::Impl::reserve(std::uint32_t policy, std::string_view key, u64 cost,
                                   std::int64_t max_wait_ns, std::int64_t now,
                                   bool live_clock) noexcept {
  now = std::max<std::int64_t>(now, 0);
  Reservation out;
  const auto plain = [&](const Decision& d) -> Reservation& {
    out.decision_ = d;
    out.delay_ = d.allowed ? Nanos(0) : d.retry_after;
    out.act_at_ = act_time(now, out.delay_.count());
    return out;
  };
  // The policy as apply() reads it: the cached snapshot (a valid,
  // unretired entry) when the key length and the clock horizon allow,
  // else the full precheck.
  std::uint32_t resolved_policy = policy;
  PolicySnapshot checked;
  const PolicySnapshot* hot = cached_policy(policy);
  if (hot == nullptr || !hot->valid || key.size() > table.key_capacity() ||
      now > detail::kClockHorizonNs - hot->margin) {
    if (auto early = precheck(resolved_policy, key, now, &checked)) {
      return std::move(plain(*early));
    }
    hot = &checked;
  }
  const PolicySnapshot& p = *hot;
  const detail::ReserveMode mode = detail::reserve_mode(p.algo.algorithm);
  if (mode == detail::ReserveMode::kNever) return std::move(plain(needs_lease(p)));
  if (mode == detail::ReserveMode::kRetry || seg->read_only()) {
    // Never queued: an acquire now (a peek on a read-only handle).
    return std::move(plain(apply(policy, key, cost, now, Op::kAcquire, nullptr, live_clock)));
  }
  const detail::GcraParams g{p.algo.emission_ns, p.algo.burst, p.reciprocal};
  const detail::PackedKey pk(seed, resolved_policy, key);
  // The find-or-claim and the one CAS, around one reservation step on a
  // state (algorithms/reserve.hpp); instantiated once per kind of queue, so
  // each step inlines into its own loop.
  const auto run = [&](const auto& step) -> Reservation {
    detail::SlotRef ref;
    for (;;) {
      if (!table.find(pk, &ref)) {
        // Absent = full bucket; as in decide(): a later clock reading than
        // the reclaimer's, so the new bucket never starts in its past.
        if (live_clock) now = std::max(now, this->now_exact());
        const u64 fresh_state = p.fresh_state(now);
        const detail::ReserveOutcome fresh = step(fresh_state);
        if (!fresh.store) {
          out.decision_ = fresh.decision;
          out.delay_ = Nanos(fresh.delay_ns);
          out.act_at_ = act_time(now, fresh.delay_ns);
          return std::move(out);
        }
        if (auto failed = claim(p, pk, now, fresh_state, &ref)) return std::move(plain(*failed));
      }
      const u64 version = detail::Word::version(ref.word);
      u64 w = ref.word;
      detail::ReserveOutcome o;
      // The reservation's one write (Table::update, relaxed: see the
      // protocol above), guarded by the word's version.
      const detail::UpdateResult r = table.update(ref.index, version, &w, [&](u64 state) noexcept {
        o = step(state);
        return o.store ? detail::SlotStep::store(o.new_state) : detail::SlotStep::leave();
      });
      if (r == detail::UpdateResult::kReclaimed) continue;  // the slot went to another key: again
      detail::SlotHead& h = table.head(ref.index);
      out.decision_ = o.decision;
      out.delay_ = Nanos(o.delay_ns);  // Nanos::max() for a cost that never fits
      out.act_at_ = act_time(now, o.delay_ns);
      if (r == detail::UpdateResult::kStored) {
        detail::approx_add(h.admitted);  // per key, approximate (table.hpp)
        out.impl_ = this;
        out.policy_ = resolved_policy;
        out.slot_ = ref.index;
        out.version_ = version;
        out.reserved_ = o.new_state;
        out.span_ = o.span;  // what cancel gives back (ReserveOutcome::span)
        out.pid_ = own_pid();
      } else if (!o.decision.allowed) {
        detail::approx_add(h.denied);
      }
      return std::move(out);
    }
  };
  if (p.algo.algorithm == Algorithm::kTokenBucket) {
    return run([&](u64 state) noexcept {
      return detail::reserve_tb(p.algo, state, now, cost, max_wait_ns);
    });
  }
  return run(
      [&](u64 state) noexcept { return detail::reserve_tat(state, now, cost, max_wait_ns, g); });
}

bool Limiter::Impl::reserve_cancel(const Reservation& res) noexcept {
  const std::int64_t now = this->now();
  // The entry's parameters as they are now: a retired entry's buckets read
  // as absent (nothing to give back); a replacement that kept the buckets
  // kept the algorithm (algo_state_compatible).
  PolicySnapshot p;
  if (!load_policy(res.policy_, &p) || !p.valid || p.retired) return false;
  const bool tb = p.algo.algorithm == Algorithm::kTokenBucket;
  // Relaxed: the word alone is read and written (no other memory is
  // published through it); a stale reading only makes the CAS in update()
  // fail once and step again on the fresh word.
  u64 w = table.head(res.slot_).word.load(std::memory_order_relaxed);
  const detail::UpdateResult r = table.update(res.slot_, res.version_, &w, [&](u64 state) noexcept {
    const auto next =
        tb ? detail::cancel_tb(p.algo, state, now, res.reserved_, res.span_, res.act_at_.count())
           : detail::cancel_tat(state, now, res.reserved_, res.span_, res.act_at_.count());
    return next ? detail::SlotStep::store(*next) : detail::SlotStep::leave();
  });
  // kUnchanged: something charged the bucket since, or the turn has come.
  // kReclaimed: the slot holds another key now (our bucket had refilled
  // completely, so there was nothing left to give back).
  return r == detail::UpdateResult::kStored;
}

// ---- the public API -----------------------------------------------------------

Reservation Limiter::reserve(PolicyId policy, std::string_view key, std::uint64_t cost,
                             Nanos max_wait) noexcept {
  Impl& m = *impl_;
  const std::int64_t now = m.now();
  Reservation r = m.reserve(policy.index, key, cost, max_wait.count(), now, true);
  m.counted(policy.index, key, cost, now, r.decision_);
  return r;
}

Reservation Limiter::reserve_at(PolicyId policy, std::string_view key, std::uint64_t cost,
                                Nanos max_wait, Nanos now) noexcept {
  Impl& m = *impl_;
  Reservation r = m.reserve(policy.index, key, cost, max_wait.count(), now.count(), false);
  m.counted(policy.index, key, cost, now.count(), r.decision_);
  return r;
}

Decision Limiter::wait(PolicyId policy, std::string_view key, std::uint64_t cost,
                       std::chrono::steady_clock::time_point deadline) noexcept {
  Impl& m = *impl_;
  // steady_clock is CLOCK_MONOTONIC (libstdc++ and libc++ on Linux): the
  // deadline and the pauses are measured on it, the turns on segment time.
  const std::int64_t deadline_mono =
      std::chrono::duration_cast<Nanos>(deadline.time_since_epoch()).count();
  for (;;) {
    const std::int64_t now = m.now();
    // Both sides are CLOCK_MONOTONIC readings (>= 0): the difference cannot
    // overflow, whatever the deadline (time_point::min() or max() included).
    const std::int64_t now_mono = detail::monotonic_ns();
    const std::int64_t max_wait = deadline_mono > now_mono ? deadline_mono - now_mono : 0;
    Reservation r = m.reserve(policy.index, key, cost, max_wait, now, true);
    m.counted(policy.index, key, cost, now, r.decision_);
    if (r.ok()) {
      if (r.delay_ > Nanos(0)) sleep_until_segment(m.epoch, r.act_at_.count());
      return r.decision_;
    }
    // Refused. A queued algorithm refuses a turn past the deadline
    // (retry_after > max_wait), or (token bucket) a queue that fills its
    // state's field, until the refill that makes room; a never-queued one
    // reports its next opening. Those two are asked again when the
    // deadline allows.
    const Decision& d = r.decision_;
    if (d.reason != Reason::kOk || max_wait <= 0 || d.retry_after.count() > max_wait) return d;
    // At least 100 us between attempts: never a busy loop, whatever the
    // algorithm reports.
    const std::int64_t pause = std::max<std::int64_t>(d.retry_after.count(), 100'000);
    sleep_until_mono(std::min(now_mono + pause, deadline_mono));
  }
}

Decision Limiter::wait_for(PolicyId policy, std::string_view key, std::uint64_t cost,
                           Nanos max_wait) noexcept {
  const auto now = std::chrono::steady_clock::now();
  // A deadline past the clock's range (Nanos::max(): no limit) saturates.
  const auto room = std::chrono::steady_clock::time_point::max() - now;
  const auto wait = max_wait.count() < 0 ? Nanos(0) : max_wait;
  return this->wait(
      policy, key, cost,
      wait >= room ? std::chrono::steady_clock::time_point::max()
                   : now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(wait));
}

// ---- Reservation ----------------------------------------------------------------

Reservation::Reservation(Reservation&& other) noexcept
    : impl_(std::exchange(other.impl_, nullptr)),
      policy_(other.policy_),
      slot_(other.slot_),
      version_(other.version_),
      reserved_(other.reserved_),
      span_(other.span_),
      pid_(other.pid_),
      delay_(other.delay_),
      act_at_(other.act_at_),
      decision_(other.decision_) {}

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    impl_ = std::exchange(other.impl_, nullptr);
    policy_ = other.policy_;
    slot_ = other.slot_;
    version_ = other.version_;
    reserved_ = other.reserved_;
    span_ = other.span_;
    pid_ = other.pid_;
    delay_ = other.delay_;
    act_at_ = other.act_at_;
    decision_ = other.decision_;
  }
  return *this;
}

bool Reservation::cancel() noexcept {
  Limiter::Impl* m = std::exchange(impl_, nullptr);
  if (m == nullptr || own_pid() != pid_) return false;
  return m->reserve_cancel(*this);
}

}  // namespace shmlimit
