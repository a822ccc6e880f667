// Base64 (RFC 4648, standard alphabet, padded) with OpenSSL's EVP codec, for EC2's blobs
// (UserData, PublicKeyMaterial, console output) and key material.
#pragma once

#include <optional>
#include <string>

namespace tern::cloud {

std::string Base64Encode(const std::string& bytes);

// The decoded bytes; nullopt for text that is not padded base64 (whitespace is ignored).
std::optional<std::string> Base64Decode(std::string text);

}  // namespace tern::cloud
