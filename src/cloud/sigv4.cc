// SigV4 verification and signing (see sigv4.h).
#include "cloud/sigv4.h"

#include <httplib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstdlib>
#include <map>

#include "cloud/ec2_error.h"

namespace tern::cloud {
namespace {

constexpr const char* kAlgorithm = "AWS4-HMAC-SHA256";
constexpr std::time_t kMaxSkewSeconds = 15 * 60;

std::string Hex(const unsigned char* bytes, size_t size) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    out += kHex[bytes[i] >> 4];
    out += kHex[bytes[i] & 0xf];
  }
  return out;
}

std::string Hmac(const std::string& key, const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest, &size);
  return std::string(reinterpret_cast<char*>(digest), size);
}

// URI-encodes per SigV4: unreserved characters (A-Z a-z 0-9 - . _ ~) stay, the rest is %XX
// (uppercase); '/' stays when `keep_slash`.
std::string UriEncode(const std::string& text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
        (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

std::string CanonicalQuery(const std::string& query) {
  std::vector<std::pair<std::string, std::string>> pairs;
  size_t start = 0;
  while (start <= query.size() && !query.empty()) {
    size_t end = query.find('&', start);
    if (end == std::string::npos) end = query.size();
    std::string item = query.substr(start, end - start);
    if (!item.empty()) {
      size_t eq = item.find('=');
      std::string key = item.substr(0, eq);
      std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
      pairs.emplace_back(UriEncode(httplib::detail::decode_url(key, false), false),
                         UriEncode(httplib::detail::decode_url(value, false), false));
    }
    start = end + 1;
  }
  std::sort(pairs.begin(), pairs.end());
  std::string out;
  for (const auto& [key, value] : pairs) out += (out.empty() ? "" : "&") + key + "=" + value;
  return out;
}

std::string Lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), ::tolower);
  return text;
}

// The value of a header, trimmed, inner runs of spaces collapsed; several headers of one name
// joined with ','.
std::string HeaderValue(const HttpRequest& request, const std::string& lower_name) {
  std::string joined;
  bool found = false;
  for (const auto& [name, value] : request.headers) {
    if (Lower(name) != lower_name) continue;
    std::string clean;
    for (char c : value) {
      if (c == ' ' && (clean.empty() || clean.back() == ' ')) continue;
      clean += c;
    }
    while (!clean.empty() && clean.back() == ' ') clean.pop_back();
    joined += (found ? "," : "") + clean;
    found = true;
  }
  return joined;
}

bool HasHeader(const HttpRequest& request, const std::string& lower_name) {
  return std::any_of(request.headers.begin(), request.headers.end(),
                     [&](const auto& h) { return Lower(h.first) == lower_name; });
}

std::time_t ParseAmzDate(const std::string& text) {
  std::tm tm{};
  if (text.size() != 16 || !strptime(text.c_str(), "%Y%m%dT%H%M%SZ", &tm)) return -1;
  return timegm(&tm);
}

std::string FormatAmzDate(std::time_t now) {
  char buffer[17];
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(buffer, sizeof(buffer), "%Y%m%dT%H%M%SZ", &tm);
  return buffer;
}

Ec2Error Incomplete(const std::string& why) {
  return Ec2Error("IncompleteSignature", "Authorization header is malformed: " + why);
}

// The Authorization header's fields.
struct Authorization {
  std::string access_key_id, date, region, service;
  std::vector<std::string> signed_headers;
  std::string signature;
};

Authorization ParseAuthorization(const std::string& header) {
  if (header.rfind(std::string(kAlgorithm) + " ", 0) != 0) {
    throw Incomplete("the algorithm must be " + std::string(kAlgorithm));
  }
  std::map<std::string, std::string> fields;
  std::string rest = header.substr(std::string(kAlgorithm).size() + 1);
  size_t start = 0;
  while (start < rest.size()) {
    size_t end = rest.find(',', start);
    if (end == std::string::npos) end = rest.size();
    std::string item = rest.substr(start, end - start);
    item.erase(0, item.find_first_not_of(' '));
    size_t eq = item.find('=');
    if (eq == std::string::npos) throw Incomplete("'" + item + "' is not name=value");
    fields[item.substr(0, eq)] = item.substr(eq + 1);
    start = end + 1;
  }
  for (const char* name : {"Credential", "SignedHeaders", "Signature"}) {
    if (!fields.count(name)) throw Incomplete(std::string("no ") + name);
  }
  Authorization auth;
  std::vector<std::string> scope;
  std::stringstream credential(fields["Credential"]);
  for (std::string part; std::getline(credential, part, '/');) scope.push_back(part);
  if (scope.size() != 5 || scope[4] != "aws4_request") {
    throw Incomplete("Credential must be KEY/DATE/REGION/SERVICE/aws4_request");
  }
  auth.access_key_id = scope[0];
  auth.date = scope[1];
  auth.region = scope[2];
  auth.service = scope[3];
  std::stringstream names(fields["SignedHeaders"]);
  for (std::string name; std::getline(names, name, ';');) auth.signed_headers.push_back(name);
  auth.signature = fields["Signature"];
  return auth;
}

}  // namespace

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr);
  return Hex(digest, size);
}

