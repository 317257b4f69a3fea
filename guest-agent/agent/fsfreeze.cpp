#include "fsfreeze.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace vmckpt::agent {

namespace {

// The kernel writes ' ', '\t', '\n' and '\\' in mounts fields as \ooo.
std::string unescapeMountField(std::string_view f) {
  std::string out;
  auto oct = [](char c) { return c >= '0' && c <= '7'; };
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == '\\' && i + 3 < f.size() && oct(f[i + 1]) && oct(f[i + 2]) && oct(f[i + 3])) {
      out.push_back(static_cast<char>((f[i + 1] - '0') * 64 + (f[i + 2] - '0') * 8 + (f[i + 3] - '0')));
      i += 3;
      continue;
    }
    out.push_back(f[i]);
  }
  return out;
}

std::string errnoText(int err) { return std::strerror(err); }

}  // namespace

bool MountEntry::readWrite() const {
  for (const auto& o : options)
    if (o == "rw") return true;
  return false;
}

std::vector<MountEntry> parseMounts(std::string_view text) {
  std::vector<MountEntry> out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    std::vector<std::string_view> fields;
    size_t pos = 0;
    while (pos < line.size()) {
      size_t start = line.find_first_not_of(" \t", pos);
      if (start == std::string_view::npos) break;
      size_t end = line.find_first_of(" \t", start);
      if (end == std::string_view::npos) end = line.size();
      fields.push_back(line.substr(start, end - start));
      pos = end;
    }
    if (fields.size() < 4) continue;
    MountEntry m;
    m.source = unescapeMountField(fields[0]);
    m.target = unescapeMountField(fields[1]);
    m.fstype = unescapeMountField(fields[2]);
    std::string_view opts = fields[3];
    while (!opts.empty()) {
      size_t c = opts.find(',');
      m.options.emplace_back(opts.substr(0, c));
      opts.remove_prefix(c == std::string_view::npos ? opts.size() : c + 1);
    }
    out.push_back(std::move(m));
  }
  return out;
}

bool isFreezeCandidate(const MountEntry& m) {
  return m.source.starts_with("/dev/") && m.readWrite() && !m.target.empty() && m.target[0] == '/';
}

std::expected<std::vector<FreezeTarget>, std::string> freezeTargets(const std::string& mountsPath) {
  std::ifstream f(mountsPath);
  if (!f) return std::unexpected("open " + mountsPath + ": " + errnoText(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  std::vector<FreezeTarget> out;
  std::set<dev_t> seen;
  for (const auto& m : parseMounts(ss.str())) {
    if (!isFreezeCandidate(m)) continue;
    struct stat src{}, mnt{};
    if (::stat(m.source.c_str(), &src) != 0 || !S_ISBLK(src.st_mode)) continue;
    if (::stat(m.target.c_str(), &mnt) != 0) continue;
    if (!seen.insert(mnt.st_dev).second) continue;  // a bind mount of a filesystem we have
    out.push_back({m.target, m.source});
  }
  return out;
}

std::expected<std::unique_ptr<FreezeJob>, std::string> FreezeJob::start(std::vector<FreezeTarget> targets) {
  std::unique_ptr<FreezeJob> job(new FreezeJob());
  job->done_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!job->done_) return std::unexpected("eventfd: " + errnoText(errno));
  try {
    job->thread_ = std::thread(&FreezeJob::run, job.get(), std::move(targets));
  } catch (const std::system_error& e) {
    return std::unexpected(std::string("start the freeze thread: ") + e.what());
  }
  return job;
}

FreezeJob::~FreezeJob() {
  if (thread_.joinable()) thread_.join();
}

void FreezeJob::run(std::vector<FreezeTarget> targets) {
  // Open every mount point before freezing any: a path lookup through a frozen parent
  // filesystem could otherwise wait for a thaw that never comes.
  std::vector<UniqueFd> fds;
  for (const auto& t : targets) {
    fds.emplace_back(::open(t.mountPoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (!fds.back()) outcome_.skipped.push_back(t.mountPoint + " (open: " + errnoText(errno) + ")");
  }
  std::vector<size_t> frozen;
  for (size_t k = targets.size(); k-- > 0;) {
    if (cancel_.load()) break;
    if (!fds[k]) continue;
    setCurrent(targets[k].mountPoint);
    if (::ioctl(fds[k].get(), FIFREEZE, 0) == 0) {
      frozen.push_back(k);
    } else if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EBUSY) {
      outcome_.skipped.push_back(targets[k].mountPoint + " (" + errnoText(errno) + ")");
    } else {
      outcome_.error = "FIFREEZE " + targets[k].mountPoint + ": " + errnoText(errno);
      break;
    }
  }
  setCurrent({});
  outcome_.cancelled = cancel_.load();
  if (!outcome_.error.empty() || outcome_.cancelled) {
    for (auto it = frozen.rbegin(); it != frozen.rend(); ++it) (void)::ioctl(fds[*it].get(), FITHAW, 0);
    frozen.clear();
  }
  for (auto it = frozen.rbegin(); it != frozen.rend(); ++it) outcome_.frozen.push_back(targets[*it].mountPoint);
  finished_.store(true);
  uint64_t one = 1;
  ssize_t n = ::write(done_.get(), &one, sizeof one);
  (void)n;
}

FreezeJob::Outcome FreezeJob::take() {
  if (thread_.joinable()) thread_.join();
  return std::move(outcome_);
}

std::string FreezeJob::current() const {
  std::lock_guard lock(currentMutex_);
  return current_;
}

void FreezeJob::setCurrent(std::string mountPoint) {
  std::lock_guard lock(currentMutex_);
  current_ = std::move(mountPoint);
}

ThawOutcome thawTargets(const std::vector<FreezeTarget>& targets) {
  ThawOutcome out;
  for (const auto& t : targets) {
    UniqueFd fd(::open(t.mountPoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) {
      out.errors.push_back("open " + t.mountPoint + ": " + errnoText(errno));
      continue;
    }
    if (::ioctl(fd.get(), FITHAW, 0) == 0) out.thawed.push_back(t.mountPoint);
    else if (errno != EINVAL && errno != EOPNOTSUPP && errno != ENOTTY)
      out.errors.push_back("FITHAW " + t.mountPoint + ": " + errnoText(errno));
  }
  return out;
}

}  // namespace vmckpt::agent
