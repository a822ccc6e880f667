// EC2 key-pair material with OpenSSL 3: new RSA (2048-bit, private key as PKCS#1 PEM) and
// ED25519 (private key in OpenSSH's openssh-key-v1 format) key pairs, imported OpenSSH public
// keys ("ssh-rsa AAAA... comment", "ssh-ed25519 ..."), and EC2's fingerprints
// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/verify-keys.html): SHA-1 of the PKCS#8
// private key for RSA keys EC2 made, MD5 of the public key's DER for imported RSA keys, and the
// base64 SHA-256 of the OpenSSH public key blob for ED25519. Thread-safe (no shared state).
#pragma once

#include <string>

namespace tern::cloud {

struct KeyMaterial {
  std::string key_type;     // "rsa" | "ed25519"
  std::string private_key;  // PEM text (empty for imported keys)
  std::string public_key;   // OpenSSH one-line format, without comment
  std::string fingerprint;  // EC2's
};

// A new key pair of `key_type` ("rsa" or "ed25519"; throws InvalidParameterValue otherwise).
KeyMaterial CreateKeyMaterial(const std::string& key_type);

// ImportKeyPair's PublicKeyMaterial (already base64-decoded): an OpenSSH public key line of
// type ssh-rsa (1024 to 4096 bits) or ssh-ed25519. Throws InvalidKey.Format for anything else,
// including truncated or inconsistent key blobs.
KeyMaterial ImportPublicKey(const std::string& text);

}  // namespace tern::cloud
