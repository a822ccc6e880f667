// Strict reading of one JSON object of an API body: unknown keys, missing required keys and
// wrong types are EINVAL errors naming the key (Firecracker's deny_unknown_fields). Shared by
// VmResources, the Controller's run-time requests and the API's action bodies.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "base/result.h"

namespace tern {

// The fields of one JSON object: refuses non-objects and keys outside `allowed`, then reads
// typed values (a wrong type is an error naming the key).
class Fields {
 public:
  static Result<Fields> Of(const nlohmann::json& body, std::string what,
                           std::initializer_list<const char*> allowed) {
    if (!body.is_object()) return Error(what + ": the body must be a JSON object", EINVAL);
    for (const auto& [key, value] : body.items()) {
      if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; })) {
        return Error(what + ": unknown field `" + key + "`", EINVAL);
      }
    }
    return Fields(body, std::move(what));
  }

  bool Has(const char* key) const { return body_.contains(key) && !body_[key].is_null(); }

  // Reads `key` into `out` if present; an EINVAL error if `required` and absent.
  Status Read(const char* key, std::string& out, bool required = false) const {
    TERN_ASSIGN_OR_RETURN(bool present, Present(key, required));
    if (!present) return Ok();
    if (!body_[key].is_string()) return TypeError(key, "a string");
    out = body_[key].get<std::string>();
    return Ok();
  }
  Status Read(const char* key, std::optional<std::string>& out) const {
    std::string value;
    if (!Has(key)) return Ok();
    TERN_RETURN_IF_ERROR(Read(key, value));
    out = value;
    return Ok();
  }
  Status Read(const char* key, bool& out, bool required = false) const {
    TERN_ASSIGN_OR_RETURN(bool present, Present(key, required));
    if (!present) return Ok();
    if (!body_[key].is_boolean()) return TypeError(key, "true or false");
    out = body_[key].get<bool>();
    return Ok();
  }
  Status Read(const char* key, uint64_t& out, bool required = false, uint64_t min = 0,
              uint64_t max = std::numeric_limits<uint64_t>::max()) const {
    TERN_ASSIGN_OR_RETURN(bool present, Present(key, required));
    if (!present) return Ok();
    const nlohmann::json& value = body_[key];
    bool integer =
        value.is_number_unsigned() || (value.is_number_integer() && value.get<int64_t>() >= 0);
    if (!integer || value.get<uint64_t>() < min || value.get<uint64_t>() > max) {
      return TypeError(key, "an integer in " + std::to_string(min) + ".." + std::to_string(max));
    }
    out = value.get<uint64_t>();
    return Ok();
  }
  Status Read(const char* key, uint32_t& out, bool required, uint32_t min, uint32_t max) const {
    uint64_t wide = out;
    TERN_RETURN_IF_ERROR(Read(key, wide, required, min, max));
    out = static_cast<uint32_t>(wide);
    return Ok();
  }

 private:
  Fields(const nlohmann::json& body, std::string what) : body_(body), what_(std::move(what)) {}

  Result<bool> Present(const char* key, bool required) const {
    if (Has(key)) return true;
    if (required) return Error(what_ + ": missing field `" + key + "`", EINVAL);
    return false;
  }
  Error TypeError(const char* key, const std::string& expected) const {
    return Error(what_ + ": field `" + key + "` must be " + expected, EINVAL);
  }

  const nlohmann::json& body_;
  const std::string what_;
};

}  // namespace tern
