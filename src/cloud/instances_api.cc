// EC2 instance actions: RunInstances, DescribeInstances, DescribeInstanceStatus, StartInstances,
// StopInstances, RebootInstances, TerminateInstances, GetConsoleOutput, DescribeInstanceTypes.
#include <fnmatch.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <unordered_map>

#include "cloud/base64.h"
#include "cloud/ec2_actions.h"

namespace tern::cloud {
namespace {

constexpr size_t kMaxUserDataBytes = 16 * 1024;
constexpr size_t kConsoleOutputBytes = 64 * 1024;
constexpr const char* kDefaultInstanceType = "t3.micro";

std::string UtcNow() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[40];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S GMT", &tm);
  return text;
}

// The instances named by InstanceId.N, in the request's order. Malformed and unknown ids are
// EC2's errors (all unknown ones named).
std::vector<std::shared_ptr<const Instance>> RequestedRecords(Store& store,
                                                              const std::vector<std::string>& ids) {
  std::vector<std::shared_ptr<const Instance>> found;
  std::vector<std::string> missing;
  for (const std::string& id : ids) CheckIdShape(id, "i", "InvalidInstanceID");
  for (const std::string& id : ids) {
    if (std::shared_ptr<const Instance> record = store.InstanceRecord(id)) {
      found.push_back(std::move(record));
    } else {
      missing.push_back(id);
    }
  }
  if (missing.size() == 1) {
    throw Ec2Error("InvalidInstanceID.NotFound",
                   "The instance ID '" + missing[0] + "' does not exist");
  }
  if (!missing.empty()) {
    std::string list;
    for (const std::string& id : missing) list += (list.empty() ? "" : ", ") + id;
    throw Ec2Error("InvalidInstanceID.NotFound", "The instance IDs '" + list + "' do not exist");
  }
  return found;
}

// RequestedRecords' instances as copies, for the actions that change them.
std::vector<Instance> RequestedInstances(Store& store, const std::vector<std::string>& ids) {
  std::vector<Instance> out;
  for (const auto& record : RequestedRecords(store, ids)) out.push_back(*record);
  return out;
}

std::string ZoneOf(const RequestContext& context) {
  return (context.signer.region.empty() ? "us-east-1" : context.signer.region) + "a";
}

void AddState(pugi::xml_node parent, const char* name, InstanceStateName state) {
  pugi::xml_node node = AddNode(parent, name);
  AddText(node, "code", std::to_string(StateCode(state)));
  AddText(node, "name", StateName(state));
}

void AddInstance(pugi::xml_node item, const Instance& i, const Tags& tags,
                 const std::string& zone) {
  const InstanceType* type = FindInstanceType(i.instance_type);
  AddText(item, "instanceId", i.instance_id);
  AddText(item, "imageId", i.image_id);
  AddState(item, "instanceState", i.state);
  AddText(item, "privateDnsName", "");
  AddText(item, "dnsName", "");
  AddText(item, "reason", i.state_transition_reason);
  if (i.key_name) AddText(item, "keyName", *i.key_name);
  AddText(item, "amiLaunchIndex", std::to_string(i.ami_launch_index));
  AddText(item, "instanceType", i.instance_type);
  AddText(item, "launchTime", Iso8601(i.launch_time));
  pugi::xml_node placement = AddNode(item, "placement");
  AddText(placement, "availabilityZone", zone);
  AddText(placement, "tenancy", "default");
  AddText(AddNode(item, "monitoring"), "state", "disabled");
  AddText(item, "architecture", "x86_64");
  AddText(item, "rootDeviceType", "ebs");
  AddText(item, "rootDeviceName", "/dev/vda");
  AddText(item, "virtualizationType", "hvm");
  AddText(item, "hypervisor", "xen");
  if (i.client_token) AddText(item, "clientToken", *i.client_token);
  AddTagSet(item, tags);
  if (i.state_reason_code) {
    pugi::xml_node reason = AddNode(item, "stateReason");
    AddText(reason, "code", *i.state_reason_code);
    AddText(reason, "message", i.state_reason_message.value_or(""));
  }
  if (type) {
    pugi::xml_node cpu = AddNode(item, "cpuOptions");
    AddText(cpu, "coreCount", std::to_string(type->cores));
    AddText(cpu, "threadsPerCore", std::to_string(type->vcpus / type->cores));
  }
  AddText(AddNode(item, "hibernationOptions"), "configured",
          i.hibernation_configured ? "true" : "false");
}

// Memory (MiB) held by instances that are not stopped or terminated.
// User data as sent (base64, EC2's limit of 16 KiB decoded); throws InvalidParameterValue.
std::string DecodeUserData(const std::string& encoded) {
  std::optional<std::string> decoded = Base64Decode(encoded);
  if (!decoded) throw Ec2Error("InvalidParameterValue", "Invalid BASE64 encoding of user data.");
  if (decoded->size() > kMaxUserDataBytes) {
    throw Ec2Error("InvalidParameterValue", "User data is limited to 16384 bytes");
  }
  return std::move(*decoded);
}

// Instance attributes EC2 has and Tern does not keep (ModifyInstanceAttribute and
// DescribeInstanceAttribute answer UnsupportedOperation for them).
const std::set<std::string> kUnkeptAttributes = {"kernel",
                                                 "ramdisk",
                                                 "disableApiTermination",
                                                 "instanceInitiatedShutdownBehavior",
                                                 "rootDeviceName",
                                                 "blockDeviceMapping",
                                                 "productCodes",
                                                 "sourceDestCheck",
                                                 "groupSet",
                                                 "ebsOptimized",
                                                 "sriovNetSupport",
                                                 "enaSupport",
                                                 "enclaveOptions",
                                                 "disableApiStop"};

// Checks an attribute name of ModifyInstanceAttribute / DescribeInstanceAttribute: Tern keeps
// instanceType and userData.
void CheckAttributeName(const std::string& attribute) {
  if (attribute == "instanceType" || attribute == "userData") return;
  if (kUnkeptAttributes.count(attribute)) {
    throw Ec2Error("UnsupportedOperation",
                   "The instance attribute '" + attribute + "' is not supported by Tern.");
  }
  throw Ec2Error::InvalidParameterValue("Attribute", attribute, "Unknown attribute.");
}

uint64_t UsedMemoryMib(Store& store) {
  uint64_t used = 0;
  for (const Instance& i : store.ListInstances()) {
    if (i.state == InstanceStateName::kStopped || i.state == InstanceStateName::kTerminated) {
      continue;
    }
    if (const InstanceType* type = FindInstanceType(i.instance_type)) used += type->memory_mib;
  }
  return used;
}

Ec2Error InsufficientCapacity(const std::string& type) {
  return Ec2Error("InsufficientInstanceCapacity",
                  "We currently do not have sufficient " + type +
                      " capacity on this host. Stop or terminate instances, or choose a "
                      "smaller instance type.",
                  500);
}

bool InstanceFilterMatches(const Filter& filter, const Instance& i, const Tags& tags) {
  if (std::optional<bool> tag = TagFilterMatches(filter.name, filter.values, tags)) return *tag;
  if (filter.name == "instance-state-name") return AnyMatches(filter.values, StateName(i.state));
  if (filter.name == "instance-state-code") {
    return AnyMatches(filter.values, std::to_string(StateCode(i.state)));
  }
  if (filter.name == "instance-id") return AnyMatches(filter.values, i.instance_id);
  if (filter.name == "instance-type") return AnyMatches(filter.values, i.instance_type);
  if (filter.name == "image-id") return AnyMatches(filter.values, i.image_id);
  if (filter.name == "key-name") return i.key_name && AnyMatches(filter.values, *i.key_name);
  if (filter.name == "reservation-id") return AnyMatches(filter.values, i.reservation_id);
  throw Ec2Error("InvalidParameterValue", "The filter '" + filter.name + "' is invalid");
}

void CheckFilterNames(const std::vector<Filter>& filters) {
  Instance probe;
  for (const Filter& filter : filters) (void)InstanceFilterMatches(filter, probe, {});
}

// DescribeInstances' <item> of each instance as XML text, kept while the instance's revision and
// the request's zone stay the same: listing 1000 unchanged instances renders none of them again.
// Thread-safe.
class InstanceXmlCache {
 public:
  // The <item> of `i` in `zone`; `tags_of` gives its tags when it must be rendered.
  std::shared_ptr<const std::string> Get(const Instance& i, const std::string& zone,
                                         const std::function<Tags()>& tags_of) {
    {
      std::lock_guard lock(mutex_);
      auto found = entries_.find(i.revision);
      if (found != entries_.end() && found->second.zone == zone) return found->second.xml;
    }
    pugi::xml_document doc;
    pugi::xml_node item = doc.append_child("item");
    AddInstance(item, i, tags_of(), zone);
    auto xml = std::make_shared<const std::string>(SerializeElement(item));
    std::lock_guard lock(mutex_);
    entries_.insert_or_assign(i.revision, Entry{zone, xml});
    return xml;
  }

