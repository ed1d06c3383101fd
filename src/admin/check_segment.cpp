// Field-by-field audit of a segment's raw bytes (check_segment.hpp), and
// Limiter::check_segment(), which maps a named segment read-only for it.
#include "admin/check_segment.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <cerrno>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "admin/slot_audit.hpp"
#include "algorithms/algorithms.hpp"
#include "algorithms/gcra.hpp"
#include "segment/layout.hpp"
#include "segment/policy_kind.hpp"
#include "segment/process.hpp"
#include "segment/segment.hpp"
#include "shmlimit/inspect.hpp"
#include "table/denials.hpp"
#include "table/table.hpp"

namespace bip = boost::interprocess;

namespace shmlimit::detail {
namespace {

class Problems {
 public:
  explicit Problems(CheckReport* r) : r_(r) {}
  void add(std::string line) {
    if (r_->problems.size() < kMaxProblems) {
      r_->problems.push_back(std::move(line));
    } else {
      ++more_;
    }
  }
  ~Problems() {
    if (more_ > 0)
      r_->problems.push_back("... and " + std::to_string(more_) + " more problems not listed");
  }
  Problems(const Problems&) = delete;
  Problems& operator=(const Problems&) = delete;

 private:
  CheckReport* r_;
  std::uint64_t more_ = 0;
};

bool valid_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-';
}

// The policy table: returns how many entries are in use (entries fill in order).
std::uint32_t inspect_policies(const std::byte* base, const Geometry& g, Problems& out) {
  const auto* table = reinterpret_cast<const PolicyEntry*>(base + g.policy_offset);
  std::uint32_t registered = 0;
  bool gap = false;
  for (std::uint32_t i = 0; i < kMaxPolicies; ++i) {
    const PolicyEntry& e = table[i];
    const std::string where = "policy entry " + std::to_string(i) + ": ";
    // Relaxed: a read-only audit of a quiet segment; a concurrent writer can
    // only make the report inconsistent, and every value is range-checked.
    const u64 state = e.state.load(std::memory_order_relaxed);
    if (state == 0) {
      gap = true;
      continue;
    }
    if (gap)
      out.add(where + "in use after an unused entry (entries fill in order)");
    else
      registered = i + 1;
    char name[kPolicyNameBytes];
    for (std::uint32_t w = 0; w < kPolicyNameBytes / 8; ++w) {
      const u64 v = e.name[w].load(std::memory_order_relaxed);
      std::memcpy(name + 8 * w, &v, 8);
    }
    std::size_t len = 0;
    while (len < kPolicyNameBytes && name[len] != '\0') ++len;
    bool name_ok = len > 0 && len < kPolicyNameBytes;
    for (std::size_t k = 0; k < len && name_ok; ++k) name_ok = valid_name_char(name[k]);
    for (std::size_t k = len; k < kPolicyNameBytes && name_ok; ++k) name_ok = name[k] == '\0';
    const std::string label =
        name_ok ? where.substr(0, where.size() - 2) + " (\"" + std::string(name, len) + "\"): "
                : where;
    if (!name_ok)
      out.add(where + "name is not 1..31 characters of A-Z a-z 0-9 _ . : - followed by NULs");
    if (!PolicyState::well_formed(state)) {
      out.add(label + "state " + hex(state) +
              " is not a policy state (no change count, or forward/reserved bits set)");
    }
    if (PolicyState::retired(state)) {
      // Retired by a replacement: its name moved to a later entry.
      const std::uint32_t to = PolicyState::forward(state);
      const u64 to_state = table[to].state.load(std::memory_order_relaxed);
      if (to == i || to_state == 0) {
        out.add(label + "retired, forwarding to entry " + std::to_string(to) + ", which is " +
                (to == i ? "itself" : "unused"));
      }
      continue;
    }
    const PolicyParams& p = e.params[PolicyState::active(state)];
    const u64 kind = p.kind.load(std::memory_order_relaxed);
    const PolicyKind k = PolicyKind::unpack(kind);
    AlgoParams a{k.algorithm,
                 p.count.load(std::memory_order_relaxed),
                 p.period_ns.load(std::memory_order_relaxed),
                 p.burst.load(std::memory_order_relaxed),
                 p.emission_ns.load(std::memory_order_relaxed),
                 k.wait};
    const char* why = nullptr;
    if (const char* bad = PolicyKind::problem(kind)) {
      out.add(label + "kind " + hex(kind) + ": " + bad);
    } else if (!algo_params_valid(a, &why)) {
      out.add(label + "impossible parameters (" + std::string(to_string(a.algorithm)) +
              "): " + why);
    } else if (a.emission_ns != gcra_emission(a.count, a.period_ns)) {
      out.add(label + "emission interval " + std::to_string(a.emission_ns) +
              " ns is not period / count rounded up (" +
              std::to_string(gcra_emission(a.count, a.period_ns)) + ")");
    }
  }
  return registered;
}

void inspect_slots(const std::byte* base, std::size_t size, const Geometry& g, u64 seed,
                   std::uint32_t registered, Problems& out, CheckReport* report) {
  // Slots that fit the bytes we have (a truncated file has fewer).
  const u64 fit = size > g.slot_offset ? (size - g.slot_offset) / g.slot_bytes : 0;
  const auto scanned = static_cast<std::uint32_t>(std::min<u64>(fit, g.capacity));
  if (scanned < g.capacity) {
    out.add("slots " + std::to_string(scanned) + " to " + std::to_string(g.capacity - 1) +
            " lie beyond the end of the object (not checked)");
  }
  // The auditor Limiter::check uses (slot_audit.hpp), without repair. The
  // cast only lets a Table view the bytes: the auditor loads, never
  // stores, and reads no slot at or past `scanned`.
  const Table table(const_cast<std::byte*>(base) + g.slot_offset, g);
  SlotAuditor audit(table, g, seed, registered,
                    [&](std::string line) { out.add(std::move(line)); });
  audit.set_readable(scanned);
  audit.audit_all();
  report->live += audit.live();
  report->in_progress += audit.in_progress();
}

void inspect_denials(const std::byte* base, std::size_t size, const Geometry& g,
                     std::uint32_t registered, Problems& out) {
  if (g.denials_offset + kDenialRingBytes > size) {
    out.add("denials ring: lies beyond the end of the object (not checked)");
    return;
  }
  const auto* head = reinterpret_cast<const DenialRingHead*>(base + g.denials_offset);
  const auto* entries =
      reinterpret_cast<const DenialEntry*>(base + g.denials_offset + sizeof(DenialRingHead));
  const u64 next = head->next.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < kDenialRingEntries; ++i) {
    const u64 seq = entries[i].seq.load(std::memory_order_relaxed);
    if (seq == 0) continue;
    // An unfinished entry keeps its ticket mod 2^41 only: compare it
    // against `next` while the count still fits in those bits.
    const u64 ticket = denial_seq_ticket(seq);
    const std::string where = "denials ring entry " + std::to_string(i) + ": ";
    if ((ticket & (kDenialRingEntries - 1)) != i) {
      out.add(where + "holds ticket " + std::to_string(ticket) + ", which belongs to entry " +
              std::to_string(ticket & (kDenialRingEntries - 1)));
    } else if (ticket >= next && (!denial_seq_is_writing(seq) || next <= kDenialSeqTicketMask)) {
      out.add(where + "holds ticket " + std::to_string(ticket) + ", beyond the " +
              std::to_string(next) + " handed out");
    } else if (!denial_seq_is_writing(seq) &&
               (entries[i].info.load(std::memory_order_relaxed) & 0xFF) >= registered) {
      out.add(where + "names unregistered policy " +
              std::to_string(entries[i].info.load(std::memory_order_relaxed) & 0xFF));
    }
  }
}

}  // namespace

