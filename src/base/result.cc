// Formatting of Error values.
#include "base/result.h"

#include <cstring>

namespace tern {

std::string Error::ToString() const {
  if (!system_call_ || errno_value_ == 0) return message_;
  return message_ + ": " + std::strerror(errno_value_);
}

}  // namespace tern