  // Forgets the revisions not in `live` (changed or purged instances) once the cache holds
  // twice as many entries.
  void Retain(const std::vector<std::shared_ptr<const Instance>>& live) {
    std::lock_guard lock(mutex_);
    if (entries_.size() <= 2 * live.size() + 64) return;
    std::unordered_map<uint64_t, Entry> kept;
    for (const auto& record : live) {
      if (auto found = entries_.find(record->revision); found != entries_.end()) {
        kept.insert(std::move(*found));
      }
    }
    entries_ = std::move(kept);
  }

 private:
  struct Entry {
    std::string zone;
    std::shared_ptr<const std::string> xml;
  };
  std::mutex mutex_;
  // Instance::revision (unique across instances) -> its <item>.
  std::unordered_map<uint64_t, Entry> entries_;
};

// Groups instances into reservations (in first-seen order) under the response's
// reservationSet; each instance's <item> comes from `item_of`.
void AddReservations(
    XmlResponse& response, const std::vector<std::shared_ptr<const Instance>>& instances,
    const std::string& owner,
    const std::function<std::shared_ptr<const std::string>(const Instance&)>& item_of) {
  pugi::xml_node set = AddNode(response.root(), "reservationSet");
  std::unordered_map<std::string, pugi::xml_node> reservations;
  const std::string* last_id = nullptr;  // launch order: neighbours mostly share one
  pugi::xml_node last;
  for (const auto& i : instances) {
    if (!last_id || *last_id != i->reservation_id) {
      auto [found, added] = reservations.try_emplace(i->reservation_id);
      if (added) {
        pugi::xml_node item = AddItem(set);
        AddText(item, "reservationId", i->reservation_id);
        AddText(item, "ownerId", owner);
        AddNode(item, "groupSet");
        found->second = AddNode(item, "instancesSet");
      }
      last_id = &i->reservation_id;
      last = found->second;
    }
    response.AddRaw(last, item_of(*i));
  }
}

class InstanceActions {
 public:
  explicit InstanceActions(Ec2Backend& backend) : b_(backend) {}

