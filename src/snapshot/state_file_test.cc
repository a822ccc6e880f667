// Unit tests for snapshot state files: round trips (with binary values) and every way a file
// can be refused.
#include "snapshot/state_file.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "snapshot/test_util.h"

namespace tern::snapshot {
namespace {

using nlohmann::json;
using testing::Exists;
using testing::ReadBytes;
using testing::ScratchDir;
using testing::WriteBytes;

json SampleState() {
  return json{
      {"vcpus", json::array({{{"id", 0}, {"rip", 0xffffffff81000000ull}, {"regs", {1, 2, 3}}},
                             {{"id", 1}, {"rip", 0}, {"regs", json::array()}}})},
      {"devices", {{"serial", {{"lcr", 3}}}, {"name", "tern"}, {"ratio", 0.5}, {"on", true}}},
      {"xsave", json::binary({0x00, 0xff, 0x10, 0x20})},
      {"lapic", json::binary(std::vector<uint8_t>(1024, 0xab), 7)},
      {"nothing", nullptr},
  };
}

// A state file by hand: header fields and payload as given.
std::vector<uint8_t> RawFile(uint32_t version, uint64_t payload_bytes, uint32_t crc,
                             const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> bytes(kStateHeaderBytes + payload.size());
  std::memcpy(bytes.data(), "TERNSNAP", 8);
  std::memcpy(bytes.data() + 8, &version, 4);
  std::memcpy(bytes.data() + 16, &payload_bytes, 8);
  std::memcpy(bytes.data() + 24, &crc, 4);
  std::copy(payload.begin(), payload.end(), bytes.begin() + kStateHeaderBytes);
  return bytes;
}

uint32_t Crc(const std::vector<uint8_t>& bytes) {
  return static_cast<uint32_t>(::crc32(0, bytes.data(), static_cast<uInt>(bytes.size())));
}

// The error of reading `bytes` as a state file.
Error ReadError(const ScratchDir& dir, const std::vector<uint8_t>& bytes) {
  const std::string path = dir.File("bad");
  WriteBytes(path, bytes);
  Result<json> state = ReadStateFile(path);
  EXPECT_FALSE(state.ok());
  return state.ok() ? Error("read succeeded") : state.error();
}

bool Contains(const Error& error, const std::string& text) {
  return error.message().find(text) != std::string::npos;
}

TEST(StateFileTest, RoundTripsWithBinaryValues) {
  ScratchDir dir;
  const std::string path = dir.File("vm.state");
  ASSERT_TRUE(WriteStateFile(path, SampleState()).ok());
  EXPECT_FALSE(Exists(path + ".tmp"));
  Result<json> state = ReadStateFile(path);
  ASSERT_TRUE(state.ok()) << state.error().ToString();
  EXPECT_EQ(*state, SampleState());
  EXPECT_TRUE((*state)["xsave"].is_binary());
  EXPECT_EQ((*state)["lapic"].get_binary().subtype(), 7);
  // The header as documented.
  std::vector<uint8_t> bytes = ReadBytes(path);
  std::vector<uint8_t> payload = json::to_cbor(SampleState());
  EXPECT_EQ(bytes, RawFile(1, payload.size(), Crc(payload), payload));
  // Writing again replaces the file.
  ASSERT_TRUE(WriteStateFile(path, json{{"a", 1}}).ok());
  EXPECT_EQ(*ReadStateFile(path), (json{{"a", 1}}));
}

TEST(StateFileTest, RefusesShortFilesAndOtherFiles) {
  ScratchDir dir;
  Error too_short = ReadError(dir, std::vector<uint8_t>(kStateHeaderBytes - 1));
  EXPECT_EQ(too_short.errno_value(), EINVAL);
  EXPECT_TRUE(Contains(too_short, "too short")) << too_short.message();
  std::vector<uint8_t> bytes = RawFile(1, 0, Crc({}), {});
  bytes[3] = 'X';
  Error magic = ReadError(dir, bytes);
  EXPECT_EQ(magic.errno_value(), EINVAL);
  EXPECT_TRUE(Contains(magic, "not a Tern snapshot")) << magic.message();
  Result<json> missing = ReadStateFile(dir.File("missing"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().errno_value(), ENOENT);
}

TEST(StateFileTest, RefusesOtherVersions) {
  ScratchDir dir;
  std::vector<uint8_t> payload = json::to_cbor(json{{"a", 1}});
  Error error = ReadError(dir, RawFile(2, payload.size(), Crc(payload), payload));
  EXPECT_EQ(error.errno_value(), EINVAL);
  EXPECT_EQ(error.message(), "snapshot format version 2; this tern-vmm reads version 1");
}

TEST(StateFileTest, RefusesTruncatedAndTrailingPayloads) {
  ScratchDir dir;
  std::vector<uint8_t> payload = json::to_cbor(SampleState());
  std::vector<uint8_t> bytes = RawFile(1, payload.size(), Crc(payload), payload);
  std::vector<uint8_t> truncated(bytes.begin(), bytes.end() - 1);
  Error short_payload = ReadError(dir, truncated);
  EXPECT_EQ(short_payload.errno_value(), EINVAL);
  EXPECT_TRUE(Contains(short_payload, "truncated")) << short_payload.message();
  std::vector<uint8_t> trailing = bytes;
  trailing.push_back(0);
  Error long_payload = ReadError(dir, trailing);
  EXPECT_EQ(long_payload.errno_value(), EINVAL);
  EXPECT_TRUE(Contains(long_payload, "trailing")) << long_payload.message();
}

TEST(StateFileTest, RefusesCorruptPayloads) {
  ScratchDir dir;
  std::vector<uint8_t> payload = json::to_cbor(SampleState());
  std::vector<uint8_t> bytes = RawFile(1, payload.size(), Crc(payload), payload);
  bytes[kStateHeaderBytes + payload.size() / 2] ^= 0x01;
  Error crc = ReadError(dir, bytes);
  EXPECT_EQ(crc.errno_value(), EINVAL);
  EXPECT_EQ(crc.message(), "snapshot state file is corrupt: CRC32 mismatch");
  // A correct checksum of bytes that are not CBOR (a map of 5 entries that ends early).
  std::vector<uint8_t> not_cbor = {0xa5, 0x61, 'a'};
  Error cbor = ReadError(dir, RawFile(1, not_cbor.size(), Crc(not_cbor), not_cbor));
  EXPECT_EQ(cbor.errno_value(), EINVAL);
  EXPECT_TRUE(Contains(cbor, "CBOR")) << cbor.message();
  EXPECT_EQ(cbor.message().find('\n'), std::string::npos);
}

TEST(StateFileTest, RefusesHugePayloadLengthsBeforeAllocating) {
  ScratchDir dir;
  for (uint64_t length : {kMaxStatePayloadBytes + 1, uint64_t{1} << 62, UINT64_MAX}) {
    Error error = ReadError(dir, RawFile(1, length, 0, {1, 2, 3}));
    EXPECT_EQ(error.errno_value(), EINVAL);
    EXPECT_TRUE(Contains(error, "exceeds the limit")) << error.message();
  }
}

TEST(StateFileTest, WriteRefusesOversizedState) {
  ScratchDir dir;
  json state = {{"blob", json::binary(std::vector<uint8_t>(kMaxStatePayloadBytes))}};
  Status status = WriteStateFile(dir.File("vm.state"), state);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().errno_value(), EINVAL);
  EXPECT_FALSE(Exists(dir.File("vm.state")));
  EXPECT_FALSE(Exists(dir.File("vm.state.tmp")));
}

TEST(StateFileTest, WriteIntoAMissingDirectoryFails) {
  ScratchDir dir;
  Status status = WriteStateFile(dir.File("missing/vm.state"), json::object());
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().errno_value(), ENOENT);
}

}  // namespace
}  // namespace tern::snapshot
