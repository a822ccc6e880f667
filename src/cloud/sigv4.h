// AWS Signature Version 4 for ternd's EC2 API: verifies the Authorization header botocore and
// the aws CLI send, and signs requests (tests, benchmarks). The canonical request, string to
// sign and signing key follow
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
// HMAC-SHA256 and SHA-256 come from OpenSSL.
#pragma once

#include <ctime>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tern::cloud {

// An HTTP request as received: the raw path (no query), raw query string (no '?'), headers as
// sent (names in any case) and the body bytes.
struct HttpRequest {
  std::string method;
  std::string path;
  std::string query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// The verified signer: access key id and the credential scope's region.
struct SignedBy {
  std::string access_key_id;
  std::string region;
};

// Secret access key of an access key id, or nullopt if unknown.
using SecretLookup = std::function<std::optional<std::string>(const std::string&)>;

// Verifies `request`'s SigV4 Authorization header for `service` at time `now`. Throws Ec2Error:
// AuthFailure (401) without an Authorization header or for an unknown access key;
// IncompleteSignature (400) for a malformed header, a scope of another service, or signed
// headers without host; RequestExpired (400) when X-Amz-Date is more than 15 minutes from now;
// SignatureDoesNotMatch (403) for a wrong signature (compared in constant time). Thread-safe.
SignedBy VerifySigV4(const HttpRequest& request, const SecretLookup& secret_of,
                     const std::string& service, std::time_t now);

// The SHA-256 digest of `data` as 64 lowercase hex digits. Thread-safe.
std::string Sha256Hex(const std::string& data);

// Signs `request` (which must have a Host header) for the given key, region and service at
// `now`: adds X-Amz-Date and Authorization headers, signing every header present.
void SignSigV4(HttpRequest& request, const std::string& access_key_id,
               const std::string& secret_access_key, const std::string& region,
               const std::string& service, std::time_t now);

// The SigV4 signature (hex) of `request` with the given signed header names (lowercase,
// sorted), date-time (YYYYMMDDTHHMMSSZ), scope date/region/service; exposed for tests.
std::string SigV4Signature(const HttpRequest& request,
                           const std::vector<std::string>& signed_headers,
                           const std::string& amz_date, const std::string& region,
                           const std::string& service, const std::string& secret_access_key);

}  // namespace tern::cloud