  void RunInstances(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::string image_id = params.Required("ImageId");
    CheckIdShape(image_id, "ami", "InvalidAMIID");
    std::string type_name = params.Get("InstanceType").value_or(kDefaultInstanceType);
    int64_t min = params.Int("MinCount", 1, 1, 100);
    int64_t max = params.Int("MaxCount", min, 1, 100);
    if (min > max) {
      throw Ec2Error("InvalidParameterValue", "MinCount must be less than or equal to MaxCount");
    }
    std::optional<std::string> key_name = params.Get("KeyName");
    std::optional<std::string> client_token = params.Get("ClientToken");
    std::string user_data;
    if (std::optional<std::string> encoded = params.Get("UserData")) {
      user_data = DecodeUserData(*encoded);
    }
    bool hibernation = false;
    for (QueryParams* options : params.Structs("HibernationOptions")) {
      hibernation = options->Bool("Configured", false);
    }
    if (params.Get("HibernationOptions.Configured")) {
      hibernation = params.Bool("HibernationOptions.Configured", false);
    }
    Tags tags = ParseTagSpecifications(params, "instance");
    const InstanceType* type = FindInstanceType(type_name);
    if (!type) {
      throw Ec2Error::InvalidParameterValue("InstanceType", type_name,
                                            "See DescribeInstanceTypes for the offered types.");
    }
    std::optional<Image> image = b_.store.GetImage(image_id);
    if (!image || image->state != "available") {
      throw Ec2Error("InvalidAMIID.NotFound", "The image id '[" + image_id + "]' does not exist");
    }
    if (key_name && !b_.store.GetKeyPair(*key_name)) {
      throw Ec2Error("InvalidKeyPair.NotFound", "The key pair '" + *key_name + "' does not exist");
    }
    if (client_token) {
      std::vector<Instance> earlier = b_.store.FindByClientToken(*client_token);
      if (!earlier.empty()) {
        const Instance& first = earlier.front();
        if (first.image_id != image_id || first.instance_type != type_name ||
            first.key_name != key_name || first.user_data != user_data ||
            static_cast<int64_t>(earlier.size()) > max) {
          throw Ec2Error("IdempotentParameterMismatch",
                         "The client token '" + *client_token +
                             "' was used by an earlier request with other parameters.");
        }
        FinishValidation(context, params);
        return Respond(context, response, earlier);
      }
    }
    std::lock_guard lock(launch_mutex_);  // capacity check and insert as one step
    uint64_t used = UsedMemoryMib(b_.store);
    int64_t count = 0;
    while (count < max && b_.capacity.Fits(*type, used + count * type->memory_mib)) ++count;
    if (count < min) throw InsufficientCapacity(type_name);
    FinishValidation(context, params);

    std::vector<Instance> instances;
    std::string reservation = Store::NewId("r");
    for (int64_t n = 0; n < count; ++n) {
      Instance i;
      i.instance_id = Store::NewId("i");
      i.reservation_id = reservation;
      i.image_id = image_id;
      i.instance_type = type_name;
      i.key_name = key_name;
      i.user_data = user_data;
      i.launch_time = std::time(nullptr);
      i.ami_launch_index = static_cast<int>(n);
      i.client_token = client_token;
      i.hibernation_configured = hibernation;
      instances.push_back(std::move(i));
    }
    b_.store.InsertInstances(instances, tags);
    b_.manager.Wake();
    Respond(context, response, instances);
  }

