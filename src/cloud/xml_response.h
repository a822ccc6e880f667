// EC2 Query API responses in XML (pugixml): `<ActionResponse xmlns="http://ec2.amazonaws.com/
// doc/2016-11-15/"><requestId>...</requestId>...`, lists as `<fooSet><item>...</item></fooSet>`,
// and EC2's error document. Not thread-safe (one per request).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <pugixml.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "cloud/ec2_error.h"

namespace tern::cloud {

inline constexpr const char* kEc2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/";

// A serialized XML document kept as pieces: text, with AddRaw's fragments between them (shared,
// not copied in). Immutable; thread-safe to read.
class XmlBody {
 public:
  XmlBody() = default;
  explicit XmlBody(std::string text) : text_(std::move(text)) {}

  // The document's length (bytes).
  size_t size() const { return size_; }
  // Calls `write` with the document's consecutive pieces; stops, returning false, at the
  // first call that returns false.
  bool WriteTo(const std::function<bool(std::string_view)>& write) const;
  std::string ToString() const;

 private:
  friend class XmlResponse;
  struct Hole {
    size_t begin, end;  // the placeholder's bytes in text_
    std::shared_ptr<const std::string> fragment;
  };
  std::string text_;
  std::vector<Hole> holes_;  // in order
  size_t size_ = text_.size();
};

class XmlResponse {
 public:
  XmlResponse(const std::string& action, const std::string& request_id);

  // The <ActionResponse> element, to add the action's fields to.
  pugi::xml_node root() { return root_; }
  // The document with its XML declaration.
  XmlBody Render() const;
  std::string ToString() const { return Render().ToString(); }

  // Appends `xml` to `parent` as it is, without parsing it again: elements this process
  // serialized (SerializeElement), cached by the caller. Where several are appended, they
  // come out in order.
  void AddRaw(pugi::xml_node parent, std::shared_ptr<const std::string> xml);

 private:
  pugi::xml_document doc_;
  pugi::xml_node root_;
  std::vector<std::shared_ptr<const std::string>> raw_;  // AddRaw's fragments, by index
};

// `element` and its subtree as XML text (no declaration, no indentation), for AddRaw.
std::string SerializeElement(pugi::xml_node element);

// Appends <name>text</name> to `parent`; returns it.
pugi::xml_node AddText(pugi::xml_node parent, const char* name, const std::string& text);
// Appends an empty element <name/> (a list such as instancesSet, or a structure).
pugi::xml_node AddNode(pugi::xml_node parent, const char* name);
// Appends <item/> to a list element.
inline pugi::xml_node AddItem(pugi::xml_node list) { return AddNode(list, "item"); }
// Appends <tagSet> with the tags (sorted by key) when there are any.
void AddTagSet(pugi::xml_node parent, const std::map<std::string, std::string>& tags);

// EC2's error document: <Response><Errors><Error><Code/><Message/></Error></Errors>
// <RequestID/></Response>.
std::string ErrorXml(const Ec2Error& error, const std::string& request_id);

// A random (version 4) UUID, EC2's request id format.
std::string NewRequestId();

// Unix seconds as EC2's timestamps (ISO 8601, UTC, milliseconds: 2026-11-21T10:00:00.000Z).
std::string Iso8601(int64_t unix_seconds);

}  // namespace tern::cloud
