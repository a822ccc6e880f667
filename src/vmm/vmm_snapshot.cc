// Snapshot and restore of a whole VM (Vmm::SaveSnapshot, Vmm::Restore): the state file's
// contents (configuration, CPU identity, KVM VM and vCPU state, legacy and virtio devices) and
// the order in which they are taken and put back.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/vm_state.h"
#include "base/json_fields.h"
#include "snapshot/memory_file.h"
#include "snapshot/state_file.h"
#include "vmm/vmm.h"

namespace tern {
namespace {

using nlohmann::json;

std::string MacText(const net::MacAddress& mac) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3],
                     mac[4], mac[5]);
}

// What a restore needs to build the same machine: everything of VmConfig but the boot files
// and console descriptors.
json ConfigToJson(const VmConfig& config) {
  json disks = json::array();
  for (const virtio::BlockOptions& disk : config.disks) {
    disks.push_back({{"path", disk.path},
                     {"read_only", disk.read_only},
                     {"serial", disk.serial},
                     {"allow_io_uring", disk.allow_io_uring}});
  }
  json nets = json::array();
  for (const NetConfig& net : config.nets) {
    json entry = {{"id", net.id}, {"tap", net.tap}};
    if (net.mac) entry["mac"] = MacText(*net.mac);
    nets.push_back(std::move(entry));
  }
  json out = {{"vcpus", config.vcpus},
              {"memory_mib", config.memory_mib},
              {"disks", std::move(disks)},
              {"nets", std::move(nets)},
              {"rng", config.rng},
              {"virtio_console", config.console == ConsoleDevice::kVirtio},
              {"track_dirty_pages", config.track_dirty_pages}};
  if (config.balloon) {
    out["balloon"] = {{"amount_mib", config.balloon->amount_mib},
                      {"deflate_on_oom", config.balloon->deflate_on_oom},
                      {"stats_polling_interval_s", config.balloon->stats_polling_interval_s}};
  }
  if (config.vsock) {
    out["vsock"] = {{"uds_path", config.vsock->uds_path},
                    {"guest_cid", config.vsock->guest_cid},
                    {"max_connections", config.vsock->max_connections},
                    {"buf_alloc", config.vsock->buf_alloc}};
  }
  return out;
}

Result<VmConfig> ConfigFromJson(const json& in) {
  TERN_ASSIGN_OR_RETURN(Fields fields,
                        Fields::Of(in, "config",
                                   {"vcpus", "memory_mib", "disks", "nets", "rng", "virtio_console",
                                    "track_dirty_pages", "balloon", "vsock"}));
  VmConfig config;
  TERN_RETURN_IF_ERROR(fields.Read("vcpus", config.vcpus, true, 1, x86_64::kMaxVcpus));
  TERN_RETURN_IF_ERROR(fields.Read("memory_mib", config.memory_mib, true, 1, 1 << 20));
  TERN_RETURN_IF_ERROR(fields.Read("rng", config.rng, true));
  bool virtio_console = false;
  TERN_RETURN_IF_ERROR(fields.Read("virtio_console", virtio_console, true));
  config.console = virtio_console ? ConsoleDevice::kVirtio : ConsoleDevice::kSerial;
  TERN_RETURN_IF_ERROR(fields.Read("track_dirty_pages", config.track_dirty_pages, true));
  TERN_ASSIGN_OR_RETURN(const json* disks, fields.Array("disks"));
  for (const json& entry : *disks) {
    TERN_ASSIGN_OR_RETURN(
        Fields disk,
        Fields::Of(entry, "config: disk", {"path", "read_only", "serial", "allow_io_uring"}));
    virtio::BlockOptions& options = config.disks.emplace_back();
    TERN_RETURN_IF_ERROR(disk.Read("path", options.path, true));
    TERN_RETURN_IF_ERROR(disk.Read("read_only", options.read_only, true));
    TERN_RETURN_IF_ERROR(disk.Read("serial", options.serial, true));
    TERN_RETURN_IF_ERROR(disk.Read("allow_io_uring", options.allow_io_uring, true));
  }
  TERN_ASSIGN_OR_RETURN(const json* nets, fields.Array("nets"));
  for (const json& entry : *nets) {
    TERN_ASSIGN_OR_RETURN(Fields net, Fields::Of(entry, "config: net", {"id", "tap", "mac"}));
    NetConfig& options = config.nets.emplace_back();
    TERN_RETURN_IF_ERROR(net.Read("id", options.id, true));
    TERN_RETURN_IF_ERROR(net.Read("tap", options.tap, true));
    std::optional<std::string> mac;
    TERN_RETURN_IF_ERROR(net.Read("mac", mac));
    if (mac) {
      TERN_ASSIGN_OR_RETURN(options.mac, net::ParseMacAddress(*mac));
    }
  }
  if (fields.Has("balloon")) {
    TERN_ASSIGN_OR_RETURN(Fields balloon,
                          Fields::Of(in["balloon"], "config: balloon",
                                     {"amount_mib", "deflate_on_oom", "stats_polling_interval_s"}));
    virtio::BalloonConfig& options = config.balloon.emplace();
    TERN_RETURN_IF_ERROR(balloon.Read("amount_mib", options.amount_mib, true, 0, UINT32_MAX));
    TERN_RETURN_IF_ERROR(balloon.Read("deflate_on_oom", options.deflate_on_oom, true));
    TERN_RETURN_IF_ERROR(
        balloon.Read("stats_polling_interval_s", options.stats_polling_interval_s, true));
  }
  if (fields.Has("vsock")) {
    TERN_ASSIGN_OR_RETURN(Fields vsock,
                          Fields::Of(in["vsock"], "config: vsock",
                                     {"uds_path", "guest_cid", "max_connections", "buf_alloc"}));
    virtio::VsockOptions& options = config.vsock.emplace();
    TERN_RETURN_IF_ERROR(vsock.Read("uds_path", options.uds_path, true));
    TERN_RETURN_IF_ERROR(vsock.Read("guest_cid", options.guest_cid, true));
    TERN_RETURN_IF_ERROR(
        vsock.Read("max_connections", options.max_connections, true, 1, UINT32_MAX));
    TERN_RETURN_IF_ERROR(vsock.Read("buf_alloc", options.buf_alloc, true, 1, UINT32_MAX));
  }
  return config;
}