  void DescribeInstances(const RequestContext& context, QueryParams& params,
                         XmlResponse& response) {
    std::vector<std::string> ids = params.List("InstanceId");
    std::vector<Filter> filters = ParseFilters(params);
    CheckFilterNames(filters);
    std::optional<std::string> max_text = params.Get("MaxResults");
    int64_t max_results = params.Int("MaxResults", 1000000, 5, 1000);
    size_t start = static_cast<size_t>(params.Int("NextToken", 0, 0, INT32_MAX));
    if (max_text && !ids.empty()) {
      throw Ec2Error::InvalidParameterCombination(
          "The parameter instancesSet cannot be used with the parameter maxResults");
    }
    FinishValidation(context, params);
    std::vector<std::shared_ptr<const Instance>> records =
        ids.empty() ? b_.store.InstanceRecords() : RequestedRecords(b_.store, ids);
    bool by_tag = std::any_of(filters.begin(), filters.end(), [](const Filter& f) {
      return TagFilterMatches(f.name, f.values, {}).has_value();
    });
    std::map<std::string, Tags> tags = by_tag ? b_.store.AllTags() : std::map<std::string, Tags>();
    std::vector<std::shared_ptr<const Instance>> selected;
    // Terminated over an hour ago: gone, though the supervisor may not have purged it yet.
    int64_t visible_after = std::time(nullptr) - Store::kTerminatedVisibleSeconds;
    const Tags none;
    for (auto& i : records) {
      if (i->terminated_at && *i->terminated_at < visible_after) continue;
      const Tags& tags_of_i = by_tag ? tags[i->instance_id] : none;
      bool match = std::all_of(filters.begin(), filters.end(), [&](const Filter& f) {
        return InstanceFilterMatches(f, *i, tags_of_i);
      });
      if (match) selected.push_back(i);
    }
    size_t end = std::min(selected.size(), start + static_cast<size_t>(max_results));
    std::vector<std::shared_ptr<const Instance>> page(
        selected.begin() + std::min(start, selected.size()), selected.begin() + end);
    std::string zone = ZoneOf(context);
    AddReservations(response, page, b_.store.account().account_id, [&](const Instance& i) {
      return xml_.Get(i, zone, [&] { return b_.store.TagsOf({i.instance_id})[i.instance_id]; });
    });
    if (end < selected.size()) AddText(response.root(), "nextToken", std::to_string(end));
    if (ids.empty()) xml_.Retain(records);
  }

