// virtio-balloon, the traditional memory balloon (virtio 1.2 §5.5), with Firecracker's
// semantics and API: the host sets a target size; the guest driver inflates (hands page frames
// to the device, which gives their host memory back with madvise(MADV_DONTNEED)) or deflates
// towards it; with VIRTIO_BALLOON_F_STATS_VQ the guest reports memory statistics, which the
// device polls at a configurable interval.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "base/fd.h"
#include "virtio/virtio_device.h"

namespace tern::virtio {

inline constexpr uint32_t kDeviceTypeBalloon = 5;  // virtio 1.2 §5.5.1

// Feature bits (virtio 1.2 §5.5.3). MUST_TELL_HOST is never offered: deflated pages need no
// host action (they come back on touch), so the driver may reuse them before telling.
inline constexpr uint64_t kBalloonFMustTellHost = 1ull << 0;  // VIRTIO_BALLOON_F_MUST_TELL_HOST
inline constexpr uint64_t kBalloonFStatsVq = 1ull << 1;       // VIRTIO_BALLOON_F_STATS_VQ
inline constexpr uint64_t kBalloonFDeflateOnOom = 1ull << 2;  // VIRTIO_BALLOON_F_DEFLATE_ON_OOM

// Statistic tags (struct virtio_balloon_stat, virtio 1.2 §5.5.6.3). Values are bytes unless
// said otherwise.
inline constexpr uint16_t kBalloonStatSwapIn = 0;        // VIRTIO_BALLOON_S_SWAP_IN
inline constexpr uint16_t kBalloonStatSwapOut = 1;       // VIRTIO_BALLOON_S_SWAP_OUT
inline constexpr uint16_t kBalloonStatMajorFaults = 2;   // VIRTIO_BALLOON_S_MAJFLT (a count)
inline constexpr uint16_t kBalloonStatMinorFaults = 3;   // VIRTIO_BALLOON_S_MINFLT (a count)
inline constexpr uint16_t kBalloonStatFreeMemory = 4;    // VIRTIO_BALLOON_S_MEMFREE
inline constexpr uint16_t kBalloonStatTotalMemory = 5;   // VIRTIO_BALLOON_S_MEMTOT
inline constexpr uint16_t kBalloonStatAvailMemory = 6;   // VIRTIO_BALLOON_S_AVAIL
inline constexpr uint16_t kBalloonStatDiskCaches = 7;    // VIRTIO_BALLOON_S_CACHES
inline constexpr uint16_t kBalloonStatHugetlbAlloc = 8;  // VIRTIO_BALLOON_S_HTLB_PGALLOC (count)
inline constexpr uint16_t kBalloonStatHugetlbFail = 9;   // VIRTIO_BALLOON_S_HTLB_PGFAIL (count)
inline constexpr uint16_t kBalloonStatCount = 10;        // tags kept; others are ignored

// The device's configuration, as Firecracker's PUT/GET /balloon body.
struct BalloonConfig {
  uint32_t amount_mib = 0;      // target balloon size, MiB (0..guest RAM)
  bool deflate_on_oom = false;  // offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM
  // Seconds between statistics polls; 0 disables statistics (no VIRTIO_BALLOON_F_STATS_VQ, no
  // statsq). Whether statistics are enabled is fixed when the device is created.
  uint16_t stats_polling_interval_s = 0;
};

// Firecracker's GET /balloon/statistics body. Sizes are in 4 KiB pages or MiB; the optional
// fields are the latest value the guest reported for each tag (kBalloonStat*), and stay unset
// for a tag the guest never reported. A tag missing from a later report keeps its old value.
struct BalloonStatistics {
  uint32_t target_pages = 0;  // num_pages: the host's target
  uint32_t actual_pages = 0;  // actual: what the guest says the balloon holds
  uint32_t target_mib = 0;
  uint32_t actual_mib = 0;
  std::optional<uint64_t> swap_in;              // bytes
  std::optional<uint64_t> swap_out;             // bytes
  std::optional<uint64_t> major_faults;         // count
  std::optional<uint64_t> minor_faults;         // count
  std::optional<uint64_t> free_memory;          // bytes
  std::optional<uint64_t> total_memory;         // bytes
  std::optional<uint64_t> available_memory;     // bytes
  std::optional<uint64_t> disk_caches;          // bytes
  std::optional<uint64_t> hugetlb_allocations;  // count
  std::optional<uint64_t> hugetlb_failures;     // count
};

// What the device did since it was created (for metrics and tests).
struct BalloonCounters {
  uint64_t inflated_pfns = 0;  // valid PFNs received on inflateq (their pages were discarded)
  uint64_t invalid_pfns = 0;  // PFNs on inflateq skipped: not guest RAM, or past the per-buffer cap
  uint64_t deflated_pfns = 0;  // PFNs received on deflateq
  uint64_t stats_reports = 0;  // statistics buffers the guest posted
};

// Queues (§5.5.2): 0 inflateq, 1 deflateq, and 2 statsq when statistics are enabled (the
// queue count is fixed at creation: statsq is declared iff STATS_VQ is offered; it is used only
// if the driver negotiates STATS_VQ and enables it). Configuration space (§5.5.4):
// le32 num_pages (the target, read-only for the driver) at 0, le32 actual (written by the
// driver) at 4; the rest reads as zero.
//
// Inflate (§5.5.6.1): each buffer's device-readable bytes are le32 page frame numbers (4 KiB
// frames; a trailing partial entry is ignored; at most kMaxPfnsPerBuffer per buffer, the rest
// skipped). A PFN whose page is not guest RAM (past the end, in the MMIO gap) is skipped and
// counted; the others are sorted, coalesced into runs of contiguous frames and each run
// discarded with GuestMemory::Discard(). A Discard() failure is logged; the buffer completes
// anyway. Deflate (§5.5.6.2): nothing to do (a discarded page comes back zeroed when the guest
// touches it); the buffer is completed. Buffers complete with used length 0.
//
// Statistics (§5.5.6.3): the device holds the last buffer the guest posted on statsq (after
// taking its values: 10-byte entries of le16 tag, le64 value; a trailing partial entry and
// unknown tags are ignored; at most kMaxStatsPerBuffer entries are read). Every
// stats_polling_interval_s seconds (a timerfd on the device's event loop) it returns the held
// buffer (used length 0), which asks the driver for fresh values; the driver refills it and
// posts it again. A driver that posts a second buffer while one is held gets the first back.
//
// A malformed queue stops the device until the driver resets it (FailDevice(): logged, and
// DEVICE_NEEDS_RESET). Reset() sets actual to 0 (the driver's balloon is gone) and keeps the
// target and the last statistics.
//
// Thread safety: as VirtioDevice for the VirtioDevice methods; queue processing runs on the
// event loop thread. The API methods (SetTargetMib, Config, SetStatsInterval, Statistics,
// Counters, Metrics) may be called from any thread at any time.
class Balloon : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint16_t kInflateQueue = 0;
  static constexpr uint16_t kDeflateQueue = 1;
  static constexpr uint16_t kStatsQueue = 2;
  static constexpr uint32_t kPagesPerMib = 256;  // 4 KiB pages
  // Bounds on the work of one buffer (Linux posts at most 256 PFNs and about 16 statistics per
  // buffer).
  static constexpr uint32_t kMaxPfnsPerBuffer = 4096;
  static constexpr uint32_t kMaxStatsPerBuffer = 256;
  // Work units (a buffer: 1, plus 1 per inflated PFN) one event-loop dispatch does on inflateq
  // or deflateq before it yields to other descriptors and goes on later, so that a guest
  // cannot hold the event loop.
  static constexpr uint32_t kMaxWorkPerDispatch = 16384;

