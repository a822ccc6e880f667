// EC2 key-pair material (see key_material.h). The SSH wire format (RFC 4251 §5: uint32,
// string, mpint) is written and read here with bounds checks; all cryptography is OpenSSL's.
#include "cloud/key_material.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <memory>
#include <sstream>

#include "cloud/base64.h"
#include "cloud/ec2_error.h"

namespace tern::cloud {
namespace {

using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using BnPtr = std::unique_ptr<BIGNUM, decltype(&BN_free)>;

Ec2Error BadFormat() {
  return Ec2Error("InvalidKey.Format", "Key is not in valid OpenSSH public key format");
}

std::string Unbase64(const std::string& text) {
  std::optional<std::string> bytes = Base64Decode(text);
  if (!bytes || bytes->empty()) throw BadFormat();
  return *bytes;
}

std::string Digest(const EVP_MD* md, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), out, &size, md, nullptr);
  return std::string(reinterpret_cast<char*>(out), size);
}

std::string ColonHex(const std::string& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    if (!out.empty()) out += ':';
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

void PutU32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>(value >> shift);
}

void PutString(std::string& out, const std::string& value) {
  PutU32(out, static_cast<uint32_t>(value.size()));
  out += value;
}

void PutMpint(std::string& out, const BIGNUM* bn) {
  std::string mpi(BN_bn2mpi(bn, nullptr), '\0');  // OpenSSL's MPI format is SSH's mpint
  BN_bn2mpi(bn, reinterpret_cast<unsigned char*>(mpi.data()));
  out += mpi;
}

// Reads SSH wire fields from a blob; throws InvalidKey.Format past its end.
class WireReader {
 public:
  explicit WireReader(const std::string& blob) : blob_(blob) {}
  std::string String() {
    if (blob_.size() - pos_ < 4) throw BadFormat();
    uint32_t size = 0;
    for (int i = 0; i < 4; ++i) size = (size << 8) | static_cast<unsigned char>(blob_[pos_ + i]);
    pos_ += 4;
    if (blob_.size() - pos_ < size) throw BadFormat();
    std::string value = blob_.substr(pos_, size);
    pos_ += size;
    return value;
  }
  bool AtEnd() const { return pos_ == blob_.size(); }

 private:
  const std::string& blob_;
  size_t pos_ = 0;
};

BnPtr GetBn(EVP_PKEY* key, const char* name) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(key, name, &bn);
  return BnPtr(bn, BN_free);
}

std::string Encode(EVP_PKEY* key, int selection, const char* format, const char* structure) {
  OSSL_ENCODER_CTX* ctx = OSSL_ENCODER_CTX_new_for_pkey(key, selection, format, structure, nullptr);
  unsigned char* data = nullptr;
  size_t size = 0;
  bool ok = ctx && OSSL_ENCODER_to_data(ctx, &data, &size) == 1;
  OSSL_ENCODER_CTX_free(ctx);
  if (!ok) throw Ec2Error::Internal("encoding a key failed");
  std::string out(reinterpret_cast<char*>(data), size);
  OPENSSL_free(data);
  return out;
}

std::string RsaBlob(EVP_PKEY* key) {
  std::string blob;
  PutString(blob, "ssh-rsa");
  PutMpint(blob, GetBn(key, OSSL_PKEY_PARAM_RSA_E).get());
  PutMpint(blob, GetBn(key, OSSL_PKEY_PARAM_RSA_N).get());
  return blob;
}

std::string Ed25519Fingerprint(const std::string& blob) {
  std::string b64 = Base64Encode(Digest(EVP_sha256(), blob));
  return b64;  // with its "=" padding, as EC2 shows it
}

// openssh-key-v1, unencrypted (OpenSSH's PROTOCOL.key), wrapped in its PEM-style armour.
std::string OpensshPrivateKey(const std::string& public_blob, const std::string& public_raw,
                              const std::string& private_raw) {
  uint32_t check = 0;
  RAND_bytes(reinterpret_cast<unsigned char*>(&check), sizeof(check));
  std::string section;
  PutU32(section, check);
  PutU32(section, check);
  PutString(section, "ssh-ed25519");
  PutString(section, public_raw);
  PutString(section, private_raw + public_raw);
  PutString(section, "");  // comment
  for (char pad = 1; section.size() % 8 != 0; ++pad) section += pad;
  std::string body = std::string("openssh-key-v1") + '\0';
  PutString(body, "none");
  PutString(body, "none");
  PutString(body, "");
  PutU32(body, 1);
  PutString(body, public_blob);
  PutString(body, section);
  std::string b64 = Base64Encode(body), out = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
  for (size_t i = 0; i < b64.size(); i += 70) out += b64.substr(i, 70) + "\n";
  return out + "-----END OPENSSH PRIVATE KEY-----\n";
}