  void DescribeInstanceStatus(const RequestContext& context, QueryParams& params,
                              XmlResponse& response) {
    std::vector<std::string> ids = params.List("InstanceId");
    bool all = params.Bool("IncludeAllInstances", false);
    FinishValidation(context, params);
    std::vector<std::shared_ptr<const Instance>> records =
        ids.empty() ? b_.store.InstanceRecords() : RequestedRecords(b_.store, ids);
    pugi::xml_node set = AddNode(response.root(), "instanceStatusSet");
    for (const auto& i : records) {
      if (!all && i->state != InstanceStateName::kRunning) continue;
      pugi::xml_node item = AddItem(set);
      AddText(item, "instanceId", i->instance_id);
      AddText(item, "availabilityZone", ZoneOf(context));
      AddState(item, "instanceState", i->state);
      const char* status = i->state == InstanceStateName::kRunning ? "ok" : "not-applicable";
      AddText(AddNode(item, "systemStatus"), "status", status);
      AddText(AddNode(item, "instanceStatus"), "status", status);
    }
  }

  // Start, Stop and Terminate: moves each instance from one of `from` to `to` (those already
  // in one of `keep` stay), or answers IncorrectInstanceState naming `verb`.
  void ChangeState(const RequestContext& context, QueryParams& params, XmlResponse& response,
                   const std::set<InstanceStateName>& from, InstanceStateName to,
                   const std::set<InstanceStateName>& keep, const std::string& verb,
                   bool check_capacity) {
    std::vector<std::string> ids = params.List("InstanceId");
    if (ids.empty()) throw Ec2Error::MissingParameter("InstanceId");
    bool force = params.Bool("Force", false);
    params.Get("Hibernate");
    params.Get("SkipOsShutdown");
    std::vector<Instance> instances = RequestedInstances(b_.store, ids);
    for (const Instance& i : instances) {
      if (!from.count(i.state) && !keep.count(i.state)) {
        throw Ec2Error("IncorrectInstanceState", "The instance '" + i.instance_id +
                                                     "' is not in a state from which it can be " +
                                                     verb + ".");
      }
    }
    std::lock_guard lock(launch_mutex_);
    if (check_capacity) {
      uint64_t used = UsedMemoryMib(b_.store);
      for (const Instance& i : instances) {
        if (!from.count(i.state)) continue;
        const InstanceType* type = FindInstanceType(i.instance_type);
        if (!type || !b_.capacity.Fits(*type, used)) throw InsufficientCapacity(i.instance_type);
        used += type->memory_mib;
      }
    }
    FinishValidation(context, params);
    pugi::xml_node set = AddNode(response.root(), "instancesSet");
    for (Instance& i : instances) {
      InstanceStateName previous = i.state;
      if (from.count(i.state)) {
        Instance next = i;
        next.state = to;
        next.state_transition_reason = "User initiated (" + UtcNow() + ")";
        next.state_reason_code.reset();
        next.state_reason_message.reset();
        if (b_.store.UpdateInstanceIf(next, previous)) i = next;
        if (force) b_.manager.ForceStop(i.instance_id);
      }
      pugi::xml_node item = AddItem(set);
      AddText(item, "instanceId", i.instance_id);
      AddState(item, "currentState", i.state);
      AddState(item, "previousState", previous);
    }
    b_.manager.Wake();
  }

