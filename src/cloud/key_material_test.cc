// Unit tests for EC2 key material: generated keys are usable by OpenSSH (ssh-keygen, when this
// machine has it), imports round-trip, fingerprints have EC2's shapes, malformed keys refused.
#include "cloud/key_material.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cloud/ec2_error.h"

namespace tern::cloud {
namespace {

bool HaveSshKeygen() { return ::access("/usr/bin/ssh-keygen", X_OK) == 0; }

std::string Output(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  std::array<char, 4096> buffer;
  while (size_t n = std::fread(buffer.data(), 1, buffer.size(), pipe)) out.append(buffer.data(), n);
  ::pclose(pipe);
  return out;
}

// The public key ssh-keygen derives from `private_key`, without its comment.
std::string PublicFromPrivate(const std::string& private_key) {
  std::string path = "/tmp/key-material-test-" + std::to_string(::getpid());
  std::ofstream(path) << private_key;
  ::chmod(path.c_str(), 0600);
  std::string out = Output("ssh-keygen -y -f " + path + " 2>&1");
  std::filesystem::remove(path);
  std::istringstream words(out);
  std::string type, key;
  words >> type >> key;
  return type + " " + key;
}

std::string CodeOf(const std::string& text) {
  try {
    ImportPublicKey(text);
    return "ok";
  } catch (const Ec2Error& e) {
    return e.code();
  }
}

TEST(KeyMaterialTest, RsaKeysAreOpensshCompatible) {
  KeyMaterial rsa = CreateKeyMaterial("rsa");
  EXPECT_EQ(rsa.private_key.rfind("-----BEGIN RSA PRIVATE KEY-----", 0), 0u);
  EXPECT_EQ(rsa.fingerprint.size(), 59u);  // SHA-1, colon-separated
  if (HaveSshKeygen()) {
    EXPECT_EQ(PublicFromPrivate(rsa.private_key), rsa.public_key);
  }
  KeyMaterial imported = ImportPublicKey(rsa.public_key + " me@host\n");
  EXPECT_EQ(imported.public_key, rsa.public_key);
  EXPECT_EQ(imported.fingerprint.size(), 47u);  // MD5, colon-separated
  EXPECT_TRUE(imported.private_key.empty());
}

TEST(KeyMaterialTest, Ed25519KeysAreOpensshCompatible) {
  KeyMaterial ed = CreateKeyMaterial("ed25519");
  EXPECT_EQ(ed.private_key.rfind("-----BEGIN OPENSSH PRIVATE KEY-----", 0), 0u);
  EXPECT_EQ(ImportPublicKey(ed.public_key).fingerprint, ed.fingerprint);
  if (!HaveSshKeygen()) return;
  EXPECT_EQ(PublicFromPrivate(ed.private_key), ed.public_key);
  std::string path = "/tmp/key-material-test-pub-" + std::to_string(::getpid());
  std::ofstream(path) << ed.public_key << "\n";
  std::string listed = Output("ssh-keygen -l -E sha256 -f " + path);
  std::filesystem::remove(path);
  std::string unpadded = ed.fingerprint.substr(0, ed.fingerprint.find('='));
  EXPECT_NE(listed.find("SHA256:" + unpadded + " "), std::string::npos) << listed;
}

TEST(KeyMaterialTest, MalformedKeysAreInvalidKeyFormat) {
  KeyMaterial ed = CreateKeyMaterial("ed25519");
  std::string b64 = ed.public_key.substr(12);
  EXPECT_EQ(CodeOf(""), "InvalidKey.Format");
  EXPECT_EQ(CodeOf("ssh-dss AAAA"), "InvalidKey.Format");
  EXPECT_EQ(CodeOf("ssh-rsa " + b64), "InvalidKey.Format");  // type mismatch inside
  EXPECT_EQ(CodeOf("ssh-ed25519 " + b64.substr(0, 40)), "InvalidKey.Format");  // truncated
  EXPECT_EQ(CodeOf("ssh-ed25519 !!!!"), "InvalidKey.Format");
  EXPECT_EQ(CodeOf("ssh-ed25519 /////////w=="), "InvalidKey.Format");  // huge length field
  EXPECT_THROW(CreateKeyMaterial("dsa"), Ec2Error);
}

}  // namespace
}  // namespace tern::cloud
