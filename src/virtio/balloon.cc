// virtio-balloon (virtio 1.2 §5.5): configuration space, inflate/deflate processing and the
// statistics queue protocol, with the Firecracker-style API.
#include "virtio/balloon.h"

#include <spdlog/spdlog.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "base/json_fields.h"

namespace tern::virtio {
namespace {

constexpr uint64_t kPageShift = 12;  // balloon PFNs are 4 KiB frames (VIRTIO_BALLOON_PFN_SHIFT)
constexpr uint64_t kPageSize = 1ull << kPageShift;
constexpr size_t kConfigSize = 8;  // le32 num_pages, le32 actual
constexpr uint64_t kActualOffset = 4;
constexpr size_t kStatSize = 10;    // struct virtio_balloon_stat: le16 tag, le64 val (packed)
constexpr size_t kPfnChunk = 1024;  // PFNs read, sorted and coalesced at a time

uint64_t LoadLe(const uint8_t* bytes, size_t size) {
  uint64_t value = 0;
  for (size_t i = 0; i < size; ++i) value |= uint64_t{bytes[i]} << (8 * i);
  return value;
}

void StoreLe32(uint8_t* bytes, uint32_t value) {
  for (size_t i = 0; i < 4; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
}

}  // namespace

Result<std::unique_ptr<Balloon>> Balloon::Create(const BalloonConfig& config,
                                                 uint64_t guest_memory_mib) {
  if (config.amount_mib > guest_memory_mib || config.amount_mib > UINT32_MAX / kPagesPerMib) {
    return Error("virtio-balloon: target of " + std::to_string(config.amount_mib) +
                     " MiB is larger than guest memory (" + std::to_string(guest_memory_mib) +
                     " MiB)",
                 EINVAL);
  }
  int fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) return Error::FromErrno("virtio-balloon: timerfd_create");
  return std::unique_ptr<Balloon>(new Balloon(config, guest_memory_mib, Fd(fd)));
}

Balloon::Balloon(const BalloonConfig& config, uint64_t guest_memory_mib, Fd timer)
    : guest_memory_mib_(guest_memory_mib),
      deflate_on_oom_(config.deflate_on_oom),
      stats_enabled_(config.stats_polling_interval_s != 0),
      timer_(std::move(timer)),
      num_pages_(config.amount_mib * kPagesPerMib),
      stats_interval_s_(config.stats_polling_interval_s) {}

uint64_t Balloon::device_features() const {
  return kCommonFeatures | (stats_enabled_ ? kBalloonFStatsVq : 0) |
         (deflate_on_oom_ ? kBalloonFDeflateOnOom : 0);
}

std::vector<uint16_t> Balloon::queue_max_sizes() const {
  std::vector<uint16_t> sizes = {kQueueSize, kQueueSize};
  if (stats_enabled_) sizes.push_back(kQueueSize);
  return sizes;
}

// --- Configuration space (§5.5.4) ------------------------------------------------------------

void Balloon::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  std::array<uint8_t, kConfigSize> config;
  {
    std::lock_guard lock(mutex_);
    StoreLe32(config.data(), num_pages_);
    StoreLe32(config.data() + kActualOffset, actual_);
  }
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset < kConfigSize && i < kConfigSize - offset ? config[offset + i] : 0;
  }
}

void Balloon::WriteConfig(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset >= kConfigSize || i >= kConfigSize - offset) break;
    uint64_t at = offset + i;
    if (at < kActualOffset) continue;  // num_pages belongs to the device
    unsigned shift = 8 * (at - kActualOffset);
    actual_ = (actual_ & ~(0xffu << shift)) | (uint32_t{data[i]} << shift);
  }
}

// --- Activation ------------------------------------------------------------------------------

Status Balloon::Activate(const ActivateContext& context) {
  if (active_) return Error("virtio-balloon: already active", EBUSY);
  TERN_RETURN_IF_ERROR(CheckActivateContext("virtio-balloon", context, queue_max_sizes().size()));
  Status status;
  context.loop->RunSync([&] {
    context_ = context;
    status = Start();
    if (!status.ok()) {
      Stop();
      std::lock_guard lock(mutex_);
      interrupt_ = nullptr;
    }
  });
  active_ = status.ok();
  if (!active_) context_ = ActivateContext();
  return status;
}