  void RebootInstances(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::vector<std::string> ids = params.List("InstanceId");
    if (ids.empty()) throw Ec2Error::MissingParameter("InstanceId");
    std::vector<Instance> instances = RequestedInstances(b_.store, ids);
    for (const Instance& i : instances) {
      if (i.state != InstanceStateName::kRunning && i.state != InstanceStateName::kPending) {
        throw Ec2Error("IncorrectInstanceState", "The instance '" + i.instance_id +
                                                     "' is not in a state from which it can be "
                                                     "rebooted.");
      }
    }
    FinishValidation(context, params);
    for (const Instance& i : instances) b_.manager.Reboot(i.instance_id);
    AddText(response.root(), "return", "true");
  }

  // ModifyInstanceAttribute: one attribute per request, as Attribute=name&Value=v or as the
  // attribute's own structure (InstanceType.Value, UserData.Value, base64). The instance type and
  // the user data change only while the instance is stopped, as in EC2.
  void ModifyInstanceAttribute(const RequestContext& context, QueryParams& params,
                               XmlResponse& response) {
    std::string id = params.Required("InstanceId");
    CheckIdShape(id, "i", "InvalidInstanceID");
    std::optional<std::string> attribute = params.Get("Attribute");
    std::optional<std::string> value = params.Get("Value");
    std::optional<std::string> type = params.Get("InstanceType.Value");
    std::optional<std::string> user_data = params.Get("UserData.Value");
    if (int(attribute.has_value()) + int(type.has_value()) + int(user_data.has_value()) != 1) {
      if (!attribute && !type && !user_data) throw Ec2Error::MissingParameter("Attribute");
      throw Ec2Error::InvalidParameterCombination("Only one attribute can be modified at a time.");
    }
    if (attribute) {
      CheckAttributeName(*attribute);
      if (!value) throw Ec2Error::MissingParameter("Value");
      (*attribute == "instanceType" ? type : user_data) = value;
    } else if (value) {
      throw Ec2Error::InvalidParameterCombination("Value can be used only with Attribute.");
    }
    if (type && !FindInstanceType(*type)) {
      throw Ec2Error::InvalidParameterValue("InstanceType", *type,
                                            "See DescribeInstanceTypes for the offered types.");
    }
    std::optional<std::string> decoded;
    if (user_data) decoded = DecodeUserData(*user_data);
    Instance instance = RequestedInstances(b_.store, {id}).front();
    FinishValidation(context, params);
    Instance next = instance;
    if (type) next.instance_type = *type;
    if (decoded) next.user_data = *decoded;
    if (instance.state != InstanceStateName::kStopped ||
        !b_.store.UpdateInstanceIf(next, InstanceStateName::kStopped)) {
      throw Ec2Error("IncorrectInstanceState",
                     "The instance '" + id + "' is not in the 'stopped' state.");
    }
    AddText(response.root(), "return", "true");
  }

  // DescribeInstanceAttribute for the attributes Tern keeps: instanceType, userData (base64).
  void DescribeInstanceAttribute(const RequestContext& context, QueryParams& params,
                                 XmlResponse& response) {
    std::string id = params.Required("InstanceId");
    std::string attribute = params.Required("Attribute");
    CheckAttributeName(attribute);
    Instance instance = RequestedInstances(b_.store, {id}).front();
    FinishValidation(context, params);
    AddText(response.root(), "instanceId", id);
    pugi::xml_node node = AddNode(response.root(), attribute.c_str());
    if (attribute == "instanceType") {
      AddText(node, "value", instance.instance_type);
    } else if (!instance.user_data.empty()) {
      AddText(node, "value", Base64Encode(instance.user_data));
    }
  }

