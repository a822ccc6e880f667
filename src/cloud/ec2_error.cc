// EC2's common errors (see ec2_error.h).
#include "cloud/ec2_error.h"

namespace tern::cloud {

Ec2Error Ec2Error::MissingParameter(const std::string& name) {
  return Ec2Error("MissingParameter", "The request must contain the parameter " + name);
}

Ec2Error Ec2Error::InvalidParameterValue(const std::string& name, const std::string& value,
                                         const std::string& why) {
  return Ec2Error("InvalidParameterValue",
                  "Value (" + value + ") for parameter " + name + " is invalid. " + why);
}

Ec2Error Ec2Error::InvalidParameterCombination(const std::string& message) {
  return Ec2Error("InvalidParameterCombination", message);
}

Ec2Error Ec2Error::Internal(const std::string& message) {
  return Ec2Error("InternalError", "An internal error has occurred: " + message, 500);
}

}  // namespace tern::cloud
