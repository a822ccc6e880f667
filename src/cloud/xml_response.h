// EC2 Query API responses in XML (pugixml): `<ActionResponse xmlns="http://ec2.amazonaws.com/
// doc/2016-11-15/"><requestId>...</requestId>...`, lists as `<fooSet><item>...</item></fooSet>`,
// and EC2's error document. Not thread-safe (one per request).
#pragma once

#include <cstdint>
#include <map>
#include <pugixml.hpp>
#include <string>

#include "cloud/ec2_error.h"

namespace tern::cloud {

inline constexpr const char* kEc2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/";

class XmlResponse {
 public:
  XmlResponse(const std::string& action, const std::string& request_id);

  // The <ActionResponse> element, to add the action's fields to.
  pugi::xml_node root() { return root_; }
  // The document with its XML declaration.
  std::string ToString() const;

 private:
  pugi::xml_document doc_;
  pugi::xml_node root_;
};

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
