// The virtio-pci modern transport (virtio 1.2 §4.1): capabilities, common configuration
// registers, device status machine, notifications and MSI-X interrupts.
#include "virtio/pci_transport.h"

#include <spdlog/spdlog.h>

#include <bit>
#include <cstring>

#include "base/json_fields.h"

namespace tern::virtio {
namespace {

// virtio_pci_cap.cfg_type values (virtio 1.2 §4.1.4).
constexpr uint8_t kCapCommonCfg = 1;
constexpr uint8_t kCapNotifyCfg = 2;
constexpr uint8_t kCapIsrCfg = 3;
constexpr uint8_t kCapDeviceCfg = 4;
constexpr uint8_t kCapPciCfg = 5;

// struct virtio_pci_common_cfg field offsets (virtio 1.2 §4.1.4.3).
constexpr uint64_t kDeviceFeatureSelect = 0x00;
constexpr uint64_t kDeviceFeature = 0x04;
constexpr uint64_t kDriverFeatureSelect = 0x08;
constexpr uint64_t kDriverFeature = 0x0c;
constexpr uint64_t kConfigMsixVector = 0x10;
constexpr uint64_t kNumQueues = 0x12;
constexpr uint64_t kDeviceStatus = 0x14;
constexpr uint64_t kConfigGeneration = 0x15;
constexpr uint64_t kQueueSelect = 0x16;
constexpr uint64_t kQueueSize = 0x18;
constexpr uint64_t kQueueMsixVector = 0x1a;
constexpr uint64_t kQueueEnable = 0x1c;
constexpr uint64_t kQueueNotifyOff = 0x1e;
constexpr uint64_t kQueueDesc = 0x20;
constexpr uint64_t kQueueDriver = 0x28;
constexpr uint64_t kQueueDevice = 0x30;

// Offsets inside struct virtio_pci_cfg_cap from its ID byte (virtio 1.2 §4.1.4.8).
constexpr uint16_t kPciCfgBar = 4;
constexpr uint16_t kPciCfgOffset = 8;
constexpr uint16_t kPciCfgLength = 12;
constexpr uint16_t kPciCfgData = 16;

constexpr uint8_t kIsrQueue = 1;
constexpr uint8_t kIsrConfig = 2;

// PCI class code for a device type (PCI Code and ID Assignment spec), as QEMU reports them.
uint32_t ClassCode(uint32_t device_type) {
  switch (device_type) {
    case kDeviceTypeNet:
      return 0x020000;  // network controller, Ethernet
    case kDeviceTypeBlock:
      return 0x010000;  // mass storage, SCSI
    case kDeviceTypeConsole:
      return 0x078000;  // simple communication controller, other
    default:
      return 0x00ff00;  // unclassified
  }
}

// A virtio_pci_cap body (after cap_vndr and cap_next), virtio 1.2 §4.1.4, plus `extra` bytes.
std::vector<uint8_t> CapabilityBody(uint8_t cfg_type, uint32_t offset, uint32_t length,
                                    size_t extra) {
  std::vector<uint8_t> body(14 + extra, 0);
  body[0] = static_cast<uint8_t>(16 + extra);  // cap_len
  body[1] = cfg_type;
  body[2] = 0;  // bar
  std::memcpy(&body[6], &offset, 4);
  std::memcpy(&body[10], &length, 4);
  return body;
}

}  // namespace

uint16_t VirtioPciDevice::VectorCount(const VirtioDevice& device) {
  return static_cast<uint16_t>(device.queue_max_sizes().size() + 1);
}

VirtioPciDevice::VirtioPciDevice(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory,
                                 EventLoop& loop, IoEventRegistrar registrar)
    : device_(std::move(device)),
      memory_(memory),
      loop_(loop),
      registrar_(std::move(registrar)),
      config_(pci::PciIdentity{.vendor_id = 0x1af4,
                               .device_id = static_cast<uint16_t>(0x1040 + device_->device_type()),
                               .subsystem_vendor_id = 0x1af4,
                               .subsystem_id = 0x1100,
                               .revision_id = 1,
                               .class_code = ClassCode(device_->device_type())}) {}

VirtioPciDevice::~VirtioPciDevice() { Shutdown(); }

Result<std::shared_ptr<VirtioPciDevice>> VirtioPciDevice::Create(
    std::shared_ptr<VirtioDevice> device, const GuestMemory& memory, EventLoop& loop,
    std::shared_ptr<pci::MsiDelivery> msi, IoEventRegistrar registrar) {
  std::vector<uint16_t> sizes = device->queue_max_sizes();
  if (sizes.empty() || sizes.size() > kMaxQueues) {
    return Error("virtio device type " + std::to_string(device->device_type()) + " has " +
                     std::to_string(sizes.size()) + " queues, outside 1.." +
                     std::to_string(kMaxQueues),
                 EINVAL);
  }
  for (uint16_t size : sizes) {
    if (size == 0 || size > Queue::kMaxSize || !std::has_single_bit(size)) {
      return Error("virtio queue size " + std::to_string(size) + " is not a power of two", EINVAL);
    }
  }
  std::shared_ptr<VirtioPciDevice> pci(
      new VirtioPciDevice(std::move(device), memory, loop, std::move(registrar)));
  TERN_RETURN_IF_ERROR(pci->Init(std::move(msi)));
  return pci;
}

Status VirtioPciDevice::Init(std::shared_ptr<pci::MsiDelivery> msi) {
  std::vector<uint16_t> sizes = device_->queue_max_sizes();
  for (uint16_t size : sizes) {
    queues_.emplace_back(size);
    TERN_ASSIGN_OR_RETURN(EventFd event, EventFd::Create());
    queue_events_.push_back(std::move(event));
  }
  queue_vectors_ = std::make_unique<std::atomic<uint16_t>[]>(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) queue_vectors_[i] = kNoVector;

  TERN_RETURN_IF_ERROR(
      config_.AddBar(pci::BarRequest{.index = 0, .size = kBarSize, .is_64bit = true}));
  TERN_RETURN_IF_ERROR(AddVirtioCapabilities());
  pci::MsixLayout layout{.num_vectors = VectorCount(*device_),
                         .bar = 0,
                         .table_offset = static_cast<uint32_t>(kMsixTableOffset),
                         .pba_offset = static_cast<uint32_t>(kMsixPbaOffset)};
  TERN_ASSIGN_OR_RETURN(msix_, pci::Msix::Create(layout, std::move(msi)));
  TERN_ASSIGN_OR_RETURN(msix_capability_, msix_->AddCapability(config_));
  return Ok();
}

Status VirtioPciDevice::AddVirtioCapabilities() {
  struct Cap {
    uint8_t type;
    uint64_t offset;
    uint64_t length;
  };
  const Cap caps[] = {{kCapCommonCfg, kCommonCfgOffset, kCommonCfgSize},
                      {kCapIsrCfg, kIsrOffset, 1},
                      {kCapDeviceCfg, kDeviceCfgOffset, kDeviceCfgSize}};
  for (const Cap& cap : caps) {
    std::vector<uint8_t> body = CapabilityBody(cap.type, cap.offset, cap.length, 0);
    std::vector<uint8_t> read_only(body.size(), 0);
    TERN_RETURN_IF_ERROR(config_.AddCapability(pci::kCapabilityIdVendorSpecific, body, read_only));
  }
  // struct virtio_pci_notify_cap: one notify address per queue, kNotifyOffMultiplier apart.
  std::vector<uint8_t> notify = CapabilityBody(kCapNotifyCfg, kNotifyOffset,
                                               uint32_t{kNotifyOffMultiplier} * queues_.size(), 4);
  std::memcpy(&notify[14], &kNotifyOffMultiplier, 4);
  std::vector<uint8_t> read_only(notify.size(), 0);
  TERN_RETURN_IF_ERROR(config_.AddCapability(pci::kCapabilityIdVendorSpecific, notify, read_only));
  // struct virtio_pci_cfg_cap: bar, offset, length and pci_cfg_data are driver-writable.
  std::vector<uint8_t> window = CapabilityBody(kCapPciCfg, 0, 0, 4);
  std::vector<uint8_t> writable(window.size(), 0);
  writable[kPciCfgBar - 2] = 0xff;
  std::memset(&writable[kPciCfgOffset - 2], 0xff, 12);  // offset, length, pci_cfg_data
  TERN_ASSIGN_OR_RETURN(pci_cfg_capability_,
                        config_.AddCapability(pci::kCapabilityIdVendorSpecific, window, writable));
  return Ok();
}

std::vector<pci::BarRequest> VirtioPciDevice::bars() const { return config_.bars(); }

uint8_t VirtioPciDevice::device_status() const {
  std::lock_guard lock(mutex_);
  return StatusRegister();
}

uint8_t VirtioPciDevice::StatusRegister() const {
  return status_ | (needs_reset_.load() ? kStatusDeviceNeedsReset : 0);
}

// --- Configuration space -------------------------------------------------------------------

// Where a VIRTIO_PCI_CAP_PCI_CFG window access goes: `hit` when [offset, +size) is exactly
// pci_cfg_data's first `length` bytes and the window names a valid BAR 0 range. Returns the
// BAR offset.
uint32_t VirtioPciDevice::PciCfgWindow(uint16_t offset, size_t size, bool& hit) const {
  uint16_t data = pci_cfg_capability_ + kPciCfgData;
  hit = false;
  if (offset < data || offset >= data + 4) return 0;
  uint8_t bar = config_.Read8(pci_cfg_capability_ + kPciCfgBar);
  uint32_t bar_offset = config_.Read32(pci_cfg_capability_ + kPciCfgOffset);
  uint32_t length = config_.Read32(pci_cfg_capability_ + kPciCfgLength);
  hit = offset == data && size == length && bar == 0 &&
        (length == 1 || length == 2 || length == 4) && bar_offset % length == 0 &&
        uint64_t{bar_offset} + length <= kBarSize;
  return bar_offset;
}

void VirtioPciDevice::ReadConfig(uint16_t offset, std::span<uint8_t> data) {
  bool window = false;
  uint32_t bar_offset = PciCfgWindow(offset, data.size(), window);
  if (window) return ReadBar(0, bar_offset, data);
  config_.Read(offset, data);
}

void VirtioPciDevice::WriteConfig(uint16_t offset, std::span<const uint8_t> data) {
  bool window = false;
  uint32_t bar_offset = PciCfgWindow(offset, data.size(), window);
  if (window) return WriteBar(0, bar_offset, data);
  std::optional<uint16_t> capability = config_.Write(offset, data);
  if (capability == msix_capability_) {
    msix_->SetMessageControl(config_.Read16(msix_capability_ + pci::Msix::kMessageControlOffset));
  }
}

Status VirtioPciDevice::BarMoved(uint8_t index, uint64_t old_gpa, uint64_t new_gpa) {
  if (index != 0) return Ok();
  std::lock_guard lock(mutex_);
  if (old_gpa != 0) TERN_RETURN_IF_ERROR(RegisterIoEvents(old_gpa, /*deassign=*/true));
  bar_gpa_ = new_gpa;
  return RegisterIoEvents(new_gpa, /*deassign=*/false);
}

Status VirtioPciDevice::RegisterIoEvents(uint64_t bar_gpa, bool deassign) {
  for (size_t i = 0; i < queue_events_.size(); ++i) {
    uint64_t address = bar_gpa + kNotifyOffset + i * kNotifyOffMultiplier;
    Status status = registrar_(queue_events_[i], address, deassign);
    if (!status.ok()) return status.error().WithContext("virtio queue " + std::to_string(i));
  }
  return Ok();
}

// --- BAR 0 ---------------------------------------------------------------------------------

void VirtioPciDevice::ReadBar(uint8_t index, uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (index != 0) return;
  if (offset < kCommonCfgOffset + kCommonCfgSize) {
    std::lock_guard lock(mutex_);
    pci::StoreLe(data, ReadCommon(offset - kCommonCfgOffset, data.size()));
  } else if (offset == kIsrOffset && data.size() == 1) {
    data[0] = isr_.exchange(0);  // reading the ISR status clears it (§4.1.4.5)
  } else if (offset >= kDeviceCfgOffset && offset < kDeviceCfgOffset + kDeviceCfgSize) {
    device_->ReadConfig(offset - kDeviceCfgOffset, data);
  } else if (offset >= kMsixTableOffset && offset < kMsixTableOffset + msix_->table_bytes()) {
    msix_->ReadTable(offset - kMsixTableOffset, data);
  } else if (offset >= kMsixPbaOffset && offset < kMsixPbaOffset + msix_->pba_bytes()) {
    msix_->ReadPba(offset - kMsixPbaOffset, data);
  }
}

void VirtioPciDevice::WriteBar(uint8_t index, uint64_t offset, std::span<const uint8_t> data) {
  if (index != 0) return;
  if (offset < kCommonCfgOffset + kCommonCfgSize) {
    WriteCommon(offset - kCommonCfgOffset, data.size(), pci::LoadLe(data));
  } else if (offset >= kDeviceCfgOffset && offset < kDeviceCfgOffset + kDeviceCfgSize) {
    device_->WriteConfig(offset - kDeviceCfgOffset, data);
  } else if (offset >= kNotifyOffset &&
             offset < kNotifyOffset + queue_events_.size() * kNotifyOffMultiplier) {
    // Reached only when the ioeventfd did not match (another access size): same effect.
    (void)queue_events_[(offset - kNotifyOffset) / kNotifyOffMultiplier].Write(1);
  } else if (offset >= kMsixTableOffset && offset < kMsixTableOffset + msix_->table_bytes()) {
    msix_->WriteTable(offset - kMsixTableOffset, data);
  }
}

// --- Common configuration (virtio 1.2 §4.1.4.3) --------------------------------------------

uint64_t VirtioPciDevice::ReadCommon(uint64_t offset, size_t size) {
  uint16_t select = queue_select_;
  Queue* queue = select < queues_.size() ? &queues_[select] : nullptr;
  auto field = [&](uint64_t at, size_t width) { return offset == at && size == width; };
  auto half64 = [&](uint64_t at, uint64_t value) -> std::optional<uint64_t> {
    if (offset == at && size == 8) return value;
    if (offset == at && size == 4) return value & 0xffffffff;
    if (offset == at + 4 && size == 4) return value >> 32;
    return std::nullopt;
  };
  if (field(kDeviceFeatureSelect, 4)) return device_feature_select_;
  if (field(kDeviceFeature, 4)) {
    return device_feature_select_ < 2
               ? device_->device_features() >> (32 * device_feature_select_) & 0xffffffff
               : 0;
  }
  if (field(kDriverFeatureSelect, 4)) return driver_feature_select_;
  if (field(kDriverFeature, 4)) {
    return driver_feature_select_ < 2
               ? driver_features_ >> (32 * driver_feature_select_) & 0xffffffff
               : 0;
  }
  if (field(kConfigMsixVector, 2)) return config_vector_.load();
  if (field(kNumQueues, 2)) return queues_.size();
  if (field(kDeviceStatus, 1)) return StatusRegister();
  if (field(kConfigGeneration, 1)) return config_generation_.load();
  if (field(kQueueSelect, 2)) return select;
  if (queue == nullptr) return 0;  // queue registers of a queue that does not exist read 0
  if (field(kQueueSize, 2)) return queue->size();
  if (field(kQueueMsixVector, 2)) return queue_vectors_[select].load();
  if (field(kQueueEnable, 2)) return queue->ready() ? 1 : 0;
  if (field(kQueueNotifyOff, 2)) return select;
  if (auto v = half64(kQueueDesc, queue->desc_table())) return *v;
  if (auto v = half64(kQueueDriver, queue->avail_ring())) return *v;
  if (auto v = half64(kQueueDevice, queue->used_ring())) return *v;
  return 0;
}

void VirtioPciDevice::WriteCommon(uint64_t offset, size_t size, uint64_t value) {
  std::unique_lock lock(mutex_);
  auto field = [&](uint64_t at, size_t width) { return offset == at && size == width; };
  if (field(kDeviceFeatureSelect, 4)) {
    device_feature_select_ = static_cast<uint32_t>(value);
  } else if (field(kDriverFeatureSelect, 4)) {
    driver_feature_select_ = static_cast<uint32_t>(value);
  } else if (field(kDriverFeature, 4)) {
    // Features are fixed once FEATURES_OK is set (§3.1.1); only two 32-bit words exist.
    if ((status_ & kStatusFeaturesOk) || driver_feature_select_ >= 2) return;
    uint64_t shift = 32 * driver_feature_select_;
    driver_features_ = (driver_features_ & ~(0xffffffffull << shift)) | (value << shift);
  } else if (field(kConfigMsixVector, 2)) {
    config_vector_ = ValidVector(static_cast<uint16_t>(value));
  } else if (field(kDeviceStatus, 1)) {
    WriteStatus(static_cast<uint8_t>(value));
  } else if (field(kQueueSelect, 2)) {
    queue_select_ = static_cast<uint16_t>(value);
  } else {
    WriteQueueRegister(offset, size, value);
  }
}

void VirtioPciDevice::WriteQueueRegister(uint64_t offset, size_t size, uint64_t value) {
  if (queue_select_ >= queues_.size() || (status_ & kStatusDriverOk)) return;
  Queue& queue = queues_[queue_select_];
  if (offset == kQueueMsixVector && size == 2) {
    queue_vectors_[queue_select_] = ValidVector(static_cast<uint16_t>(value));
    return;
  }
  if (queue.ready()) return;  // the driver must not change an enabled queue (§4.1.4.3.2)
  auto set64 = [&](uint64_t at, uint64_t current, auto setter) {
    if (offset == at && size == 8) setter(value);
    if (offset == at && size == 4) setter((current & ~0xffffffffull) | (value & 0xffffffff));
    if (offset == at + 4 && size == 4) setter((current & 0xffffffff) | (value << 32));
  };
  if (offset == kQueueSize && size == 2) {
    queue.set_size(static_cast<uint16_t>(value));
  } else if (offset == kQueueEnable && size == 2) {
    if (value == 1) EnableQueue();
  }
  set64(kQueueDesc, queue.desc_table(), [&](uint64_t v) { queue.set_desc_table(v); });
  set64(kQueueDriver, queue.avail_ring(), [&](uint64_t v) { queue.set_avail_ring(v); });
  set64(kQueueDevice, queue.used_ring(), [&](uint64_t v) { queue.set_used_ring(v); });
}

void VirtioPciDevice::EnableQueue() {
  Queue& queue = queues_[queue_select_];
  Status valid = queue.Validate(memory_);
  if (!valid.ok()) {
    spdlog::warn("virtio-pci {:04x}: queue {} not enabled: {}", 0x1040 + device_->device_type(),
                 queue_select_, valid.error().ToString());
    (void)NotifyNeedsReset();
    return;
  }
  queue.set_ready(true);
}

uint16_t VirtioPciDevice::ValidVector(uint16_t vector) const {
  return vector < msix_->layout().num_vectors ? vector : kNoVector;
}

// The device status state machine (virtio 1.2 §2.1, §3.1.1).
void VirtioPciDevice::WriteStatus(uint8_t status) {
  if (status == 0) return ResetLocked();
  uint8_t added = status & ~status_;
  if (added & kStatusFeaturesOk) {
    uint64_t offered = device_->device_features();
    bool valid = (driver_features_ & ~offered) == 0 && (driver_features_ & kFeatureVersion1);
    if (!valid) status &= ~kStatusFeaturesOk;  // the driver reads it back and gives up
  }
  if ((added & kStatusDriverOk) && !(status & kStatusFeaturesOk)) status &= ~kStatusDriverOk;
  status_ = status & ~kStatusDeviceNeedsReset;  // only the device sets it
  if ((added & kStatusDriverOk) && (status_ & kStatusDriverOk) && !active_) ActivateDevice();
}

void VirtioPciDevice::ActivateDevice() {
  bool event_idx = driver_features_ & kFeatureEventIdx;
  bool indirect = driver_features_ & kFeatureIndirectDesc;
  for (Queue& queue : queues_) {
    queue.set_event_idx(event_idx);
    queue.set_indirect(indirect);
  }
  ActivateContext context{.memory = &memory_,
                          .driver_features = driver_features_,
                          .queues = &queues_,
                          .queue_events = queue_events_,
                          .interrupt = this,
                          .loop = &loop_};
  Status status = device_->Activate(context);
  if (!status.ok()) {
    spdlog::warn("virtio-pci {:04x}: activation failed: {}", 0x1040 + device_->device_type(),
                 status.error().ToString());
    (void)NotifyNeedsReset();
    return;
  }
  active_ = true;
}

void VirtioPciDevice::ResetLocked() {
  // After device_->Reset() the device thread no longer calls NotifyNeedsReset(): clearing
  // needs_reset_ below cannot lose a report of the new activation.
  if (active_) device_->Reset();
  active_ = false;
  needs_reset_ = false;
  for (Queue& queue : queues_) queue.Reset();
  for (size_t i = 0; i < queues_.size(); ++i) queue_vectors_[i] = kNoVector;
  for (const EventFd& event : queue_events_) (void)event.Read();  // drop stale kicks
  config_vector_ = kNoVector;
  device_feature_select_ = driver_feature_select_ = 0;
  driver_features_ = 0;
  queue_select_ = 0;
  status_ = 0;
  isr_ = 0;
}

// --- Snapshots ------------------------------------------------------------------------------

nlohmann::json VirtioPciDevice::SaveState() const {
  std::lock_guard lock(mutex_);
  nlohmann::json queues = nlohmann::json::array();
  nlohmann::json vectors = nlohmann::json::array();
  for (size_t i = 0; i < queues_.size(); ++i) {
    queues.push_back(queues_[i].SaveState());
    vectors.push_back(queue_vectors_[i].load());
  }
  return {{"device_type", device_->device_type()},
          {"config_space", nlohmann::json::binary(config_.SaveState())},
          {"msix", msix_->SaveState()},
          {"device_feature_select", device_feature_select_},
          {"driver_feature_select", driver_feature_select_},
          {"driver_features", driver_features_},
          {"status", status_},
          {"queue_select", queue_select_},
          {"queues", std::move(queues)},
          {"queue_vectors", std::move(vectors)},
          {"needs_reset", needs_reset_.load()},
          {"isr", isr_.load()},
          {"config_generation", config_generation_.load()},
          {"config_vector", config_vector_.load()},
          {"device", device_->SaveState()}};
}

Status VirtioPciDevice::RestoreState(const nlohmann::json& state) {
  TERN_ASSIGN_OR_RETURN(Fields fields,
                        Fields::Of(state, "virtio-pci",
                                   {"device_type", "config_space", "msix", "device_feature_select",
                                    "driver_feature_select", "driver_features", "status",
                                    "queue_select", "queues", "queue_vectors", "needs_reset", "isr",
                                    "config_generation", "config_vector", "device"}));
  uint32_t type = 0;
  TERN_RETURN_IF_ERROR(fields.Read("device_type", type, true, 0, UINT32_MAX));
  if (type != device_->device_type()) {
    return Error("virtio-pci: the snapshot has device type " + std::to_string(type) +
                     " where this VM has " + std::to_string(device_->device_type()),
                 EINVAL);
  }
  std::vector<uint8_t> config_space;
  TERN_RETURN_IF_ERROR(fields.Read("config_space", config_space, true, pci::kConfigSpaceSize));
  TERN_ASSIGN_OR_RETURN(const nlohmann::json* msix, fields.Array("msix"));
  TERN_ASSIGN_OR_RETURN(const nlohmann::json* queues, fields.Array("queues"));
  TERN_ASSIGN_OR_RETURN(const nlohmann::json* vectors, fields.Array("queue_vectors"));
  if (queues->size() != queues_.size() || vectors->size() != queues_.size()) {
    return Error("virtio-pci: the snapshot's queue count differs from the device's", EINVAL);
  }
  std::lock_guard lock(mutex_);
  if (active_ || status_ != 0) return Error("virtio-pci: restore into a used function", EINVAL);
  for (size_t i = 0; i < queues_.size(); ++i) {
    TERN_RETURN_IF_ERROR(queues_[i].RestoreState((*queues)[i], memory_));
    const nlohmann::json& vector = (*vectors)[i];
    if (!vector.is_number_unsigned() || vector.get<uint64_t>() > UINT16_MAX) {
      return Error("virtio-pci: bad queue vector", EINVAL);
    }
    queue_vectors_[i] = ValidVector(vector.get<uint16_t>());
  }
  TERN_RETURN_IF_ERROR(
      fields.Read("device_feature_select", device_feature_select_, true, 0, UINT32_MAX));
  TERN_RETURN_IF_ERROR(
      fields.Read("driver_feature_select", driver_feature_select_, true, 0, UINT32_MAX));
  TERN_RETURN_IF_ERROR(fields.Read("driver_features", driver_features_, true));
  TERN_RETURN_IF_ERROR(fields.Read("status", status_, true));
  TERN_RETURN_IF_ERROR(fields.Read("queue_select", queue_select_, true));
  bool needs_reset = false;
  uint8_t isr = 0, generation = 0;
  uint16_t config_vector = kNoVector;
  TERN_RETURN_IF_ERROR(fields.Read("needs_reset", needs_reset, true));
  TERN_RETURN_IF_ERROR(fields.Read("isr", isr, true));
  TERN_RETURN_IF_ERROR(fields.Read("config_generation", generation, true));
  TERN_RETURN_IF_ERROR(fields.Read("config_vector", config_vector, true));
  if ((driver_features_ & ~device_->device_features()) != 0) {
    return Error("virtio-pci: the snapshot's driver features are not the device's", EINVAL);
  }
  needs_reset_ = needs_reset;
  isr_ = isr;
  config_generation_ = generation;
  config_vector_ = ValidVector(config_vector);
  TERN_RETURN_IF_ERROR(config_.RestoreState(config_space));
  TERN_RETURN_IF_ERROR(msix_->RestoreState(*msix));
  msix_->SetMessageControl(config_.Read16(msix_capability_ + pci::Msix::kMessageControlOffset));
  TERN_RETURN_IF_ERROR(device_->RestoreState(state["device"]));
  if ((status_ & kStatusDriverOk) && !needs_reset_) {
    ActivateDevice();
    if (!active_) return Error("virtio-pci: the restored device did not activate", EIO);
    for (size_t i = 0; i < queues_.size(); ++i) {
      if (!queues_[i].ready()) continue;
      TERN_RETURN_IF_ERROR(queue_events_[i].Write(1));
      TERN_RETURN_IF_ERROR(NotifyQueue(static_cast<uint16_t>(i)));
    }
  }
  return Ok();
}

void VirtioPciDevice::Shutdown() {
  std::lock_guard lock(mutex_);
  if (active_) device_->Reset();
  active_ = false;
}

// --- Interrupts ----------------------------------------------------------------------------

Status VirtioPciDevice::SignalVector(uint16_t vector) {
  if (vector == kNoVector || !msix_->enabled()) return Ok();  // no INTx: the ISR bit remains
  return msix_->Trigger(vector);
}

Status VirtioPciDevice::NotifyQueue(uint16_t queue_index) {
  if (queue_index >= queues_.size())
    return Error("no virtio queue " + std::to_string(queue_index), EINVAL);
  isr_.fetch_or(kIsrQueue);
  return SignalVector(queue_vectors_[queue_index].load());
}

Status VirtioPciDevice::NotifyConfig() {
  isr_.fetch_or(kIsrConfig);
  config_generation_.fetch_add(1);
  return SignalVector(config_vector_.load());
}

// DEVICE_NEEDS_RESET (virtio 1.2 §2.1.2). No mutex_: see the header.
Status VirtioPciDevice::NotifyNeedsReset() {
  needs_reset_ = true;
  return NotifyConfig();
}

}  // namespace tern::virtio