  void GetConsoleOutput(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::string id = params.Required("InstanceId");
    params.Bool("Latest", false);
    Instance instance = RequestedInstances(b_.store, {id}).front();
    FinishValidation(context, params);
    std::ifstream log(b_.manager.PathsOf(id).console_log(), std::ios::binary | std::ios::ate);
    std::string text;
    if (log) {
      std::streamoff size = log.tellg();
      std::streamoff from = std::max<std::streamoff>(0, size - kConsoleOutputBytes);
      log.seekg(from);
      text.resize(static_cast<size_t>(size - from));
      log.read(text.data(), size - from);
    }
    AddText(response.root(), "instanceId", id);
    AddText(response.root(), "timestamp", Iso8601(std::time(nullptr)));
    AddText(response.root(), "output", Base64Encode(text));
  }

  void DescribeInstanceTypes(const RequestContext& context, QueryParams& params,
                             XmlResponse& response) {
    std::vector<std::string> names = params.List("InstanceType");
    std::vector<Filter> filters = ParseFilters(params);
    for (const Filter& f : filters) {
      if (f.name != "instance-type") {
        throw Ec2Error("InvalidParameterValue", "The filter '" + f.name + "' is invalid");
      }
    }
    params.Int("MaxResults", 100, 5, 100);
    params.Get("NextToken");
    for (const std::string& name : names) {
      if (!FindInstanceType(name)) {
        throw Ec2Error::InvalidParameterValue("InstanceType", name,
                                              "The instance type does not exist.");
      }
    }
    FinishValidation(context, params);
    pugi::xml_node set = AddNode(response.root(), "instanceTypeSet");
    for (const InstanceType& type : InstanceTypes()) {
      if (!names.empty() && std::find(names.begin(), names.end(), type.name) == names.end()) {
        continue;
      }
      bool match = std::all_of(filters.begin(), filters.end(),
                               [&](const Filter& f) { return AnyMatches(f.values, type.name); });
      if (!match) continue;
      AddType(AddItem(set), type);
    }
  }

 private:
  void Respond(const RequestContext& context, XmlResponse& response,
               const std::vector<Instance>& instances) {
    std::map<std::string, Tags> tags = b_.store.AllTags();
    pugi::xml_node root = response.root();
    AddText(root, "reservationId", instances.front().reservation_id);
    AddText(root, "ownerId", b_.store.account().account_id);
    AddNode(root, "groupSet");
    pugi::xml_node set = AddNode(root, "instancesSet");
    for (const Instance& i : instances) {
      AddInstance(AddItem(set), i, tags[i.instance_id], ZoneOf(context));
    }
  }

  static void AddType(pugi::xml_node item, const InstanceType& type) {
    AddText(item, "instanceType", type.name);
    AddText(item, "currentGeneration", "true");
    AddText(item, "freeTierEligible", std::string(type.name) == "t3.micro" ? "true" : "false");
    AddText(AddNode(item, "supportedUsageClasses"), "item", "on-demand");
    AddText(AddNode(item, "supportedRootDeviceTypes"), "item", "ebs");
    AddText(AddNode(item, "supportedVirtualizationTypes"), "item", "hvm");
    AddText(item, "bareMetal", "false");
    AddText(item, "hypervisor", "nitro");
    AddText(AddNode(AddNode(item, "processorInfo"), "supportedArchitectures"), "item", "x86_64");
    pugi::xml_node cpu = AddNode(item, "vCpuInfo");
    AddText(cpu, "defaultVCpus", std::to_string(type.vcpus));
    AddText(cpu, "defaultCores", std::to_string(type.cores));
    AddText(cpu, "defaultThreadsPerCore", std::to_string(type.vcpus / type.cores));
    AddText(AddNode(item, "memoryInfo"), "sizeInMiB", std::to_string(type.memory_mib));
    AddText(item, "instanceStorageSupported", "false");
    AddText(item, "hibernationSupported", "true");
    AddText(item, "burstablePerformanceSupported", type.burstable ? "true" : "false");
  }

