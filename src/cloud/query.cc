// EC2 Query API parameters (see query.h).
#include "cloud/query.h"

#include <algorithm>
#include <charconv>

#include "cloud/ec2_error.h"

namespace tern::cloud {
namespace {

constexpr size_t kMaxTagsPerResource = 50;

// The positive index at the start of `rest` ("3" or "3.Name"); throws for a malformed one.
uint64_t IndexOf(const std::string& full_name, const std::string& rest) {
  std::string digits = rest.substr(0, rest.find('.'));
  uint64_t index = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
  if (ec != std::errc() || end != digits.data() + digits.size() || index == 0) {
    throw Ec2Error::InvalidParameterValue(full_name, digits, "List indices are positive integers.");
  }
  return index;
}

bool IsProtocolParameter(const std::string& name) {
  return name == "Action" || name == "Version" || name.rfind("X-Amz-", 0) == 0;
}

void CheckTag(const std::string& key, const std::string& value) {
  if (key.empty() || key.size() > 128) {
    throw Ec2Error::InvalidParameterValue("Tag.Key", key, "Tag keys are 1 to 128 characters.");
  }
  if (key.rfind("aws:", 0) == 0) {
    throw Ec2Error("InvalidParameterValue",
                   "Tag keys starting with 'aws:' are reserved for internal use");
  }
  if (value.size() > 256) {
    throw Ec2Error::InvalidParameterValue("Tag.Value", value,
                                          "Tag values are at most 256 characters.");
  }
}

Tags TagsOf(std::vector<QueryParams*> items) {
  Tags tags;
  for (QueryParams* item : items) {
    std::string key = item->Required("Key");
    std::string value = item->Get("Value").value_or("");
    CheckTag(key, value);
    tags[key] = value;
  }
  if (tags.size() > kMaxTagsPerResource) {
    throw Ec2Error("TagLimitExceeded", "The maximum number of tags per resource is 50.");
  }
  return tags;
}

}  // namespace

QueryParams::QueryParams(std::map<std::string, std::string> params, std::string prefix)
    : params_(std::move(params)), prefix_(std::move(prefix)) {}

std::optional<std::string> QueryParams::Get(const std::string& name) {
  read_.insert(name);
  auto found = params_.find(name);
  if (found == params_.end()) return std::nullopt;
  return found->second;
}

std::string QueryParams::Required(const std::string& name) {
  std::optional<std::string> value = Get(name);
  if (!value) throw Ec2Error::MissingParameter(prefix_ + name);
  return *value;
}

bool QueryParams::Bool(const std::string& name, bool fallback) {
  std::optional<std::string> value = Get(name);
  if (!value) return fallback;
  std::string lower = *value;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  if (lower == "true") return true;
  if (lower == "false") return false;
  throw Ec2Error::InvalidParameterValue(prefix_ + name, *value, "Expected true or false.");
}

int64_t QueryParams::Int(const std::string& name, int64_t fallback, int64_t min, int64_t max) {
  std::optional<std::string> value = Get(name);
  if (!value) return fallback;
  int64_t number = 0;
  auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), number);
  if (ec != std::errc() || end != value->data() + value->size() || number < min || number > max) {
    throw Ec2Error::InvalidParameterValue(
        prefix_ + name, *value,
        "Expected an integer from " + std::to_string(min) + " to " + std::to_string(max) + ".");
  }
  return number;
}

std::vector<std::string> QueryParams::List(const std::string& name) {
  std::map<uint64_t, std::string> items;
  std::string head = name + ".";
  for (const auto& [key, value] : params_) {
    if (key.rfind(head, 0) != 0) continue;
    std::string rest = key.substr(head.size());
    if (rest.find('.') != std::string::npos) continue;  // a structure's field, not a list item
    items[IndexOf(prefix_ + key, rest)] = value;
    read_.insert(key);
  }
  std::vector<std::string> out;
  for (auto& [index, value] : items) out.push_back(std::move(value));
  return out;
}

std::vector<QueryParams*> QueryParams::Structs(const std::string& name) {
  auto cached = structs_.find(name);
  if (cached == structs_.end()) {
    std::map<uint64_t, std::map<std::string, std::string>> fields;
    std::string head = name + ".";
    for (const auto& [key, value] : params_) {
      if (key.rfind(head, 0) != 0) continue;
      std::string rest = key.substr(head.size());
      size_t dot = rest.find('.');
      if (dot == std::string::npos) continue;
      fields[IndexOf(prefix_ + key, rest)][rest.substr(dot + 1)] = value;
      read_.insert(key);
    }
    std::vector<QueryParams> items;
    for (auto& [index, map] : fields) {
      items.emplace_back(std::move(map), prefix_ + head + std::to_string(index) + ".");
    }
    cached = structs_.emplace(name, std::move(items)).first;
  }
  std::vector<QueryParams*> out;
  for (QueryParams& item : cached->second) out.push_back(&item);
  return out;
}

void QueryParams::RejectUnread() const {
  for (const auto& [key, value] : params_) {
    if (read_.count(key) || (prefix_.empty() && IsProtocolParameter(key))) continue;
    throw Ec2Error("UnknownParameter", "The parameter " + prefix_ + key + " is not recognized");
  }
  for (const auto& [name, items] : structs_) {
    for (const QueryParams& item : items) item.RejectUnread();
  }
}

std::vector<Filter> ParseFilters(QueryParams& params) {
  std::vector<Filter> filters;
  for (QueryParams* item : params.Structs("Filter")) {
    filters.push_back({item->Required("Name"), item->List("Value")});
  }
  return filters;
}

Tags ParseTags(QueryParams& params, const std::string& name) {
  return TagsOf(params.Structs(name));
}

Tags ParseTagSpecifications(QueryParams& params, const std::string& resource_type) {
  Tags tags;
  for (QueryParams* spec : params.Structs("TagSpecification")) {
    std::string type = spec->Required("ResourceType");
    if (type != resource_type) {
      throw Ec2Error::InvalidParameterValue("TagSpecification.ResourceType", type,
                                            "This request tags only " + resource_type + ".");
    }
    for (auto& [key, value] : TagsOf(spec->Structs("Tag"))) tags[key] = value;
  }
  if (tags.size() > kMaxTagsPerResource) {
    throw Ec2Error("TagLimitExceeded", "The maximum number of tags per resource is 50.");
  }
  return tags;
}

}  // namespace tern::cloud
