// EC2 API errors: the error code, message and HTTP status that ternd answers with, in EC2's
// error XML (<Response><Errors><Error><Code>...). Thrown inside one request's handling and caught
// by the dispatcher (ec2_api), which turns it into the response; never crosses threads.
#pragma once

#include <stdexcept>
#include <string>

namespace tern::cloud {

// One EC2 error. `code` is EC2's (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/
// errors-overview.html), e.g. "InvalidInstanceID.NotFound"; `http_status` is 400 for client
// errors unless EC2 uses another (AuthFailure 401, SignatureDoesNotMatch 403, DryRunOperation
// 412, InternalError 500, InsufficientInstanceCapacity 500, Unavailable 503).
class Ec2Error : public std::runtime_error {
 public:
  Ec2Error(std::string code, const std::string& message, int http_status = 400)
      : std::runtime_error(message), code_(std::move(code)), http_status_(http_status) {}

  const std::string& code() const { return code_; }
  int http_status() const { return http_status_; }

  // Common errors, with EC2's codes and wording.
  static Ec2Error MissingParameter(const std::string& name);
  static Ec2Error InvalidParameterValue(const std::string& name, const std::string& value,
                                        const std::string& why);
  static Ec2Error InvalidParameterCombination(const std::string& message);
  static Ec2Error Internal(const std::string& message);

 private:
  std::string code_;
  int http_status_;
};

}  // namespace tern::cloud
