// Unit tests for QueryParams: lists, structures, filters, tags, typed reads and unknown
// parameters, with botocore's EC2 serialization.
#include "cloud/query.h"

#include <gtest/gtest.h>

#include "cloud/ec2_error.h"

namespace tern::cloud {
namespace {

QueryParams Params(std::map<std::string, std::string> params) {
  return QueryParams(std::move(params));
}

std::string CodeOf(const std::function<void()>& call) {
  try {
    call();
    return "ok";
  } catch (const Ec2Error& e) {
    return e.code();
  }
}

TEST(QueryParamsTest, ListsAreOrderedByNumericIndex) {
  QueryParams params = Params({{"Action", "StopInstances"},
                               {"InstanceId.10", "c"},
                               {"InstanceId.2", "b"},
                               {"InstanceId.1", "a"},
                               {"Force", "true"}});
  EXPECT_EQ(params.List("InstanceId"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(params.Bool("Force", false));
  EXPECT_EQ(CodeOf([&] { params.RejectUnread(); }), "ok");
  QueryParams bad = Params({{"InstanceId.x", "a"}});
  EXPECT_EQ(CodeOf([&] { bad.List("InstanceId"); }), "InvalidParameterValue");
  QueryParams zero = Params({{"InstanceId.0", "a"}});
  EXPECT_EQ(CodeOf([&] { zero.List("InstanceId"); }), "InvalidParameterValue");
}

TEST(QueryParamsTest, FiltersAndTagSpecifications) {
  QueryParams params = Params({{"Filter.1.Name", "tag:Name"},
                               {"Filter.1.Value.1", "web"},
                               {"Filter.1.Value.2", "db"},
                               {"Filter.2.Name", "instance-state-name"},
                               {"Filter.2.Value.1", "running"},
                               {"TagSpecification.1.ResourceType", "instance"},
                               {"TagSpecification.1.Tag.1.Key", "team"},
                               {"TagSpecification.1.Tag.1.Value", "tern"}});
  std::vector<Filter> filters = ParseFilters(params);
  ASSERT_EQ(filters.size(), 2u);
  EXPECT_EQ(filters[0].name, "tag:Name");
  EXPECT_EQ(filters[0].values, (std::vector<std::string>{"web", "db"}));
  EXPECT_EQ(ParseTagSpecifications(params, "instance"), (Tags{{"team", "tern"}}));
  EXPECT_EQ(CodeOf([&] { params.RejectUnread(); }), "ok");
  EXPECT_EQ(CodeOf([&] { ParseTagSpecifications(params, "volume"); }), "InvalidParameterValue");
}

TEST(QueryParamsTest, TypedReadsAndMissingOrUnknownParameters) {
  QueryParams params = Params({{"MaxResults", "1001"},
                               {"DryRun", "yes"},
                               {"Bogus", "1"},
                               {"Filter.1.Name", "x"},
                               {"Filter.1.Extra", "y"}});
  EXPECT_EQ(CodeOf([&] { params.Int("MaxResults", 0, 5, 1000); }), "InvalidParameterValue");
  EXPECT_EQ(params.Int("Absent", 7, 0, 10), 7);
  EXPECT_EQ(CodeOf([&] { params.Bool("DryRun", false); }), "InvalidParameterValue");
  EXPECT_EQ(CodeOf([&] { params.Required("ImageId"); }), "MissingParameter");
  EXPECT_EQ(CodeOf([&] { params.RejectUnread(); }), "UnknownParameter");
  params.Get("Bogus");
  ParseFilters(params);
  try {
    params.RejectUnread();
    FAIL();
  } catch (const Ec2Error& e) {
    EXPECT_EQ(std::string(e.what()), "The parameter Filter.1.Extra is not recognized");
  }
}

TEST(QueryParamsTest, TagsAreValidated) {
  QueryParams aws = Params({{"Tag.1.Key", "aws:x"}});
  EXPECT_EQ(CodeOf([&] { ParseTags(aws, "Tag"); }), "InvalidParameterValue");
  QueryParams empty = Params({{"Tag.1.Key", ""}});
  EXPECT_EQ(CodeOf([&] { ParseTags(empty, "Tag"); }), "InvalidParameterValue");
  QueryParams long_value = Params({{"Tag.1.Key", "k"}, {"Tag.1.Value", std::string(257, 'v')}});
  EXPECT_EQ(CodeOf([&] { ParseTags(long_value, "Tag"); }), "InvalidParameterValue");
  std::map<std::string, std::string> many;
  for (int i = 1; i <= 51; ++i) many["Tag." + std::to_string(i) + ".Key"] = "k" + std::to_string(i);
  QueryParams too_many = Params(many);
  EXPECT_EQ(CodeOf([&] { ParseTags(too_many, "Tag"); }), "TagLimitExceeded");
  QueryParams no_key = Params({{"Tag.1.Value", "v"}});
  EXPECT_EQ(CodeOf([&] { ParseTags(no_key, "Tag"); }), "MissingParameter");
}

}  // namespace
}  // namespace tern::cloud