KeyMaterial NewRsa() {
  PkeyPtr key(EVP_RSA_gen(2048), EVP_PKEY_free);
  if (!key) throw Ec2Error::Internal("RSA key generation failed");
  KeyMaterial m;
  m.key_type = "rsa";
  m.private_key = Encode(key.get(), OSSL_KEYMGMT_SELECT_KEYPAIR, "PEM", "type-specific");
  m.public_key = "ssh-rsa " + Base64Encode(RsaBlob(key.get()));
  std::string pkcs8 = Encode(key.get(), OSSL_KEYMGMT_SELECT_KEYPAIR, "DER", "PrivateKeyInfo");
  m.fingerprint = ColonHex(Digest(EVP_sha1(), pkcs8));
  return m;
}

KeyMaterial NewEd25519() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"), EVP_PKEY_free);
  if (!key) throw Ec2Error::Internal("ED25519 key generation failed");
  std::string pub(32, '\0'), priv(32, '\0');
  size_t size = 32;
  EVP_PKEY_get_raw_public_key(key.get(), reinterpret_cast<unsigned char*>(pub.data()), &size);
  size = 32;
  EVP_PKEY_get_raw_private_key(key.get(), reinterpret_cast<unsigned char*>(priv.data()), &size);
  std::string blob;
  PutString(blob, "ssh-ed25519");
  PutString(blob, pub);
  return {"ed25519", OpensshPrivateKey(blob, pub, priv), "ssh-ed25519 " + Base64Encode(blob),
          Ed25519Fingerprint(blob)};
}

KeyMaterial ImportRsa(const std::string& blob, WireReader& reader) {
  std::string e = reader.String(), n = reader.String();
  if (!reader.AtEnd() || e.empty() || n.empty()) throw BadFormat();
  BnPtr bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), e.size(), nullptr),
             BN_free);
  BnPtr bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), n.size(), nullptr),
             BN_free);
  int bits = BN_num_bits(bn_n.get());
  if (bits != 1024 && bits != 2048 && bits != 4096) throw BadFormat();
  OSSL_PARAM_BLD* build = OSSL_PARAM_BLD_new();
  OSSL_PARAM_BLD_push_BN(build, OSSL_PKEY_PARAM_RSA_N, bn_n.get());
  OSSL_PARAM_BLD_push_BN(build, OSSL_PKEY_PARAM_RSA_E, bn_e.get());
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(build);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr);
  EVP_PKEY* raw = nullptr;
  bool ok = ctx && EVP_PKEY_fromdata_init(ctx) == 1 &&
            EVP_PKEY_fromdata(ctx, &raw, EVP_PKEY_PUBLIC_KEY, params) == 1;
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(build);
  PkeyPtr key(raw, EVP_PKEY_free);
  if (!ok) throw BadFormat();
  std::string der =
      Encode(key.get(), OSSL_KEYMGMT_SELECT_PUBLIC_KEY, "DER", "SubjectPublicKeyInfo");
  return {"rsa", "", "ssh-rsa " + Base64Encode(blob), ColonHex(Digest(EVP_md5(), der))};
}

}  // namespace

KeyMaterial CreateKeyMaterial(const std::string& key_type) {
  if (key_type == "rsa") return NewRsa();
  if (key_type == "ed25519") return NewEd25519();
  throw Ec2Error::InvalidParameterValue("KeyType", key_type, "Expected rsa or ed25519.");
}

KeyMaterial ImportPublicKey(const std::string& text) {
  std::istringstream words(text);
  std::string type, encoded;
  words >> type >> encoded;
  if (type != "ssh-rsa" && type != "ssh-ed25519") throw BadFormat();
  std::string blob = Unbase64(encoded);
  WireReader reader(blob);
  if (reader.String() != type) throw BadFormat();
  if (type == "ssh-rsa") return ImportRsa(blob, reader);
  std::string pub = reader.String();
  if (pub.size() != 32 || !reader.AtEnd()) throw BadFormat();
  return {"ed25519", "", "ssh-ed25519 " + Base64Encode(blob), Ed25519Fingerprint(blob)};
}

}  // namespace tern::cloud
