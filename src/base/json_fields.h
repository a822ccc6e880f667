// Strict reading of one JSON object (an API body, or a part of a snapshot's state): unknown keys,
// missing required keys and wrong types are EINVAL errors naming the key (Firecracker's
// deny_unknown_fields). Shared by VmResources, the Controller's run-time requests, the API's
// action bodies and every device's snapshot restore.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace tern {

// The fields of one JSON object: refuses non-objects and keys outside `allowed`, then reads
// typed values (a wrong type is an error naming the key).
class Fields {
 public:
  static Result<Fields> Of(const nlohmann::json& body, std::string what,
                           std::initializer_list<const char*> allowed) {
    if (!body.is_object()) return Error(what + ": the body must be a JSON object", EINVAL);
    for (const auto& item : body.items()) {
      const std::string& key = item.key();
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

  Status Read(const char* key, uint16_t& out, bool required = false) const {
    uint64_t wide = out;
    TERN_RETURN_IF_ERROR(Read(key, wide, required, 0, UINT16_MAX));
    out = static_cast<uint16_t>(wide);
    return Ok();
  }
  Status Read(const char* key, uint8_t& out, bool required = false) const {
    uint64_t wide = out;
    TERN_RETURN_IF_ERROR(Read(key, wide, required, 0, UINT8_MAX));
    out = static_cast<uint8_t>(wide);
    return Ok();
  }
  // A byte string (a nlohmann::json::binary_t, which CBOR stores as bytes) of exactly `size`
  // bytes, or any length when `size` is kAnySize.
  static constexpr size_t kAnySize = SIZE_MAX;
  Status Read(const char* key, std::vector<uint8_t>& out, bool required,
              size_t size = kAnySize) const {
    TERN_ASSIGN_OR_RETURN(bool present, Present(key, required));
    if (!present) return Ok();
    const nlohmann::json& value = body_[key];
    if (!value.is_binary() || (size != kAnySize && value.get_binary().size() != size)) {
      return TypeError(key,
                       size == kAnySize ? std::string("bytes") : std::to_string(size) + " bytes");
    }
    out.assign(value.get_binary().begin(), value.get_binary().end());
    return Ok();
  }
  // The value of a required key that must be an array (or an object with `object`).
  Result<const nlohmann::json*> Array(const char* key) const {
    TERN_RETURN_IF_ERROR(Present(key, true));
    if (!body_[key].is_array()) return TypeError(key, "an array");
    return &body_[key];
  }
  Result<const nlohmann::json*> Object(const char* key) const {
    TERN_RETURN_IF_ERROR(Present(key, true));
    if (!body_[key].is_object()) return TypeError(key, "an object");
    return &body_[key];
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
