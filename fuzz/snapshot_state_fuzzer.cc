// libFuzzer target for snapshot state files (src/snapshot/state_file.h) and the state readers a
// restore feeds them to: the fuzzer input is a whole state file (header, CRC, CBOR payload) or,
// with the header skipped, the CBOR payload alone. A snapshot file is user input: reading and
// restoring it must never crash, whatever it holds; it either restores or returns an error.
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "base/guest_memory.h"
#include "snapshot/state_file.h"
#include "virtio/balloon.h"
#include "virtio/queue.h"
#include "virtio/vsock.h"

namespace tern {
namespace {

const GuestMemory& Memory() {
  static const GuestMemory* memory = [] {
    RegionSpec specs[] = {{0, 64 * 1024}};
    Result<GuestMemory> created = GuestMemory::Create(specs);
    if (!created.ok()) __builtin_trap();
    return new GuestMemory(std::move(created).value());
  }();
  return *memory;
}

// Every state reader a restore runs on device state: each gets the document and each of its
// members (a hostile file can put anything anywhere).
void Restore(const nlohmann::json& state) {
  virtio::Queue queue(256);
  (void)queue.RestoreState(state, Memory());
  auto balloon = virtio::Balloon::Create(virtio::BalloonConfig{.stats_polling_interval_s = 1}, 64);
  if (balloon.ok()) (void)(*balloon)->RestoreState(state);
  auto vsock = virtio::VsockDevice::Create(virtio::VsockOptions{.uds_path = ""});
  if (vsock.ok()) (void)(*vsock)->RestoreState(state);
}

}  // namespace
}  // namespace tern

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using nlohmann::json;
  // The whole file through ReadStateFile (memfd: no disk traffic).
  int fd = memfd_create("state", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (write(fd, data, size) == static_cast<ssize_t>(size)) {
    auto read = tern::snapshot::ReadStateFile("/proc/self/fd/" + std::to_string(fd));
    if (read.ok()) tern::Restore(*read);
  }
  close(fd);
  // The payload alone, as a restore sees it after the checks. nlohmann's CBOR reader throws
  // for some malformed sizes even with allow_exceptions false; ReadStateFile catches that too.
  json payload;
  try {
    payload = json::from_cbor(data, data + size, true, false, json::cbor_tag_handler_t::ignore);
  } catch (const json::exception&) {
    return 0;
  }
  if (payload.is_discarded()) return 0;
  tern::Restore(payload);
  if (payload.is_object() || payload.is_array()) {
    for (const json& member : payload) tern::Restore(member);
  }
  return 0;
}
