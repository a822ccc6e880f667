// The parameters of an EC2 Query API request (form-encoded body or URL query, decoded by
// cpp-httplib), read the way botocore's EC2 serializer writes them: lists as `Name.N`
// (`InstanceId.1`), structures as `Name.N.Field` (`Filter.1.Value.2`,
// `TagSpecification.1.Tag.1.Key`). Reads are tracked: RejectUnread() answers EC2's
// UnknownParameter for anything the handler did not read. Not thread-safe (one request).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace tern::cloud {

class QueryParams {
 public:
  QueryParams() = default;
  // `params`: decoded name -> value (a name given twice keeps the last value, as EC2 does).
  explicit QueryParams(std::map<std::string, std::string> params, std::string prefix = "");

  // The parameter's value, or nullopt.
  std::optional<std::string> Get(const std::string& name);
  // The value; throws MissingParameter when absent.
  std::string Required(const std::string& name);
  // "true"/"false" (any case); throws InvalidParameterValue for anything else.
  bool Bool(const std::string& name, bool fallback);
  // An integer in [min, max]; throws InvalidParameterValue for garbage or out of range.
  int64_t Int(const std::string& name, int64_t fallback, int64_t min, int64_t max);
  // The values of `name`.1, `name`.2, ... ordered by index (indices are positive integers;
  // a malformed one throws InvalidParameterValue).
  std::vector<std::string> List(const std::string& name);
  // The structures `name`.N.* as QueryParams of their fields, ordered by N; reading a field
  // marks it read here too.
  std::vector<QueryParams*> Structs(const std::string& name);

  // Throws UnknownParameter naming the first parameter no accessor read (Action, Version and
  // the SigV4 query parameters excepted).
  void RejectUnread() const;

 private:
  std::map<std::string, std::string> params_;
  std::string prefix_;  // e.g. "Filter.1." for a structure: names in errors are full names
  std::set<std::string> read_;
  std::map<std::string, std::vector<QueryParams>> structs_;
};

// DescribeX's Filter.N.Name / Filter.N.Value.M.
struct Filter {
  std::string name;
  std::vector<std::string> values;
};
std::vector<Filter> ParseFilters(QueryParams& params);

// A tag (EC2: key 1..128 characters, not starting with "aws:"; value 0..256 characters).
using Tags = std::map<std::string, std::string>;

// `name`.N.Key / `name`.N.Value (CreateTags' Tag.N); validated, at most 50.
Tags ParseTags(QueryParams& params, const std::string& name);

// TagSpecification.N.ResourceType / .Tag.M.Key / .Tag.M.Value: the tags for `resource_type`
// (other resource types throw InvalidParameterValue).
Tags ParseTagSpecifications(QueryParams& params, const std::string& resource_type);

}  // namespace tern::cloud