  // `config.amount_mib` must be at most `guest_memory_mib` (guest RAM size in MiB, the bound of
  // every later target). Errors: EINVAL for a target above guest RAM; timerfd_create's error.
  static Result<std::unique_ptr<Balloon>> Create(const BalloonConfig& config,
                                                 uint64_t guest_memory_mib);
  Balloon(const Balloon&) = delete;
  Balloon& operator=(const Balloon&) = delete;
  // Resets an active device: destroy it before the objects its ActivateContext points to.
  ~Balloon() override { Reset(); }

  uint32_t device_type() const override { return kDeviceTypeBalloon; }
  // kCommonFeatures, STATS_VQ if statistics are enabled, DEFLATE_ON_OOM if configured.
  uint64_t device_features() const override;
  // {kQueueSize x2}, or x3 with statistics enabled.
  std::vector<uint16_t> queue_max_sizes() const override;
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  // Only the bytes of `actual` (offsets 4..7) are writable; other writes are ignored.
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override;
  // Errors: EBUSY if active; EINVAL for a context without queue_max_sizes().size() queues;
  // the event loop's Add() and timerfd_settime errors.
  Status Activate(const ActivateContext& context) override;
  void Reset() override;
  // The target (num_pages), the driver's actual, the polling interval and the statistics
  // buffer the device holds.
  nlohmann::json SaveState() const override;
  Status RestoreState(const nlohmann::json& state) override;
  // Counters() as JSON, with the same names.
  nlohmann::json Metrics() const override;

