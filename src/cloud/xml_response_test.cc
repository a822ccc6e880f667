// Unit tests for EC2 XML responses: namespace, request id, sets, errors, ids and timestamps.
#include "cloud/xml_response.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tern::cloud {
namespace {

TEST(XmlResponseTest, ResponseHasNamespaceRequestIdAndSets) {
  XmlResponse response("DescribeInstances", "req-1");
  pugi::xml_node item = AddItem(AddNode(response.root(), "reservationSet"));
  AddText(item, "reservationId", "r-1 & <2>");
  AddTagSet(item, {{"b", "2"}, {"a", "1"}});
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(response.ToString().c_str()));
  pugi::xml_node root = doc.child("DescribeInstancesResponse");
  EXPECT_STREQ(root.attribute("xmlns").value(), kEc2Namespace);
  EXPECT_STREQ(root.child_value("requestId"), "req-1");
  pugi::xml_node got = root.child("reservationSet").child("item");
  EXPECT_STREQ(got.child_value("reservationId"), "r-1 & <2>");
  EXPECT_STREQ(got.child("tagSet").first_child().child_value("key"), "a");
  EXPECT_EQ(response.ToString().rfind("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", 0), 0u);
}

// Raw fragments land where AddRaw put them, in order, and text that looks like the placeholder
// stays text.
TEST(XmlResponseTest, RawFragmentsAreSplicedInPlace) {
  pugi::xml_document source;
  pugi::xml_node element = source.append_child("item");
  AddText(element, "instanceId", "i-1 <?tern-raw 0?>");
  auto fragment = std::make_shared<const std::string>(SerializeElement(element));
  EXPECT_EQ(*fragment, "<item><instanceId>i-1 &lt;?tern-raw 0?&gt;</instanceId></item>");

  XmlResponse response("DescribeInstances", "req-1");
  pugi::xml_node set = AddNode(response.root(), "instancesSet");
  response.AddRaw(set, fragment);
  AddText(AddItem(set), "instanceId", "i-2");
  response.AddRaw(set,
                  std::make_shared<const std::string>("<item><instanceId>i-3</instanceId></item>"));
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(response.ToString().c_str())) << response.ToString();
  std::vector<std::string> ids;
  for (pugi::xml_node item : doc.child("DescribeInstancesResponse").child("instancesSet")) {
    ids.push_back(item.child_value("instanceId"));
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"i-1 <?tern-raw 0?>", "i-2", "i-3"}));
}

TEST(XmlResponseTest, ErrorDocumentHasEc2Shape) {
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(
      ErrorXml(Ec2Error("InvalidInstanceID.NotFound", "The instance ID 'i-1' does not exist"),
               "req-2")
          .c_str()));
  pugi::xml_node error = doc.child("Response").child("Errors").child("Error");
  EXPECT_STREQ(error.child_value("Code"), "InvalidInstanceID.NotFound");
  EXPECT_STREQ(error.child_value("Message"), "The instance ID 'i-1' does not exist");
  EXPECT_STREQ(doc.child("Response").child_value("RequestID"), "req-2");
}

TEST(XmlResponseTest, RequestIdsAndTimestamps) {
  std::string id = NewRequestId();
  EXPECT_EQ(id.size(), 36u);
  EXPECT_EQ(id[14], '4');
  EXPECT_NE(NewRequestId(), id);
  EXPECT_EQ(Iso8601(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(Iso8601(1763719200), "2025-11-21T10:00:00.000Z");
}

}  // namespace
}  // namespace tern::cloud