// The top level of a state file.
Result<Fields> StateFields(const json& state) {
  return Fields::Of(state, "snapshot",
                    {"tern_version", "cpu", "config", "vm", "vcpus", "serial", "i8042", "virtio"});
}

// The snapshot's configuration with the restore's own choices applied.
Result<VmConfig> RestoredConfig(const json& state, const RestoreOptions& options) {
  TERN_ASSIGN_OR_RETURN(VmConfig config, ConfigFromJson(state));
  config.console_in_fd = options.console_in_fd;
  config.console_out_fd = options.console_out_fd;
  config.track_dirty_pages = options.track_dirty_pages;
  for (const auto& [id, tap] : options.network_overrides) {
    auto net = std::find_if(config.nets.begin(), config.nets.end(),
                            [&](const NetConfig& n) { return n.id == id; });
    if (net == config.nets.end()) {
      return Error("network_overrides: the snapshot has no interface `" + id + "`", EINVAL);
    }
    net->tap = tap;
  }
  return config;
}

}  // namespace

Status Vmm::SaveSnapshot(const SnapshotOptions& options) {
  std::lock_guard lock(pause_mutex_);
  if (state_ != VmState::kPaused) {
    return Error("the VM must be paused to take a snapshot (PATCH /vm {\"state\": \"Paused\"})",
                 EINVAL);
  }
  if (options.diff && !config_.track_dirty_pages) {
    return Error("a Diff snapshot needs track_dirty_pages in the machine configuration", EINVAL);
  }
  for (auto& device : virtio_devices_) TERN_RETURN_IF_ERROR(device->device().Quiesce());
  TERN_ASSIGN_OR_RETURN(json state, SaveStateLocked());
  if (options.diff) {
    TERN_ASSIGN_OR_RETURN(auto dirty, TakeDirtyPages());
    TERN_RETURN_IF_ERROR(snapshot::WriteDirtyPages(memory_, dirty, options.mem_path));
  } else {
    if (config_.track_dirty_pages) TERN_RETURN_IF_ERROR(TakeDirtyPages());  // the next diff's base
    TERN_RETURN_IF_ERROR(snapshot::WriteMemoryFile(memory_, options.mem_path));
  }
  return snapshot::WriteStateFile(options.state_path, state);
}

Result<json> Vmm::SaveStateLocked() {
  TERN_ASSIGN_OR_RETURN(x86_64::VmState vm_state, x86_64::SaveVmState(vm_));
  json vcpus = json::array();
  for (auto& vcpu : vcpus_) {
    auto saved = x86_64::SaveVcpuState(kvm_, vcpu->vcpu, vcpu->cpuid);
    if (!saved.ok()) return saved.error().WithContext("vCPU " + std::to_string(vcpu->vcpu.id()));
    vcpus.push_back(x86_64::ToJson(*saved));
  }
  json virtio = json::array();
  for (auto& device : virtio_devices_) virtio.push_back(device->SaveState());
  return json{{"tern_version", TERN_VERSION},    {"cpu", x86_64::ToJson(x86_64::HostCpuIdentity())},
              {"config", ConfigToJson(config_)}, {"vm", x86_64::ToJson(vm_state)},
              {"vcpus", std::move(vcpus)},       {"serial", serial_->SaveState()},
              {"i8042", i8042_->SaveState()},    {"virtio", std::move(virtio)}};
}

