// What a VM will be made of, in the shape of Firecracker's API (boot source, machine config,
// drives, network interfaces, metrics): built up by API requests or a --config-file before the
// VM starts, then turned into a VmConfig. JSON in and out with Firecracker's field names.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "vmm/vmm.h"

namespace tern {

// PUT /boot-source.
struct BootSource {
  std::string kernel_image_path;
  std::string initrd_path;               // empty: none
  std::optional<std::string> boot_args;  // none: VmConfig's default command line
};

// PUT/PATCH /machine-config. Ranges: vcpu_count 1..x86_64::kMaxVcpus (1 or an even number
// when smt), mem_size_mib 64..1 TiB.
struct MachineConfig {
  uint32_t vcpu_count = 1;
  uint64_t mem_size_mib = 256;
  bool smt = false;  // accepted for compatibility; vCPUs are always one thread per core
  bool track_dirty_pages = false;  // stored for diff snapshots
};

// PUT/PATCH /drives/{drive_id}: a virtio-blk disk.
struct Drive {
  std::string drive_id;
  std::string path_on_host;
  bool is_root_device = false;  // the kernel gets root=/dev/vda (or PARTUUID=) and rw/ro
  bool is_read_only = false;
  std::optional<std::string> partuuid;
  std::string cache_type = "Unsafe";  // "Unsafe" | "Writeback" (flushes are always honoured)
  std::string io_engine = "Async";    // "Sync" | "Async" (io_uring)
};

// PUT/PATCH /network-interfaces/{iface_id}: a virtio-net interface on a host TAP.
struct NetworkInterface {
  std::string iface_id;
  std::string host_dev_name;
  std::optional<std::string> guest_mac;  // "52:54:00:12:34:56"
};

// PUT /metrics: where FlushMetrics appends one JSON line.
struct MetricsConfig {
  std::string metrics_path;
};

// Everything configurable before InstanceStart. Not thread-safe (the controller locks).
// Setters validate their JSON body fully before changing anything: an error (EINVAL, message
// naming the field, like Firecracker's fault_message) leaves the resources unchanged.
class VmResources {
 public:
  // Console wiring and the flags that have no API equivalent come from `base`.
  explicit VmResources(VmConfig base = {});

  Status SetBootSource(const nlohmann::json& body);
  // PUT (patch == false) needs vcpu_count and mem_size_mib; PATCH changes the fields given.
  Status SetMachineConfig(const nlohmann::json& body, bool patch);
  // PUT adds or replaces drive `id` (body drive_id must equal it); PATCH changes path_on_host
  // of an existing one. Only one root device.
  Status PutDrive(const std::string& id, const nlohmann::json& body);
  Status PatchDrive(const std::string& id, const nlohmann::json& body);
  Status PutNetworkInterface(const std::string& id, const nlohmann::json& body);
  Status PatchNetworkInterface(const std::string& id, const nlohmann::json& body);
  Status SetMetrics(const nlohmann::json& body);
  // PUT /balloon: amount_mib and deflate_on_oom required, stats_polling_interval_s optional
  // (0..65535 s; 0: no statistics). PATCH /balloon before boot: amount_mib.
  Status SetBalloon(const nlohmann::json& body);
  Status PatchBalloon(const nlohmann::json& body);
  // PUT /vsock: guest_cid (3..2^32-2) and uds_path required; vsock_id accepted and ignored.
  Status SetVsock(const nlohmann::json& body);
  // PUT /smbios (Tern's): the guest's SMBIOS System Information (type 1): manufacturer,
  // product_name, version, serial_number, uuid (8-4-4-4-12 hex), sku_number, family; each
  // optional, strings printable ASCII of at most 64 bytes. Replaces the previous one whole.
  Status SetSmbios(const nlohmann::json& body);
  // GET /balloon before boot. EINVAL when no balloon is configured.
  Result<nlohmann::json> BalloonJson() const;
  // A whole configuration (the --config-file and GET /vm/config shape): "boot-source",
  // "machine-config", "drives", "network-interfaces", "balloon", "vsock", "metrics", "smbios";
  // other top-level keys are errors.
  Status Load(const nlohmann::json& config);

  nlohmann::json MachineConfigJson() const;
  // GET /vm/config.
  nlohmann::json ToJson() const;

  bool has_boot_source() const { return boot_source_.has_value(); }
  // The console descriptors of the base configuration (the command line's), for a restore.
  int console_in_fd() const { return base_.console_in_fd; }
  int console_out_fd() const { return base_.console_out_fd; }
  const std::optional<MetricsConfig>& metrics() const { return metrics_; }
  // The VmConfig to build: root drive first, root= appended to the command line. EINVAL when
  // there is no boot source.
  Result<VmConfig> BuildVmConfig() const;

 private:
  VmConfig base_;
  std::optional<BootSource> boot_source_;
  MachineConfig machine_;
  std::vector<Drive> drives_;
  std::vector<NetworkInterface> nets_;
  std::optional<MetricsConfig> metrics_;
  std::optional<virtio::BalloonConfig> balloon_;
  std::optional<virtio::VsockOptions> vsock_;
  std::optional<x86_64::SmbiosSystemInfo> smbios_;
  std::string smbios_uuid_;  // as given (GET /vm/config shows it back)
};

// The JSON of GET /balloon for a device's configuration.
nlohmann::json BalloonConfigJson(const virtio::BalloonConfig& config);

}  // namespace tern