Status Balloon::Start() {
  std::vector<Queue>& queues = *context_.queues;
  {
    std::lock_guard lock(mutex_);
    interrupt_ = context_.interrupt;
  }
  auto watch = [&](uint16_t index, void (Balloon::*handler)()) -> Status {
    const EventFd& event = context_.queue_events[index];
    TERN_RETURN_IF_ERROR(context_.loop->Add(event.fd(), [this, handler] { (this->*handler)(); }));
    // Buffers the driver posted before DRIVER_OK (allowed, §3.1.1) got no notification.
    return event.Write();
  };
  if (queues[kInflateQueue].ready())
    TERN_RETURN_IF_ERROR(watch(kInflateQueue, &Balloon::OnInflate));
  if (queues[kDeflateQueue].ready())
    TERN_RETURN_IF_ERROR(watch(kDeflateQueue, &Balloon::OnDeflate));
  stats_queue_ = stats_enabled_ && (context_.driver_features & kBalloonFStatsVq) != 0 &&
                 queues[kStatsQueue].ready();
  if (!stats_queue_) return Ok();
  TERN_RETURN_IF_ERROR(watch(kStatsQueue, &Balloon::OnStatsQueue));
  TERN_RETURN_IF_ERROR(context_.loop->Add(timer_.get(), [this] { OnStatsTimer(); }));
  std::lock_guard lock(mutex_);
  polling_ = true;
  return ArmTimerLocked(uint64_t{stats_interval_s_} * 1'000'000'000, stats_interval_s_);
}

void Balloon::Stop() {
  // ENOENT for descriptors not watched (a disabled queue, no statistics) is expected.
  for (const EventFd& event : context_.queue_events) (void)context_.loop->Remove(event.fd());
  (void)context_.loop->Remove(timer_.get());
  std::lock_guard lock(mutex_);
  polling_ = false;
  (void)ArmTimerLocked(0, 0);
}

void Balloon::Reset() {
  if (!active_) return;
  context_.loop->RunSync([this] {
    Stop();
    held_stats_.reset();
    stats_queue_ = false;
    warned_extra_stats_ = false;
    {
      std::lock_guard lock(mutex_);
      interrupt_ = nullptr;
      actual_ = 0;  // the driver's balloon went with it
    }
    context_ = ActivateContext();
  });
  active_ = false;
}

nlohmann::json Balloon::SaveState() const {
  std::lock_guard lock(mutex_);
  return {{"num_pages", num_pages_},
          {"actual", actual_},
          {"stats_polling_interval_s", stats_interval_s_},
          {"held_stats", held_stats_ ? nlohmann::json(*held_stats_) : nlohmann::json(nullptr)}};
}

Status Balloon::RestoreState(const nlohmann::json& state) {
  TERN_ASSIGN_OR_RETURN(
      Fields fields, Fields::Of(state, "virtio-balloon",
                                {"num_pages", "actual", "stats_polling_interval_s", "held_stats"}));
  if (active_) return Error("virtio-balloon: restore into an active device", EINVAL);
  uint32_t max_pages =
      static_cast<uint32_t>(std::min<uint64_t>(guest_memory_mib_ * kPagesPerMib, UINT32_MAX));
  std::lock_guard lock(mutex_);
  TERN_RETURN_IF_ERROR(fields.Read("num_pages", num_pages_, true, 0, max_pages));
  TERN_RETURN_IF_ERROR(fields.Read("actual", actual_, true, 0, UINT32_MAX));
  TERN_RETURN_IF_ERROR(fields.Read("stats_polling_interval_s", stats_interval_s_, true));
  uint16_t held = 0;
  held_stats_.reset();
  if (fields.Has("held_stats")) {
    TERN_RETURN_IF_ERROR(fields.Read("held_stats", held, true));
    if (held >= kQueueSize) return Error("virtio-balloon: bad held_stats", EINVAL);
    held_stats_ = held;
  }
  return Ok();
}

void Balloon::Fail(const Error& error) {
  FailDevice("virtio-balloon", error, *context_.interrupt);
  Stop();
}

Status Balloon::ArmTimerLocked(uint64_t first_ns, uint16_t interval_s) {
  itimerspec spec = {};
  spec.it_value.tv_sec = static_cast<time_t>(first_ns / 1'000'000'000);
  spec.it_value.tv_nsec = static_cast<long>(first_ns % 1'000'000'000);
  spec.it_interval.tv_sec = interval_s;
  // Disarming also clears expirations not yet read (a stale poll after a reset).
  if (::timerfd_settime(timer_.get(), 0, &spec, nullptr) < 0) {
    return Error::FromErrno("virtio-balloon: timerfd_settime");
  }
  return Ok();
}

// --- Inflate and deflate (§5.5.6.1, §5.5.6.2) ------------------------------------------------

void Balloon::OnInflate() {
  (void)context_.queue_events[kInflateQueue].Read();
  Status status =
      Serve(kInflateQueue, [this](const DescriptorChain& chain) { return Inflate(chain); });
  if (!status.ok()) Fail(status.error());
}

void Balloon::OnDeflate() {
  (void)context_.queue_events[kDeflateQueue].Read();
  Status status =
      Serve(kDeflateQueue, [this](const DescriptorChain& chain) { return Deflate(chain); });
  if (!status.ok()) Fail(status.error());
}

Status Balloon::Serve(
    uint16_t index, const std::function<Result<uint64_t>(const DescriptorChain& chain)>& process) {
  Queue& queue = (*context_.queues)[index];
  const GuestMemory& memory = *context_.memory;
  bool used = false;
  // Every round costs at least one unit: a driver that keeps the available ring moving (or
  // makes EnableNotification() and Pop() disagree) cannot make this loop run on.
  for (uint64_t work = 0;; ++work) {
    if (work >= kMaxWorkPerDispatch) {
      TERN_RETURN_IF_ERROR(context_.queue_events[index].Write());  // go on later
      break;
    }
    TERN_ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, queue.Pop(memory));
    if (!chain.has_value()) {
      TERN_ASSIGN_OR_RETURN(bool more, queue.EnableNotification(memory));
      if (!more) break;
      continue;
    }
    TERN_ASSIGN_OR_RETURN(uint64_t pfns, process(*chain));
    TERN_RETURN_IF_ERROR(queue.AddUsed(memory, chain->head, 0));
    used = true;
    work += pfns;
  }
  return used ? NotifyIfNeeded(queue, index, memory, *context_.interrupt) : Ok();
}

Result<uint64_t> Balloon::Inflate(const DescriptorChain& chain) {
  TERN_ASSIGN_OR_RETURN(std::vector<iovec> iovecs, ReadableIovecs(*context_.memory, chain));
  const uint64_t entries = chain.readable_bytes / sizeof(uint32_t);
  const uint64_t taken = std::min<uint64_t>(entries, kMaxPfnsPerBuffer);
  uint64_t invalid = entries - taken;
  // Copied out of guest memory before they are checked: the guest may change them meanwhile.
  std::array<uint32_t, kPfnChunk> pfns;
  std::array<uint8_t, kPfnChunk * sizeof(uint32_t)> bytes;
  for (uint64_t done = 0; done < taken;) {
    size_t n = std::min<uint64_t>(kPfnChunk, taken - done);
    if (!CopyFromIovecs(iovecs, done * sizeof(uint32_t),
                        std::span(bytes.data(), n * sizeof(uint32_t)))) {
      return Error("virtio-balloon: inflate buffer shorter than its length", EFAULT);
    }
    for (size_t i = 0; i < n; ++i) {
      pfns[i] = static_cast<uint32_t>(LoadLe(&bytes[i * sizeof(uint32_t)], sizeof(uint32_t)));
    }
    invalid += DiscardPfns(std::span(pfns.data(), n));
    done += n;
  }
  std::lock_guard lock(mutex_);
  counters_.inflated_pfns += entries - invalid;
  counters_.invalid_pfns += invalid;
  return taken;
}

uint64_t Balloon::DiscardPfns(std::span<uint32_t> pfns) {
  const GuestMemory& memory = *context_.memory;
  // Keep the frames that are guest RAM (a PFN is at most 2^32 - 1: no overflow below).
  size_t valid = 0;
  for (uint32_t pfn : pfns) {
    if (memory.Slice(uint64_t{pfn} << kPageShift, kPageSize).ok()) pfns[valid++] = pfn;
  }
  const uint64_t invalid = pfns.size() - valid;
  std::span<uint32_t> frames = pfns.first(valid);
  std::sort(frames.begin(), frames.end());
  frames = frames.first(std::unique(frames.begin(), frames.end()) - frames.begin());
  // One Discard() per run of contiguous frames.
  for (size_t start = 0; start < frames.size();) {
    size_t end = start + 1;
    while (end < frames.size() && frames[end] == frames[end - 1] + 1) ++end;
    uint64_t gpa = uint64_t{frames[start]} << kPageShift;
    uint64_t length = uint64_t{end - start} << kPageShift;
    if (Status status = memory.Discard(gpa, length); !status.ok()) {
      spdlog::warn("virtio-balloon: pages at {:#x}+{:#x} not given back: {}", gpa, length,
                   status.error().ToString());
    }
    start = end;
  }
  return invalid;
}

Result<uint64_t> Balloon::Deflate(const DescriptorChain& chain) {
  // Without VIRTIO_BALLOON_F_MUST_TELL_HOST there is nothing to do: a discarded page is
  // faulted back in, zeroed, when the guest touches it.
  std::lock_guard lock(mutex_);
  counters_.deflated_pfns += chain.readable_bytes / sizeof(uint32_t);
  return 0;  // no per-PFN work
}

// --- Statistics (§5.5.6.3) -------------------------------------------------------------------

void Balloon::OnStatsQueue() {
  (void)context_.queue_events[kStatsQueue].Read();
  if (Status status = ReceiveStats(); !status.ok()) Fail(status.error());
}

void Balloon::OnStatsTimer() {
  uint64_t expirations;
  (void)!::read(timer_.get(), &expirations, sizeof(expirations));  // EAGAIN: nothing to clear
  if (Status status = RequestStats(); !status.ok()) Fail(status.error());
}

Status Balloon::ReceiveStats() {
  Queue& queue = (*context_.queues)[kStatsQueue];
  const GuestMemory& memory = *context_.memory;
  bool used = false;
  bool more = true;
  // As ProcessAvailable(): each round pops a buffer or re-enables notifications.
  for (uint32_t round = 0; round <= 2u * queue.size(); ++round) {
    TERN_ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, queue.Pop(memory));
    if (!chain.has_value()) {
      TERN_ASSIGN_OR_RETURN(more, queue.EnableNotification(memory));
      if (!more) break;
      continue;
    }
    if (held_stats_.has_value()) {
      // The driver should post one buffer at a time; give the older one back.
      if (!warned_extra_stats_) {
        spdlog::warn("virtio-balloon: driver posted a second statistics buffer");
        warned_extra_stats_ = true;
      }
      TERN_RETURN_IF_ERROR(queue.AddUsed(memory, *held_stats_, 0));
      held_stats_.reset();
      used = true;
    }
    TERN_RETURN_IF_ERROR(ReadStats(*chain));
    held_stats_ = chain->head;
  }
  if (more) TERN_RETURN_IF_ERROR(context_.queue_events[kStatsQueue].Write());
  if (!used) return Ok();
  return NotifyIfNeeded(queue, kStatsQueue, memory, *context_.interrupt);
}

Status Balloon::ReadStats(const DescriptorChain& chain) {
  TERN_ASSIGN_OR_RETURN(std::vector<iovec> iovecs, ReadableIovecs(*context_.memory, chain));
  uint64_t entries = std::min<uint64_t>(chain.readable_bytes / kStatSize, kMaxStatsPerBuffer);
  std::vector<uint8_t> bytes(entries * kStatSize);
  if (!CopyFromIovecs(iovecs, 0, bytes)) {
    return Error("virtio-balloon: statistics buffer shorter than its length", EFAULT);
  }
  std::lock_guard lock(mutex_);
  for (uint64_t i = 0; i < entries; ++i) {
    const uint8_t* entry = &bytes[i * kStatSize];
    uint64_t tag = LoadLe(entry, 2);
    if (tag < kBalloonStatCount) stats_[tag] = LoadLe(entry + 2, 8);
  }
  ++counters_.stats_reports;
  return Ok();
}

Status Balloon::RequestStats() {
  if (!held_stats_.has_value()) return Ok();  // the driver has not (re)posted its buffer yet
  Queue& queue = (*context_.queues)[kStatsQueue];
  TERN_RETURN_IF_ERROR(queue.AddUsed(*context_.memory, *held_stats_, 0));
  held_stats_.reset();
  return NotifyIfNeeded(queue, kStatsQueue, *context_.memory, *context_.interrupt);
}

// --- API -------------------------------------------------------------------------------------

Status Balloon::SetTargetMib(uint32_t amount_mib) {
  if (amount_mib > guest_memory_mib_ || amount_mib > UINT32_MAX / kPagesPerMib) {
    return Error("virtio-balloon: target of " + std::to_string(amount_mib) +
                     " MiB is larger than guest memory (" + std::to_string(guest_memory_mib_) +
                     " MiB)",
                 EINVAL);
  }
  // Under the lock, so that Reset() cannot end the interrupt's lifetime meanwhile.
  std::lock_guard lock(mutex_);
  num_pages_ = amount_mib * kPagesPerMib;
  return interrupt_ != nullptr ? interrupt_->NotifyConfig() : Ok();
}

BalloonConfig Balloon::Config() const {
  std::lock_guard lock(mutex_);
  return {.amount_mib = num_pages_ / kPagesPerMib,
          .deflate_on_oom = deflate_on_oom_,
          .stats_polling_interval_s = stats_interval_s_};
}

Status Balloon::SetStatsInterval(uint16_t seconds) {
  std::lock_guard lock(mutex_);
  if (seconds == stats_interval_s_) return Ok();
  if (!stats_enabled_ || seconds == 0) {
    return Error(
        "virtio-balloon: statistics cannot be turned on or off after the device is created",
        EINVAL);
  }
  stats_interval_s_ = seconds;
  // Poll at once (1 ns: 0 would disarm), then at the new interval.
  return polling_ ? ArmTimerLocked(1, seconds) : Ok();
}

Result<BalloonStatistics> Balloon::Statistics() const {
  if (!stats_enabled_) return Error("virtio-balloon: statistics are not enabled", EINVAL);
  std::lock_guard lock(mutex_);
  BalloonStatistics stats;
  stats.target_pages = num_pages_;
  stats.actual_pages = actual_;
  stats.target_mib = num_pages_ / kPagesPerMib;
  stats.actual_mib = actual_ / kPagesPerMib;
  stats.swap_in = stats_[kBalloonStatSwapIn];
  stats.swap_out = stats_[kBalloonStatSwapOut];
  stats.major_faults = stats_[kBalloonStatMajorFaults];
  stats.minor_faults = stats_[kBalloonStatMinorFaults];
  stats.free_memory = stats_[kBalloonStatFreeMemory];
  stats.total_memory = stats_[kBalloonStatTotalMemory];
  stats.available_memory = stats_[kBalloonStatAvailMemory];
  stats.disk_caches = stats_[kBalloonStatDiskCaches];
  stats.hugetlb_allocations = stats_[kBalloonStatHugetlbAlloc];
  stats.hugetlb_failures = stats_[kBalloonStatHugetlbFail];
  return stats;
}

BalloonCounters Balloon::Counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

nlohmann::json Balloon::Metrics() const {
  BalloonCounters c = Counters();
  return {{"inflated_pfns", c.inflated_pfns},
          {"invalid_pfns", c.invalid_pfns},
          {"deflated_pfns", c.deflated_pfns},
          {"stats_reports", c.stats_reports}};
}

}  // namespace tern::virtio
