// VmResources: Firecracker-shaped VM configuration with strict JSON validation.
#include "vmm/vm_resources.h"

#include <algorithm>
#include <limits>

#include "arch/x86_64/layout.h"
#include "base/json_fields.h"
#include "net/tap.h"

namespace tern {
namespace {

using nlohmann::json;

Error Invalid(const std::string& message) { return Error(message, EINVAL); }

// Identifiers in URLs and bodies: 1..64 of [A-Za-z0-9_] (Firecracker's rule).
Status CheckId(const std::string& id, const std::string& what) {
  bool ok = !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
  if (!ok) return Invalid(what + ": invalid id `" + id + "` (1-64 letters, digits or _)");
  return Ok();
}

// The id field of a body must match the id in the URL.
Status CheckBodyId(const Fields& fields, const char* key, const std::string& url_id,
                   const std::string& what) {
  std::string body_id;
  TERN_RETURN_IF_ERROR(fields.Read(key, body_id, true));
  if (body_id != url_id) {
    return Invalid(what + ": the `" + std::string(key) + "` in the body (" + body_id +
                   ") differs from the one in the path (" + url_id + ")");
  }
  return Ok();
}

Status CheckOneOf(const std::string& value, std::initializer_list<const char*> allowed,
                  const std::string& what) {
  if (std::any_of(allowed.begin(), allowed.end(), [&](const char* a) { return value == a; })) {
    return Ok();
  }
  std::string list;
  for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  return Invalid(what + ": `" + value + "` is not one of " + list);
}

template <typename T>
auto FindById(std::vector<T>& items, std::string T::*id_field, const std::string& id) {
  return std::find_if(items.begin(), items.end(), [&](const T& t) { return t.*id_field == id; });
}

json DriveJson(const Drive& d) {
  json j = {{"drive_id", d.drive_id},
            {"path_on_host", d.path_on_host},
            {"is_root_device", d.is_root_device},
            {"is_read_only", d.is_read_only},
            {"cache_type", d.cache_type},
            {"io_engine", d.io_engine}};
  if (d.partuuid) j["partuuid"] = *d.partuuid;
  return j;
}

json NetJson(const NetworkInterface& n) {
  json j = {{"iface_id", n.iface_id}, {"host_dev_name", n.host_dev_name}};
  if (n.guest_mac) j["guest_mac"] = *n.guest_mac;
  return j;
}

}  // namespace

VmResources::VmResources(VmConfig base) : base_(std::move(base)) {
  machine_.vcpu_count = base_.vcpus;
  machine_.mem_size_mib = base_.memory_mib;
}

Status VmResources::SetBootSource(const json& body) {
  TERN_ASSIGN_OR_RETURN(
      Fields fields,
      Fields::Of(body, "boot-source", {"kernel_image_path", "initrd_path", "boot_args"}));
  BootSource source;
  TERN_RETURN_IF_ERROR(fields.Read("kernel_image_path", source.kernel_image_path, true));
  TERN_RETURN_IF_ERROR(fields.Read("initrd_path", source.initrd_path));
  TERN_RETURN_IF_ERROR(fields.Read("boot_args", source.boot_args));
  if (source.kernel_image_path.empty()) return Invalid("boot-source: empty kernel_image_path");
  boot_source_ = std::move(source);
  return Ok();
}

Status VmResources::SetMachineConfig(const json& body, bool patch) {
  TERN_ASSIGN_OR_RETURN(Fields fields,
                        Fields::Of(body, "machine-config",
                                   {"vcpu_count", "mem_size_mib", "smt", "track_dirty_pages",
                                    "cpu_template", "huge_pages"}));
  MachineConfig next = patch ? machine_ : MachineConfig{};
  TERN_RETURN_IF_ERROR(fields.Read("vcpu_count", next.vcpu_count, !patch, 1, x86_64::kMaxVcpus));
  TERN_RETURN_IF_ERROR(fields.Read("mem_size_mib", next.mem_size_mib, !patch, 64, 1 << 20));
  TERN_RETURN_IF_ERROR(fields.Read("smt", next.smt));
  TERN_RETURN_IF_ERROR(fields.Read("track_dirty_pages", next.track_dirty_pages));
  std::string text = "None";
  TERN_RETURN_IF_ERROR(fields.Read("cpu_template", text));
  TERN_RETURN_IF_ERROR(CheckOneOf(text, {"None"}, "machine-config: cpu_template"));
  text = "None";
  TERN_RETURN_IF_ERROR(fields.Read("huge_pages", text));
  TERN_RETURN_IF_ERROR(CheckOneOf(text, {"None"}, "machine-config: huge_pages"));
  if (next.smt && next.vcpu_count > 1 && next.vcpu_count % 2 != 0) {
    return Invalid("machine-config: with smt, vcpu_count must be 1 or even");
  }
  machine_ = next;
  return Ok();
}

Status VmResources::PutDrive(const std::string& id, const json& body) {
  TERN_RETURN_IF_ERROR(CheckId(id, "drives"));
  TERN_ASSIGN_OR_RETURN(Fields fields,
                        Fields::Of(body, "drives/" + id,
                                   {"drive_id", "path_on_host", "is_root_device", "is_read_only",
                                    "partuuid", "cache_type", "io_engine", "rate_limiter"}));
  TERN_RETURN_IF_ERROR(CheckBodyId(fields, "drive_id", id, "drives/" + id));
  if (fields.Has("rate_limiter"))
    return Invalid("drives/" + id + ": rate_limiter is not supported");
  Drive drive;
  drive.drive_id = id;
  TERN_RETURN_IF_ERROR(fields.Read("path_on_host", drive.path_on_host, true));
  TERN_RETURN_IF_ERROR(fields.Read("is_root_device", drive.is_root_device, true));
  TERN_RETURN_IF_ERROR(fields.Read("is_read_only", drive.is_read_only));
  TERN_RETURN_IF_ERROR(fields.Read("partuuid", drive.partuuid));
  TERN_RETURN_IF_ERROR(fields.Read("cache_type", drive.cache_type));
  TERN_RETURN_IF_ERROR(fields.Read("io_engine", drive.io_engine));
  TERN_RETURN_IF_ERROR(
      CheckOneOf(drive.cache_type, {"Unsafe", "Writeback"}, "drives/" + id + ": cache_type"));
  TERN_RETURN_IF_ERROR(
      CheckOneOf(drive.io_engine, {"Sync", "Async"}, "drives/" + id + ": io_engine"));
  if (drive.path_on_host.empty()) return Invalid("drives/" + id + ": empty path_on_host");
  if (drive.is_root_device) {
    for (const Drive& other : drives_) {
      if (other.is_root_device && other.drive_id != id) {
        return Invalid("drives/" + id + ": drive `" + other.drive_id +
                       "` is already the root device");
      }
    }
  }
  auto it = FindById(drives_, &Drive::drive_id, id);
  if (it != drives_.end()) {
    *it = std::move(drive);
  } else {
    drives_.push_back(std::move(drive));
  }
  return Ok();
}

Status VmResources::PatchDrive(const std::string& id, const json& body) {
  TERN_ASSIGN_OR_RETURN(Fields fields, Fields::Of(body, "drives/" + id,
                                                  {"drive_id", "path_on_host", "rate_limiter"}));
  TERN_RETURN_IF_ERROR(CheckBodyId(fields, "drive_id", id, "drives/" + id));
  auto it = FindById(drives_, &Drive::drive_id, id);
  if (it == drives_.end()) return Invalid("drives/" + id + ": no such drive");
  if (fields.Has("rate_limiter"))
    return Invalid("drives/" + id + ": rate_limiter is not supported");
  std::string path = it->path_on_host;
  TERN_RETURN_IF_ERROR(fields.Read("path_on_host", path));
  if (path.empty()) return Invalid("drives/" + id + ": empty path_on_host");
  it->path_on_host = path;
  return Ok();
}

Status VmResources::PutNetworkInterface(const std::string& id, const json& body) {
  const std::string what = "network-interfaces/" + id;
  TERN_RETURN_IF_ERROR(CheckId(id, "network-interfaces"));
  TERN_ASSIGN_OR_RETURN(Fields fields, Fields::Of(body, what,
                                                  {"iface_id", "host_dev_name", "guest_mac",
                                                   "rx_rate_limiter", "tx_rate_limiter"}));
  TERN_RETURN_IF_ERROR(CheckBodyId(fields, "iface_id", id, what));
  if (fields.Has("rx_rate_limiter") || fields.Has("tx_rate_limiter")) {
    return Invalid(what + ": rate limiters are not supported");
  }
  NetworkInterface net;
  net.iface_id = id;
  TERN_RETURN_IF_ERROR(fields.Read("host_dev_name", net.host_dev_name, true));
  TERN_RETURN_IF_ERROR(fields.Read("guest_mac", net.guest_mac));
  if (net.host_dev_name.empty() || net.host_dev_name.size() > 15 ||
      net.host_dev_name.find_first_of("/ \t\n") != std::string::npos) {
    return Invalid(what + ": host_dev_name must be 1-15 characters without '/' or spaces");
  }
  if (net.guest_mac) {
    auto mac = net::ParseMacAddress(*net.guest_mac);
    if (!mac.ok()) return mac.error().WithContext(what + ": guest_mac");
  }
  for (const NetworkInterface& other : nets_) {
    if (other.iface_id == id) continue;
    if (other.host_dev_name == net.host_dev_name) {
      return Invalid(what + ": host_dev_name " + net.host_dev_name + " is used by `" +
                     other.iface_id + "`");
    }
    if (net.guest_mac && other.guest_mac == net.guest_mac) {
      return Invalid(what + ": guest_mac " + *net.guest_mac + " is used by `" + other.iface_id +
                     "`");
    }
  }
  auto it = FindById(nets_, &NetworkInterface::iface_id, id);
  if (it != nets_.end()) {
    *it = std::move(net);
  } else {
    nets_.push_back(std::move(net));
  }
  return Ok();
}

Status VmResources::PatchNetworkInterface(const std::string& id, const json& body) {
  const std::string what = "network-interfaces/" + id;
  TERN_ASSIGN_OR_RETURN(Fields fields,
                        Fields::Of(body, what, {"iface_id", "rx_rate_limiter", "tx_rate_limiter"}));
  TERN_RETURN_IF_ERROR(CheckBodyId(fields, "iface_id", id, what));
  if (FindById(nets_, &NetworkInterface::iface_id, id) == nets_.end()) {
    return Invalid(what + ": no such network interface");
  }
  if (fields.Has("rx_rate_limiter") || fields.Has("tx_rate_limiter")) {
    return Invalid(what + ": rate limiters are not supported");
  }
  return Ok();
}

Status VmResources::SetMetrics(const json& body) {
  TERN_ASSIGN_OR_RETURN(Fields fields, Fields::Of(body, "metrics", {"metrics_path"}));
  MetricsConfig metrics;
  TERN_RETURN_IF_ERROR(fields.Read("metrics_path", metrics.metrics_path, true));
  if (metrics.metrics_path.empty()) return Invalid("metrics: empty metrics_path");
  metrics_ = std::move(metrics);
  return Ok();
}

Status VmResources::SetBalloon(const json& body) {
  TERN_ASSIGN_OR_RETURN(
      Fields fields,
      Fields::Of(body, "balloon", {"amount_mib", "deflate_on_oom", "stats_polling_interval_s"}));
  virtio::BalloonConfig balloon;
  uint64_t interval = 0;
  TERN_RETURN_IF_ERROR(fields.Read("amount_mib", balloon.amount_mib, true, 0, 1 << 20));
  TERN_RETURN_IF_ERROR(fields.Read("deflate_on_oom", balloon.deflate_on_oom, true));
  TERN_RETURN_IF_ERROR(fields.Read("stats_polling_interval_s", interval, false, 0, 65535));
  balloon.stats_polling_interval_s = static_cast<uint16_t>(interval);
  balloon_ = balloon;
  return Ok();
}

Status VmResources::PatchBalloon(const json& body) {
  TERN_ASSIGN_OR_RETURN(Fields fields, Fields::Of(body, "balloon", {"amount_mib"}));
  if (!balloon_) return Invalid("balloon: no balloon device configured (PUT /balloon first)");
  uint32_t amount = 0;
  TERN_RETURN_IF_ERROR(fields.Read("amount_mib", amount, true, 0, 1 << 20));
  balloon_->amount_mib = amount;
  return Ok();
}

Result<json> VmResources::BalloonJson() const {
  if (!balloon_) return Invalid("balloon: no balloon device configured");
  return BalloonConfigJson(*balloon_);
}

Status VmResources::SetVsock(const json& body) {
  TERN_ASSIGN_OR_RETURN(Fields fields,
                        Fields::Of(body, "vsock", {"guest_cid", "uds_path", "vsock_id"}));
  virtio::VsockOptions vsock;
  std::string ignored_id;
  TERN_RETURN_IF_ERROR(fields.Read("guest_cid", vsock.guest_cid, true, 3, 0xfffffffe));
  TERN_RETURN_IF_ERROR(fields.Read("uds_path", vsock.uds_path, true));
  TERN_RETURN_IF_ERROR(fields.Read("vsock_id", ignored_id));
  if (vsock.uds_path.empty() || vsock.uds_path.size() > 107) {
    return Invalid("vsock: uds_path must be 1-107 bytes (a Unix socket path)");
  }
  vsock_ = std::move(vsock);
  return Ok();
}

Status VmResources::SetSmbios(const json& body) {
  TERN_ASSIGN_OR_RETURN(
      Fields fields, Fields::Of(body, "smbios",
                                {"manufacturer", "product_name", "version", "serial_number", "uuid",
                                 "sku_number", "family"}));
  x86_64::SmbiosSystemInfo info;
  TERN_RETURN_IF_ERROR(fields.Read("manufacturer", info.manufacturer));
  TERN_RETURN_IF_ERROR(fields.Read("product_name", info.product_name));
  TERN_RETURN_IF_ERROR(fields.Read("version", info.version));
  TERN_RETURN_IF_ERROR(fields.Read("serial_number", info.serial_number));
  TERN_RETURN_IF_ERROR(fields.Read("sku_number", info.sku_number));
  TERN_RETURN_IF_ERROR(fields.Read("family", info.family));
  std::string uuid;
  TERN_RETURN_IF_ERROR(fields.Read("uuid", uuid));
  if (!uuid.empty()) {
    auto parsed = x86_64::ParseSmbiosUuid(uuid);
    if (!parsed.ok()) return Invalid("smbios: " + parsed.error().message());
    info.uuid = *parsed;
  }
  if (Status valid = x86_64::ValidateSmbiosSystemInfo(info); !valid.ok()) {
    return Invalid("smbios: " + valid.error().message());
  }
  smbios_ = std::move(info);
  smbios_uuid_ = uuid;
  return Ok();
}

json BalloonConfigJson(const virtio::BalloonConfig& config) {
  return {{"amount_mib", config.amount_mib},
          {"deflate_on_oom", config.deflate_on_oom},
          {"stats_polling_interval_s", config.stats_polling_interval_s}};
}

Status VmResources::Load(const json& config) {
  TERN_ASSIGN_OR_RETURN(Fields fields,
                        Fields::Of(config, "config",
                                   {"boot-source", "machine-config", "drives", "network-interfaces",
                                    "balloon", "vsock", "metrics", "smbios"}));
  VmResources next = *this;  // all or nothing
  if (fields.Has("boot-source")) TERN_RETURN_IF_ERROR(next.SetBootSource(config["boot-source"]));
  if (fields.Has("machine-config")) {
    TERN_RETURN_IF_ERROR(next.SetMachineConfig(config["machine-config"], false));
  }
  for (const char* list : {"drives", "network-interfaces"}) {
    if (!fields.Has(list)) continue;
    if (!config[list].is_array())
      return Invalid(std::string("config: `") + list + "` must be a list");
    for (const json& item : config[list]) {
      bool drive = std::string_view(list) == "drives";
      const char* key = drive ? "drive_id" : "iface_id";
      if (!item.is_object() || !item.contains(key) || !item[key].is_string()) {
        return Invalid(std::string("config: every item of `") + list + "` needs a `" + key + "`");
      }
      std::string id = item[key].get<std::string>();
      TERN_RETURN_IF_ERROR(drive ? next.PutDrive(id, item) : next.PutNetworkInterface(id, item));
    }
  }
  if (fields.Has("metrics")) TERN_RETURN_IF_ERROR(next.SetMetrics(config["metrics"]));
  if (fields.Has("balloon")) TERN_RETURN_IF_ERROR(next.SetBalloon(config["balloon"]));
  if (fields.Has("vsock")) TERN_RETURN_IF_ERROR(next.SetVsock(config["vsock"]));
  if (fields.Has("smbios")) TERN_RETURN_IF_ERROR(next.SetSmbios(config["smbios"]));
  *this = std::move(next);
  return Ok();
}

json VmResources::MachineConfigJson() const {
  return {{"vcpu_count", machine_.vcpu_count},
          {"mem_size_mib", machine_.mem_size_mib},
          {"smt", machine_.smt},
          {"track_dirty_pages", machine_.track_dirty_pages},
          {"cpu_template", "None"},
          {"huge_pages", "None"}};
}

json VmResources::ToJson() const {
  json config = {{"machine-config", MachineConfigJson()},
                 {"drives", json::array()},
                 {"network-interfaces", json::array()}};
  if (boot_source_) {
    json source = {{"kernel_image_path", boot_source_->kernel_image_path},
                   {"boot_args", boot_source_->boot_args.value_or(base_.cmdline)}};
    if (!boot_source_->initrd_path.empty()) source["initrd_path"] = boot_source_->initrd_path;
    config["boot-source"] = source;
  }
  for (const Drive& drive : drives_) config["drives"].push_back(DriveJson(drive));
  for (const NetworkInterface& net : nets_) config["network-interfaces"].push_back(NetJson(net));
  if (metrics_) config["metrics"] = {{"metrics_path", metrics_->metrics_path}};
  if (balloon_) config["balloon"] = BalloonConfigJson(*balloon_);
  if (vsock_) config["vsock"] = {{"guest_cid", vsock_->guest_cid}, {"uds_path", vsock_->uds_path}};
  if (smbios_) {
    config["smbios"] = {{"manufacturer", smbios_->manufacturer},
                        {"product_name", smbios_->product_name},
                        {"version", smbios_->version},
                        {"serial_number", smbios_->serial_number},
                        {"uuid", smbios_uuid_},
                        {"sku_number", smbios_->sku_number},
                        {"family", smbios_->family}};
  }
  return config;
}

Result<VmConfig> VmResources::BuildVmConfig() const {
  if (!boot_source_) return Invalid("no boot source: PUT /boot-source first");
  VmConfig config = base_;
  config.kernel_path = boot_source_->kernel_image_path;
  config.initrd_path = boot_source_->initrd_path;
  if (boot_source_->boot_args) config.cmdline = *boot_source_->boot_args;
  config.vcpus = machine_.vcpu_count;
  config.memory_mib = machine_.mem_size_mib;
  config.track_dirty_pages = machine_.track_dirty_pages;
  if (smbios_) config.smbios = *smbios_;
  std::vector<const Drive*> ordered;
  for (const Drive& d : drives_) {
    if (d.is_root_device)
      ordered.insert(ordered.begin(), &d);
    else
      ordered.push_back(&d);
  }
  for (const Drive* d : ordered) {
    config.disks.push_back(virtio::BlockOptions{.path = d->path_on_host,
                                                .read_only = d->is_read_only,
                                                .serial = d->drive_id,
                                                .allow_io_uring = d->io_engine == "Async"});
    if (d->is_root_device) {
      config.cmdline += d->partuuid ? " root=PARTUUID=" + *d->partuuid : " root=/dev/vda";
      config.cmdline += d->is_read_only ? " ro" : " rw";
    }
  }
  for (const NetworkInterface& n : nets_) {
    NetConfig net{.id = n.iface_id, .tap = n.host_dev_name, .mac = std::nullopt};
    if (n.guest_mac) net.mac = net::ParseMacAddress(*n.guest_mac).value();
    config.nets.push_back(std::move(net));
  }
  if (balloon_) config.balloon = balloon_;
  if (vsock_) config.vsock = vsock_;
  return config;
}

}  // namespace tern