void inspect_segment_bytes(const std::byte* base, std::size_t size, CheckReport* report) {
  Problems out(report);
  if (size < sizeof(Header)) {
    out.add("header: the object is " + std::to_string(size) + " bytes, smaller than a header (" +
            std::to_string(sizeof(Header)) + "): truncated, or not a shmlimit segment");
    return;
  }
  const auto& h = *reinterpret_cast<const Header*>(base);
  // Relaxed: see inspect_policies.
  const u64 magic = h.magic.load(std::memory_order_relaxed);
  const bool magic_ok = magic == kMagic;
  if (!magic_ok)
    out.add("header: bad magic " + hex(magic) + " (expected " + hex(kMagic) + ", \"SHMLIMIT\")");
  const u32 init = h.init_state.load(std::memory_order_relaxed);
  if (init != kInitReady) {
    out.add("header: init_state is " + std::to_string(init) + ", not " +
            std::to_string(kInitReady) +
            " (ready): its creator died while initialising it, or the header was overwritten");
  }
  const bool version_ok = h.layout_version == kLayoutVersion;
  if (!version_ok) {
    out.add("header: layout version " + std::to_string(h.layout_version) +
            ", this build reads version " + std::to_string(kLayoutVersion));
  }
  const bool fingerprint_ok = h.fingerprint == layout_fingerprint();
  if (!fingerprint_ok) {
    out.add("header: layout fingerprint " + hex(h.fingerprint) + " differs from this build's " +
            hex(layout_fingerprint()));
  }
  if (h.header_bytes != sizeof(Header)) {
    out.add("header: header_bytes is " + std::to_string(h.header_bytes) + ", not " +
            std::to_string(sizeof(Header)));
  }
  bool geometry_ok = true;
  if (h.capacity < kMinCapacity || h.capacity > kMaxCapacity ||
      (h.capacity & (h.capacity - 1)) != 0) {
    out.add("header: capacity " + std::to_string(h.capacity) + " is not a power of two from " +
            std::to_string(kMinCapacity) + " to " + std::to_string(kMaxCapacity));
    geometry_ok = false;
  }
  if (h.slot_bytes != 64 && h.slot_bytes != 128 && h.slot_bytes != 256) {
    out.add("header: slot_bytes " + std::to_string(h.slot_bytes) + " is not 64, 128 or 256");
    geometry_ok = false;
  }
  if (h.max_probe < 1 || h.max_probe > 1024 || (geometry_ok && h.max_probe > h.capacity)) {
    out.add("header: max_probe " + std::to_string(h.max_probe) +
            " is out of range (1 .. min(1024, capacity))");
    geometry_ok = false;
  }
  if (h.log_entries > kMaxLogEntries) {
    out.add("header: log_entries " + std::to_string(h.log_entries) + " is above " +
            std::to_string(kMaxLogEntries));
    geometry_ok = false;
  }
  if (h.max_policies != kMaxPolicies) {
    out.add("header: max_policies " + std::to_string(h.max_policies) + ", this build has " +
            std::to_string(kMaxPolicies));
  }
  if (const std::string why = Segment::epoch_problem(h.epoch_raw_ns); !why.empty())
    out.add("header: " + why);
  if (h.max_processes != kMaxProcesses) {
    out.add("header: max_processes " + std::to_string(h.max_processes) + ", this build has " +
            std::to_string(kMaxProcesses));
  }
  Geometry g;
  if (geometry_ok) {
    g = Geometry::compute(h.capacity, h.slot_bytes, h.max_probe, h.log_entries);
    const std::tuple<const char*, u64, u64> offsets[] = {
        {"policy_offset", h.policy_offset, g.policy_offset},
        {"process_offset", h.process_offset, g.process_offset},
        {"slot_offset", h.slot_offset, g.slot_offset},
        {"lease_offset", h.lease_offset, g.lease_offset},
        {"log_offset", h.log_offset, g.log_offset},
        {"total_bytes", h.total_bytes, g.total_bytes},
    };
    for (const auto& [field, have, want] : offsets) {
      if (have != want) {
        out.add("header: " + std::string(field) + " is " + std::to_string(have) + ", expected " +
                std::to_string(want) + " for capacity " + std::to_string(h.capacity) +
                " and slot size " + std::to_string(h.slot_bytes));
      }
    }
    if (size < g.total_bytes) {
      out.add("the object is " + std::to_string(size) + " bytes but its header describes " +
              std::to_string(g.total_bytes) + " (truncated)");
    } else if (size > g.total_bytes) {
      out.add("the object is " + std::to_string(size) + " bytes but its header describes " +
              std::to_string(g.total_bytes) + " (resized)");
    }
  }
  // The table is read with this build's layout: only when the header says
  // it is this layout and its geometry is usable.
  if (!magic_ok || !version_ok || !fingerprint_ok || !geometry_ok) {
    out.add(
        "policies and slots not checked: the header does not describe a layout this build can "
        "read");
    return;
  }
  if (g.process_offset > size) {
    out.add("policies and slots not checked: the object ends inside the policy table");
    return;
  }
  const std::uint32_t registered = inspect_policies(base, g, out);
  inspect_slots(base, size, g, h.hash_seed, registered, out, report);
  inspect_denials(base, size, g, registered, out);
}

}  // namespace shmlimit::detail