  Ec2Backend& b_;
  std::mutex launch_mutex_;
  InstanceXmlCache xml_;
};

}  // namespace

void RegisterInstanceActions(Ec2Server& server, Ec2Backend& backend) {
  // Shared by the handlers, which keep it alive.
  auto a = std::make_shared<InstanceActions>(backend);
  using S = InstanceStateName;
  server.Handle("RunInstances", [a](auto& c, auto& p, auto& r) { a->RunInstances(c, p, r); });
  server.Handle("DescribeInstances",
                [a](auto& c, auto& p, auto& r) { a->DescribeInstances(c, p, r); });
  server.Handle("DescribeInstanceStatus",
                [a](auto& c, auto& p, auto& r) { a->DescribeInstanceStatus(c, p, r); });
  server.Handle("StartInstances", [a](auto& c, auto& p, auto& r) {
    a->ChangeState(c, p, r, {S::kStopped}, S::kPending, {S::kPending, S::kRunning}, "started",
                   true);
  });
  server.Handle("StopInstances", [a](auto& c, auto& p, auto& r) {
    a->ChangeState(c, p, r, {S::kRunning}, S::kStopping, {S::kStopping, S::kStopped}, "stopped",
                   false);
  });
  server.Handle("TerminateInstances", [a](auto& c, auto& p, auto& r) {
    a->ChangeState(c, p, r, {S::kPending, S::kRunning, S::kStopping, S::kStopped}, S::kShuttingDown,
                   {S::kShuttingDown, S::kTerminated}, "terminated", false);
  });
  server.Handle("RebootInstances", [a](auto& c, auto& p, auto& r) { a->RebootInstances(c, p, r); });
  server.Handle("ModifyInstanceAttribute",
                [a](auto& c, auto& p, auto& r) { a->ModifyInstanceAttribute(c, p, r); });
  server.Handle("DescribeInstanceAttribute",
                [a](auto& c, auto& p, auto& r) { a->DescribeInstanceAttribute(c, p, r); });
  server.Handle("GetConsoleOutput",
                [a](auto& c, auto& p, auto& r) { a->GetConsoleOutput(c, p, r); });
  server.Handle("DescribeInstanceTypes",
                [a](auto& c, auto& p, auto& r) { a->DescribeInstanceTypes(c, p, r); });
}

void CheckIdShape(const std::string& id, const std::string& prefix,
                  const std::string& error_prefix) {
  std::string head = prefix + "-";
  size_t digits = id.size() - std::min(id.size(), head.size());
  bool ok = id.rfind(head, 0) == 0 && (digits == 8 || digits == 17) &&
            id.find_first_not_of("0123456789abcdef", head.size()) == std::string::npos;
  if (!ok) throw Ec2Error(error_prefix + ".Malformed", "Invalid id: \"" + id + "\"");
}

bool FilterMatches(const std::string& pattern, const std::string& value) {
  return ::fnmatch(pattern.c_str(), value.c_str(), 0) == 0;
}

bool AnyMatches(const std::vector<std::string>& filter_values, const std::string& value) {
  return std::any_of(filter_values.begin(), filter_values.end(),
                     [&](const std::string& pattern) { return FilterMatches(pattern, value); });
}

std::optional<bool> TagFilterMatches(const std::string& name,
                                     const std::vector<std::string>& values,
                                     const std::map<std::string, std::string>& tags) {
  if (name.rfind("tag:", 0) == 0) {
    auto found = tags.find(name.substr(4));
    return found != tags.end() && AnyMatches(values, found->second);
  }
  if (name == "tag-key") {
    return std::any_of(tags.begin(), tags.end(),
                       [&](const auto& tag) { return AnyMatches(values, tag.first); });
  }
  return std::nullopt;
}

}  // namespace tern::cloud