// Pages written since the last call, per memory region: KVM's dirty log (guest writes) ORed
// with the VMM's own writes (GuestMemory's bitmap).
Result<std::vector<std::vector<uint64_t>>> Vmm::TakeDirtyPages() {
  std::vector<std::vector<uint64_t>> dirty = memory_.TakeDirtyBitmaps();
  const auto& regions = memory_.regions();
  for (uint32_t slot = 0; slot < regions.size(); ++slot) {
    TERN_ASSIGN_OR_RETURN(std::vector<uint64_t> logged,
                          vm_.GetDirtyLog(slot, regions[slot].size / 4096));
    for (size_t i = 0; i < logged.size() && i < dirty[slot].size(); ++i)
      dirty[slot][i] |= logged[i];
  }
  return dirty;
}

Result<std::unique_ptr<Vmm>> Vmm::Restore(const RestoreOptions& options) {
  TERN_ASSIGN_OR_RETURN(json state, snapshot::ReadStateFile(options.state_path));
  auto fields = StateFields(state);
  if (!fields.ok()) return fields.error().WithContext(options.state_path);
  TERN_ASSIGN_OR_RETURN(const json* cpu, fields->Object("cpu"));
  TERN_ASSIGN_OR_RETURN(x86_64::CpuIdentity identity, x86_64::CpuIdentityFromJson(*cpu));
  TERN_RETURN_IF_ERROR(x86_64::CheckSameCpu(identity, x86_64::HostCpuIdentity()));
  TERN_ASSIGN_OR_RETURN(const json* saved_config, fields->Object("config"));
  auto config = RestoredConfig(*saved_config, options);
  if (!config.ok()) return config.error().WithContext(options.state_path);

  TERN_ASSIGN_OR_RETURN(kvm::Kvm kvm, OpenKvm(config->vcpus));
  TERN_ASSIGN_OR_RETURN(kvm::Vm vm, kvm.CreateVm());
  std::vector<RegionSpec> regions = x86_64::RamRegions(config->memory_mib << 20);
  auto memory = GuestMemory::CreateFromFile(regions, options.mem_path);
  if (!memory.ok()) return memory.error().WithContext("memory file " + options.mem_path);
  TERN_ASSIGN_OR_RETURN(EventFd stop_event, EventFd::Create());
  std::unique_ptr<Vmm> vmm(new Vmm(*config, std::move(kvm), std::move(vm),
                                   std::move(memory).value(), std::move(stop_event)));
  TERN_RETURN_IF_ERROR(vmm->SetupMemory());
  TERN_RETURN_IF_ERROR(vmm->SetupDevices());
  TERN_RETURN_IF_ERROR(vmm->SetupPci());
  TERN_RETURN_IF_ERROR(vmm->CreateVcpus(/*boot=*/false));
  Status restored = vmm->RestoreState(state);
  if (!restored.ok()) return restored.error().WithContext(options.state_path);
  return vmm;
}

// KVM's VM state first (irqchip, PIT, clock), then each vCPU (its LAPIC among it), then the
// devices, whose restore may raise interrupts into the restored LAPICs.
Status Vmm::RestoreState(const json& state) {
  TERN_ASSIGN_OR_RETURN(Fields fields, StateFields(state));
  TERN_ASSIGN_OR_RETURN(const json* saved_vm, fields.Object("vm"));
  TERN_ASSIGN_OR_RETURN(x86_64::VmState vm_state, x86_64::VmStateFromJson(*saved_vm));
  TERN_RETURN_IF_ERROR(x86_64::RestoreVmState(vm_, vm_state));
  TERN_ASSIGN_OR_RETURN(const json* saved_vcpus, fields.Array("vcpus"));
  const json& vcpus = *saved_vcpus;
  if (vcpus.size() != vcpus_.size()) {
    return Error("snapshot: `vcpus` must list " + std::to_string(vcpus_.size()) + " vCPUs", EINVAL);
  }
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    TERN_ASSIGN_OR_RETURN(x86_64::VcpuState vcpu_state, x86_64::VcpuStateFromJson(vcpus[i]));
    Status status = x86_64::RestoreVcpuState(vcpus_[i]->vcpu, vcpu_state);
    if (!status.ok()) return status.error().WithContext("vCPU " + std::to_string(i));
    vcpus_[i]->cpuid = vcpu_state.cpuid;
  }
  TERN_ASSIGN_OR_RETURN(const json* serial, fields.Object("serial"));
  TERN_RETURN_IF_ERROR(serial_->RestoreState(*serial));
  TERN_ASSIGN_OR_RETURN(const json* i8042, fields.Object("i8042"));
  TERN_RETURN_IF_ERROR(i8042_->RestoreState(*i8042));
  TERN_ASSIGN_OR_RETURN(const json* saved_virtio, fields.Array("virtio"));
  const json& virtio = *saved_virtio;
  if (virtio.size() != virtio_devices_.size()) {
    return Error(
        "snapshot: `virtio` must list " + std::to_string(virtio_devices_.size()) + " devices",
        EINVAL);
  }
  for (size_t i = 0; i < virtio_devices_.size(); ++i) {
    Status status = virtio_devices_[i]->RestoreState(virtio[i]);
    if (!status.ok()) return status.error().WithContext("virtio device " + std::to_string(i));
  }
  pci_root_->UpdateAllBars();
  return Ok();
}

}  // namespace tern