namespace shmlimit {

CheckReport Limiter::check_segment(std::string_view name_view, bool allow_other_users) {
  const std::string name(name_view);
  detail::Segment::check_name(name);
  // Opened as Segment::open does: never blocks on a FIFO, never follows a
  // symlink, refuses anything but a regular file, trusts the owner only as
  // allow_other_users says (kNotFound / kIncompatible / kPermission).
  const detail::SegmentFile file =
      detail::SegmentFile::open(name, /*read_only=*/true, allow_other_users);
  const struct stat st = file.status();
  CheckReport report;
  if (st.st_size <= 0) {
    detail::inspect_segment_bytes(nullptr, 0, &report);
    return report;
  }
  // Maps exactly the bytes the file holds: inspect_segment_bytes reports a
  // header whose total_bytes the file does not hold, and reads only inside.
  bip::mapped_region region;
  try {
    region = bip::mapped_region(file, bip::read_only, 0, static_cast<std::size_t>(st.st_size));
  } catch (const bip::interprocess_exception& e) {
    throw Error(ErrorCode::kSystem,
                "cannot map shared-memory segment " + name + " read-only: " + e.what());
  }
  detail::inspect_segment_bytes(static_cast<const std::byte*>(region.get_address()),
                                region.get_size(), &report);
  return report;
}

}  // namespace shmlimit
