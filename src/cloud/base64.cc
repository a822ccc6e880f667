// Base64 with OpenSSL (see base64.h).
#include "cloud/base64.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>

namespace tern::cloud {

std::string Base64Encode(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  out.resize(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                             reinterpret_cast<const unsigned char*>(bytes.data()),
                             static_cast<int>(bytes.size())));
  return out;
}

std::optional<std::string> Base64Decode(std::string text) {
  text.erase(std::remove_if(text.begin(), text.end(), ::isspace), text.end());
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out(3 * text.size() / 4, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  size_t pad = text.size() >= 2 ? (text.end()[-1] == '=') + (text.end()[-2] == '=') : 0;
  out.resize(n - pad);
  return out;
}

}  // namespace tern::cloud
