// EC2 key-pair and tag actions: CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair,
// CreateTags, DeleteTags, DescribeTags.
#include <algorithm>
#include <ctime>

#include "cloud/base64.h"
#include "cloud/ec2_actions.h"
#include "cloud/key_material.h"

namespace tern::cloud {
namespace {

// EC2's key names: 1 to 255 ASCII characters.
void CheckKeyName(const std::string& name) {
  bool ok =
      !name.empty() && name.size() <= 255 &&
      std::all_of(name.begin(), name.end(), [](unsigned char c) { return c >= 32 && c < 127; });
  if (!ok) {
    throw Ec2Error::InvalidParameterValue("KeyName", name,
                                          "Key names are 1 to 255 ASCII characters.");
  }
}

// The resource type of an EC2 id (DescribeTags' resourceType), from its prefix.
std::string ResourceTypeOf(const std::string& id) {
  if (id.rfind("i-", 0) == 0) return "instance";
  if (id.rfind("ami-", 0) == 0) return "image";
  if (id.rfind("key-", 0) == 0) return "key-pair";
  return "";
}

class KeyPairActions {
 public:
  explicit KeyPairActions(Ec2Backend& backend) : b_(backend) {}

  void CreateKeyPair(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::string name = params.Required("KeyName");
    std::string type = params.Get("KeyType").value_or("rsa");
    std::string format = params.Get("KeyFormat").value_or("pem");
    Tags tags = ParseTagSpecifications(params, "key-pair");
    CheckKeyName(name);
    if (format != "pem") {
      throw Ec2Error::InvalidParameterValue("KeyFormat", format, "Only pem is offered.");
    }
    if (type != "rsa" && type != "ed25519") {
      throw Ec2Error::InvalidParameterValue("KeyType", type, "Expected rsa or ed25519.");
    }
    FinishValidation(context, params);
    KeyMaterial material = CreateKeyMaterial(type);
    KeyPair key = Save(name, material, tags);
    AddText(response.root(), "keyName", key.key_name);
    AddText(response.root(), "keyFingerprint", key.key_fingerprint);
    AddText(response.root(), "keyMaterial", material.private_key);
    AddText(response.root(), "keyPairId", key.key_pair_id);
    AddTagSet(response.root(), tags);
  }

  void ImportKeyPair(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::string name = params.Required("KeyName");
    std::string material_b64 = params.Required("PublicKeyMaterial");
    Tags tags = ParseTagSpecifications(params, "key-pair");
    CheckKeyName(name);
    std::optional<std::string> text = Base64Decode(material_b64);
    if (!text) throw Ec2Error("InvalidKey.Format", "Key is not in valid OpenSSH public key format");
    KeyMaterial material = ImportPublicKey(*text);
    FinishValidation(context, params);
    KeyPair key = Save(name, material, tags);
    AddText(response.root(), "keyName", key.key_name);
    AddText(response.root(), "keyFingerprint", key.key_fingerprint);
    AddText(response.root(), "keyPairId", key.key_pair_id);
    AddTagSet(response.root(), tags);
  }

  void DescribeKeyPairs(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::vector<std::string> names = params.List("KeyName");
    std::vector<std::string> ids = params.List("KeyPairId");
    std::vector<Filter> filters = ParseFilters(params);
    bool include_public_key = params.Bool("IncludePublicKey", false);
    for (const Filter& f : filters) {
      if (f.name != "key-name" && f.name != "key-pair-id" && f.name != "fingerprint" &&
          !TagFilterMatches(f.name, {}, {})) {
        throw Ec2Error("InvalidParameterValue", "The filter '" + f.name + "' is invalid");
      }
    }
    FinishValidation(context, params);
    std::vector<KeyPair> keys = b_.store.ListKeyPairs();
    for (const std::string& name : names) {
      if (std::none_of(keys.begin(), keys.end(), [&](auto& k) { return k.key_name == name; })) {
        throw Ec2Error("InvalidKeyPair.NotFound", "The key pair '" + name + "' does not exist");
      }
    }
    for (const std::string& id : ids) {
      if (std::none_of(keys.begin(), keys.end(), [&](auto& k) { return k.key_pair_id == id; })) {
        throw Ec2Error("InvalidKeyPair.NotFound", "The key pair ID '" + id + "' does not exist");
      }
    }
    std::map<std::string, Tags> tags = b_.store.AllTags();
    pugi::xml_node set = AddNode(response.root(), "keySet");
    for (const KeyPair& key : keys) {
      bool listed = (names.empty() && ids.empty()) ||
                    std::find(names.begin(), names.end(), key.key_name) != names.end() ||
                    std::find(ids.begin(), ids.end(), key.key_pair_id) != ids.end();
      bool match = std::all_of(filters.begin(), filters.end(), [&](const Filter& f) {
        if (auto tag = TagFilterMatches(f.name, f.values, tags[key.key_pair_id])) return *tag;
        if (f.name == "key-name") return AnyMatches(f.values, key.key_name);
        if (f.name == "key-pair-id") return AnyMatches(f.values, key.key_pair_id);
        return AnyMatches(f.values, key.key_fingerprint);
      });
      if (!listed || !match) continue;
      pugi::xml_node item = AddItem(set);
      AddText(item, "keyPairId", key.key_pair_id);
      AddText(item, "keyName", key.key_name);
      AddText(item, "keyFingerprint", key.key_fingerprint);
      AddText(item, "keyType", key.key_type);
      AddText(item, "createTime", Iso8601(key.create_time));
      if (include_public_key) AddText(item, "publicKey", key.public_key);
      AddTagSet(item, tags[key.key_pair_id]);
    }
  }

