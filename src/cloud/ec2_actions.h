// ternd's EC2 actions (API reference: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/),
// registered on an Ec2Server: instances and instance types (instances_api.cc), images
// (images_api.cc), key pairs and tags (key_pairs_api.cc). Handlers validate everything first
// (FinishValidation), then commit to the store, then wake the instance supervisor.
#pragma once

#include <string>
#include <vector>

#include "cloud/ec2_server.h"
#include "cloud/instance_manager.h"
#include "cloud/instance_types.h"
#include "cloud/store.h"

namespace tern::cloud {

// What the handlers share. Thread-safe members only (Store, InstanceManager are).
struct Ec2Backend {
  Store& store;
  InstanceManager& manager;
  HostCapacity capacity;
  std::string data_dir;  // images in data_dir/images/<ami-id>/
};

void RegisterInstanceActions(Ec2Server& server, Ec2Backend& backend);
void RegisterImageActions(Ec2Server& server, Ec2Backend& backend);
void RegisterKeyPairAndTagActions(Ec2Server& server, Ec2Backend& backend);

// Checks that `id` has EC2's shape for `prefix` ("i", "ami", "key", ...): prefix-, then 8 or 17
// lowercase hex digits; throws `error_prefix`.Malformed (e.g. InvalidInstanceID.Malformed).
void CheckIdShape(const std::string& id, const std::string& prefix,
                  const std::string& error_prefix);

// Whether `value` matches an EC2 filter value with * and ? wildcards.
bool FilterMatches(const std::string& pattern, const std::string& value);

// Whether any of `filter_values` matches `value`.
bool AnyMatches(const std::vector<std::string>& filter_values, const std::string& value);

// An EC2 tag filter (tag:<key>, tag-key) against `tags`; nullopt when `name` is not a tag filter.
std::optional<bool> TagFilterMatches(const std::string& name,
                                     const std::vector<std::string>& values,
                                     const std::map<std::string, std::string>& tags);

}  // namespace tern::cloud