  // --- API (Firecracker's /balloon endpoints); thread-safe ---

  // Sets the target to `amount_mib` MiB (num_pages = amount_mib * 256) and, while the device
  // is active, sends a configuration change notification (§5.5.6: the driver then inflates or
  // deflates towards it). Before activation the driver reads the target when it starts.
  // Errors: EINVAL if `amount_mib` is above guest RAM; the notification's error (the target
  // is set anyway).
  Status SetTargetMib(uint32_t amount_mib);
  // The current configuration (amount_mib from the current target).
  BalloonConfig Config() const;
  // Sets the statistics polling interval to `seconds`. When it changes while the device polls,
  // a poll happens at once and then every `seconds` s. Errors (nothing changes): EINVAL when
  // turning statistics on (device created with interval 0) or off (`seconds` 0): the feature
  // and queue set are fixed at creation.
  Status SetStatsInterval(uint16_t seconds);
  // The target and actual sizes and the latest guest statistics. Errors: EINVAL if statistics
  // are not enabled (created with stats_polling_interval_s 0).
  Result<BalloonStatistics> Statistics() const;
  BalloonCounters Counters() const;

 private:
  Balloon(const BalloonConfig& config, uint64_t guest_memory_mib, Fd timer);

  // Loop thread (Activate()/Reset() run there through EventLoop::RunSync()).
  Status Start();
  void Stop();  // stops watching queues and the timer
  void Fail(const Error& error);
  void OnInflate();
  void OnDeflate();
  void OnStatsQueue();
  void OnStatsTimer();
  // Serves queue `index`: pops each available buffer, passes it to `process`, which returns
  // the PFNs it handled, and completes it (used length 0), within kMaxWorkPerDispatch (then it
  // signals the queue event to go on later); notifies the driver. Errors: the queue's.
  Status Serve(uint16_t index,
               const std::function<Result<uint64_t>(const DescriptorChain& chain)>& process);
  Result<uint64_t> Inflate(const DescriptorChain& chain);
  Result<uint64_t> Deflate(const DescriptorChain& chain);
  // Discards the pages of `pfns` (host order) that are guest RAM; returns how many were not.
  uint64_t DiscardPfns(std::span<uint32_t> pfns);
  Status ReceiveStats();
  Status ReadStats(const DescriptorChain& chain);
  Status RequestStats();  // returns the held buffer
  // Arms the statistics timer: first expiry after `first_ns`, then every `interval_s` s; both
  // 0 disarms it. Needs mutex_.
  Status ArmTimerLocked(uint64_t first_ns, uint16_t interval_s);

  const uint64_t guest_memory_mib_;
  const bool deflate_on_oom_;
  const bool stats_enabled_;  // created with a non-zero polling interval
  const Fd timer_;            // timerfd for the statistics polls

  // Loop thread only (and Activate()/Reset() through RunSync()).
  ActivateContext context_;
  bool active_ = false;                 // also: Activate()/Reset() (serialized by the transport)
  bool stats_queue_ = false;            // STATS_VQ negotiated and statsq enabled
  std::optional<uint16_t> held_stats_;  // head of the statistics buffer the device holds
  bool warned_extra_stats_ = false;     // logged a driver posting two statistics buffers

  mutable std::mutex mutex_;  // guards what follows
  uint32_t num_pages_;
  uint32_t actual_ = 0;
  uint16_t stats_interval_s_;
  VirtioInterrupt* interrupt_ = nullptr;  // set while active: SetTargetMib() notifies
  bool polling_ = false;                  // the timer is watched by the loop
  std::array<std::optional<uint64_t>, kBalloonStatCount> stats_;
  BalloonCounters counters_;
};

}  // namespace tern::virtio