  void DeleteKeyPair(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::optional<std::string> name = params.Get("KeyName");
    std::optional<std::string> id = params.Get("KeyPairId");
    if ((!name || name->empty()) && (!id || id->empty())) {
      throw Ec2Error::MissingParameter("KeyName");
    }
    FinishValidation(context, params);
    for (const KeyPair& key : b_.store.ListKeyPairs()) {
      if ((name && key.key_name == *name) || (id && key.key_pair_id == *id)) {
        b_.store.DeleteKeyPair(key.key_name);
        b_.store.DeleteTags({key.key_pair_id}, {});
      }
    }
    AddText(response.root(), "return", "true");  // EC2 answers true for an absent key too
  }

  void CreateTags(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::vector<std::string> ids = params.List("ResourceId");
    if (ids.empty()) throw Ec2Error::MissingParameter("ResourceId");
    Tags tags = ParseTags(params, "Tag");
    if (tags.empty()) throw Ec2Error::MissingParameter("Tag");
    CheckResources(ids);
    FinishValidation(context, params);
    b_.store.SetTags(ids, tags);
    AddText(response.root(), "return", "true");
  }

  void DeleteTags(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::vector<std::string> ids = params.List("ResourceId");
    if (ids.empty()) throw Ec2Error::MissingParameter("ResourceId");
    std::vector<std::pair<std::string, std::optional<std::string>>> keys;
    for (QueryParams* tag : params.Structs("Tag"))
      keys.emplace_back(tag->Required("Key"), tag->Get("Value"));
    CheckResources(ids);
    FinishValidation(context, params);
    b_.store.DeleteTags(ids, keys);
    AddText(response.root(), "return", "true");
  }

  void DescribeTags(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::vector<Filter> filters = ParseFilters(params);
    params.Int("MaxResults", 1000, 5, 1000);
    params.Get("NextToken");
    for (const Filter& f : filters) {
      if (f.name != "resource-id" && f.name != "resource-type" && f.name != "key" &&
          f.name != "value") {
        throw Ec2Error("InvalidParameterValue", "The filter '" + f.name + "' is invalid");
      }
    }
    FinishValidation(context, params);
    pugi::xml_node set = AddNode(response.root(), "tagSet");
    for (const auto& [resource, tags] : b_.store.AllTags()) {
      for (const auto& [key, value] : tags) {
        bool match = std::all_of(filters.begin(), filters.end(), [&](const Filter& f) {
          std::string field = f.name == "resource-id" ? resource
                              : f.name == "key"       ? key
                              : f.name == "value"     ? value
                                                      : ResourceTypeOf(resource);
          return AnyMatches(f.values, field);
        });
        if (!match) continue;
        pugi::xml_node item = AddItem(set);
        AddText(item, "resourceId", resource);
        AddText(item, "resourceType", ResourceTypeOf(resource));
        AddText(item, "key", key);
        AddText(item, "value", value);
      }
    }
  }

 private:
  KeyPair Save(const std::string& name, const KeyMaterial& material, const Tags& tags) {
    KeyPair key{Store::NewId("key"),  name,
                material.fingerprint, material.key_type,
                material.public_key,  std::time(nullptr)};
    if (!b_.store.InsertKeyPair(key)) {
      throw Ec2Error("InvalidKeyPair.Duplicate", "The keypair '" + name + "' already exists.");
    }
    if (!tags.empty()) b_.store.SetTags({key.key_pair_id}, tags);
    return key;
  }

  // Every id must name an existing instance, image or key pair.
  void CheckResources(const std::vector<std::string>& ids) {
    for (const std::string& id : ids) {
      bool exists = false;
      if (ResourceTypeOf(id) == "instance") exists = b_.store.GetInstance(id).has_value();
      if (ResourceTypeOf(id) == "image") exists = b_.store.GetImage(id).has_value();
      if (ResourceTypeOf(id) == "key-pair") {
        auto keys = b_.store.ListKeyPairs();
        exists =
            std::any_of(keys.begin(), keys.end(), [&](auto& k) { return k.key_pair_id == id; });
      }
      if (ResourceTypeOf(id).empty()) {
        throw Ec2Error("InvalidID", "The ID '" + id + "' is not valid");
      }
      if (!exists) throw Ec2Error("InvalidID", "The ID '" + id + "' does not exist");
    }
  }

  Ec2Backend& b_;
};

}  // namespace

void RegisterKeyPairAndTagActions(Ec2Server& server, Ec2Backend& backend) {
  auto a = std::make_shared<KeyPairActions>(backend);
  server.Handle("CreateKeyPair", [a](auto& c, auto& p, auto& r) { a->CreateKeyPair(c, p, r); });
  server.Handle("ImportKeyPair", [a](auto& c, auto& p, auto& r) { a->ImportKeyPair(c, p, r); });
  server.Handle("DescribeKeyPairs",
                [a](auto& c, auto& p, auto& r) { a->DescribeKeyPairs(c, p, r); });
  server.Handle("DeleteKeyPair", [a](auto& c, auto& p, auto& r) { a->DeleteKeyPair(c, p, r); });
  server.Handle("CreateTags", [a](auto& c, auto& p, auto& r) { a->CreateTags(c, p, r); });
  server.Handle("DeleteTags", [a](auto& c, auto& p, auto& r) { a->DeleteTags(c, p, r); });
  server.Handle("DescribeTags", [a](auto& c, auto& p, auto& r) { a->DescribeTags(c, p, r); });
}

}  // namespace tern::cloud
