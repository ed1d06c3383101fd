// `shmlimit ls`: the shmlimit segments of this host. Every file of
// /dev/shm whose name is a valid segment name, that is a regular file and
// starts with the segment magic ("SHMLIMIT") is listed, with its owner,
// mode and size from fstat, and its capacity, live buckets and policies
// from a read-only open; any other file is skipped without being mapped.
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cli.hpp"
#include "format.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace cli {

namespace {

/// Where shm_open() keeps the named segments (Linux).
constexpr const char* kDir = "/dev/shm";

/// The segment magic, "SHMLIMIT": the first 8 bytes of a limiter segment.
constexpr char kMagic[8] = {'S', 'H', 'M', 'L', 'I', 'M', 'I', 'T'};

struct Entry {
  std::string name;  // "/NAME"
  uid_t uid = 0;
  mode_t mode = 0;
  std::uint64_t size = 0;
  bool opened = false;
  std::string error;  // when not opened
  std::uint32_t capacity = 0;
  std::uint64_t used = 0;
  std::vector<std::string> policies;
};

bool valid_name(const std::string& file) {
  return !file.empty() && file.size() <= 200 && file != "." && file != ".." &&
         file.find_first_not_of(
             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") ==
             std::string::npos;
}

/// fstat and the magic, without following a symlink or blocking on a FIFO.
std::optional<Entry> probe(const std::string& dir, const std::string& file) {
  const std::string path = dir + "/" + file;
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return std::nullopt;  // vanished, a symlink, or not readable: not ours to show
  struct stat st {};
  char head[sizeof kMagic] = {};
  const bool ours = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                    st.st_size >= static_cast<off_t>(sizeof head) &&
                    ::pread(fd, head, sizeof head, 0) == static_cast<ssize_t>(sizeof head) &&
                    std::memcmp(head, kMagic, sizeof head) == 0;
  ::close(fd);
  if (!ours) return std::nullopt;
  Entry e;
  e.name = "/" + file;
  e.uid = st.st_uid;
  e.mode = st.st_mode & 07777;
  e.size = static_cast<std::uint64_t>(st.st_size);
  return e;
}

void fill(Entry& e) {
  try {
    shmlimit::Options o = open_options(e.name, true);
    // A segment whose creator is still initialising it (or died doing so)
    // is reported at once, not waited for: ls lists, it does not wait.
    o.open_timeout = std::chrono::milliseconds(100);
    const shmlimit::Limiter limiter = shmlimit::Limiter::open(o);
    const shmlimit::Stats s = limiter.stats();
    e.capacity = s.capacity;
    e.used = s.used;
    for (const shmlimit::PolicyView& p : limiter.policies()) e.policies.push_back(p.spec.name);
    e.opened = true;
  } catch (const std::exception& ex) {
    e.error = ex.what();
  }
}

std::string owner_name(uid_t uid) {
  struct passwd pw {};
  struct passwd* found = nullptr;
  std::vector<char> buf(4096);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr)
    return found->pw_name;
  return std::to_string(uid);
}

}  // namespace

int run_ls(const LsArgs& a) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(kDir), ::closedir);
  if (!dir) {
    throw Error(ErrorCode::kNotFound,
                fmt::format("cannot list {}: {}", kDir, std::strerror(errno)));
  }
  std::vector<Entry> entries;
  while (const dirent* d = ::readdir(dir.get())) {
    const std::string file = d->d_name;
    if (!valid_name(file)) continue;
    if (std::optional<Entry> e = probe(kDir, file)) entries.push_back(std::move(*e));
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& x, const Entry& y) { return x.name < y.name; });
  for (Entry& e : entries) fill(e);

  if (a.json) {
    tools::Json j = tools::Json::array();
    for (const Entry& e : entries) {
      tools::Json o;
      o["segment"] = e.name;
      o["owner"] = owner_name(e.uid);
      o["uid"] = e.uid;
      o["mode"] = fmt::format("{:04o}", e.mode);
      o["size_bytes"] = e.size;
      o["capacity"] = e.opened ? tools::Json(e.capacity) : tools::Json(nullptr);
      o["used"] = e.opened ? tools::Json(e.used) : tools::Json(nullptr);
      tools::Json names = tools::Json::array();
      for (const std::string& p : e.policies) names.push_back(tools::escape_bytes(p, true));
      o["policies"] = std::move(names);
      o["error"] =
          e.opened ? tools::Json(nullptr) : tools::Json(tools::escape_bytes(e.error, true));
      j.push_back(std::move(o));
    }
    tools::write_stdout(tools::to_text(j, 2) + "\n");
    return kExitOk;
  }
  if (entries.empty()) {
    tools::write_stdout(fmt::format("no shmlimit segments in {}\n", kDir));
    return kExitOk;
  }
  tools::Table t;
  t.headers = {"SEGMENT", "OWNER", "MODE", "SIZE", "CAPACITY", "USED", "POLICIES"};
  t.right = {false, false, false, true, true, true, false};
  std::string notes;
  for (const Entry& e : entries) {
    std::string policies;
    for (const std::string& p : e.policies) {
      if (!policies.empty()) policies += ",";
      policies += tools::escape_bytes(p);
    }
    if (e.opened && policies.empty()) policies = "-";
    if (!e.opened) {
      policies = "(not opened, see below)";
      notes += fmt::format("{}: {}\n", e.name, tools::escape_bytes(e.error, true));
    }
    t.rows.push_back({e.name, owner_name(e.uid), fmt::format("{:04o}", e.mode),
                      tools::format_bytes(e.size), e.opened ? std::to_string(e.capacity) : "-",
                      e.opened ? std::to_string(e.used) : "-", std::move(policies)});
  }
  tools::write_stdout(tools::render_table(t, tools::use_color()) + notes);
  return kExitOk;
}

}  // namespace cli