std::string SigV4Signature(const HttpRequest& request,
                           const std::vector<std::string>& signed_headers,
                           const std::string& amz_date, const std::string& region,
                           const std::string& service, const std::string& secret_access_key) {
  std::string headers, names;
  for (const std::string& name : signed_headers) {
    headers += name + ":" + HeaderValue(request, name) + "\n";
    names += (names.empty() ? "" : ";") + name;
  }
  std::string path = request.path.empty() ? "/" : request.path;
  std::string canonical = request.method + "\n" + UriEncode(path, true) + "\n" +
                          CanonicalQuery(request.query) + "\n" + headers + "\n" + names + "\n" +
                          Sha256Hex(request.body);
  std::string date = amz_date.substr(0, 8);
  std::string scope = date + "/" + region + "/" + service + "/aws4_request";
  std::string to_sign =
      std::string(kAlgorithm) + "\n" + amz_date + "\n" + scope + "\n" + Sha256Hex(canonical);
  std::string key = Hmac("AWS4" + secret_access_key, date);
  key = Hmac(Hmac(Hmac(key, region), service), "aws4_request");
  std::string signature = Hmac(key, to_sign);
  return Hex(reinterpret_cast<const unsigned char*>(signature.data()), signature.size());
}

SignedBy VerifySigV4(const HttpRequest& request, const SecretLookup& secret_of,
                     const std::string& service, std::time_t now) {
  if (!HasHeader(request, "authorization")) {
    throw Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials",
                   401);
  }
  Authorization auth = ParseAuthorization(HeaderValue(request, "authorization"));
  if (auth.service != service) throw Incomplete("the credential scope's service is not " + service);
  if (std::find(auth.signed_headers.begin(), auth.signed_headers.end(), "host") ==
      auth.signed_headers.end()) {
    throw Incomplete("SignedHeaders must include host");
  }
  std::string amz_date = HeaderValue(request, "x-amz-date");
  std::time_t signed_at = ParseAmzDate(amz_date);
  if (signed_at < 0 || amz_date.substr(0, 8) != auth.date) {
    throw Incomplete("X-Amz-Date is missing, malformed or not the credential scope's date");
  }
  if (std::llabs(static_cast<long long>(now - signed_at)) > kMaxSkewSeconds) {
    throw Ec2Error("RequestExpired", "Request has expired.");
  }
  std::optional<std::string> secret = secret_of(auth.access_key_id);
  if (!secret) {
    throw Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials",
                   401);
  }
  std::string expected =
      SigV4Signature(request, auth.signed_headers, amz_date, auth.region, service, *secret);
  if (expected.size() != auth.signature.size() ||
      CRYPTO_memcmp(expected.data(), auth.signature.data(), expected.size()) != 0) {
    throw Ec2Error("SignatureDoesNotMatch",
                   "The request signature we calculated does not match the signature you "
                   "provided. Check your AWS Secret Access Key and signing method.",
                   403);
  }
  return {auth.access_key_id, auth.region};
}

void SignSigV4(HttpRequest& request, const std::string& access_key_id,
               const std::string& secret_access_key, const std::string& region,
               const std::string& service, std::time_t now) {
  std::string amz_date = FormatAmzDate(now);
  request.headers.emplace_back("X-Amz-Date", amz_date);
  std::vector<std::string> names;
  for (const auto& [name, value] : request.headers) names.push_back(Lower(name));
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::string signature =
      SigV4Signature(request, names, amz_date, region, service, secret_access_key);
  std::string joined;
  for (const std::string& name : names) joined += (joined.empty() ? "" : ";") + name;
  request.headers.emplace_back(
      "Authorization", std::string(kAlgorithm) + " Credential=" + access_key_id + "/" +
                           amz_date.substr(0, 8) + "/" + region + "/" + service +
                           "/aws4_request, SignedHeaders=" + joined + ", Signature=" + signature);
}

}  // namespace tern::cloud
