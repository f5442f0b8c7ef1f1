// openapi.json describes exactly what the server serves: every served
// route is documented, every documented operation is served, the message
// schemas carry the proto JSON names, and the file is what the generator
// produces today (so it cannot go stale silently).
#include <fstream>
#include <set>
#include <sstream>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "controller/api/rest/openapi_gen.h"
#include "controller/api/rest/rest_test_fixture.h"
#include "gmock/gmock.h"

namespace ferry::rest::testing {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

constexpr char kPath[] = "controller/api/rest/openapi.json";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "/v1/hosts/{hostName}:heartbeat" -> "/v1/hosts/{}:heartbeat"
std::string Normalize(std::string path) {
  std::string out;
  bool in_var = false;
  for (char c : path) {
    if (c == '{') {
      in_var = true;
      out += "{}";
    } else if (c == '}') {
      in_var = false;
    } else if (!in_var) {
      out += c;
    }
  }
  return out;
}

class OpenApiTest : public RestFixture {
 protected:
  void SetUp() override {
    RestFixture::SetUp();
    text_ = ReadFile(kPath);
    ASSERT_FALSE(text_.empty()) << kPath << " missing from runfiles";
    auto s = google::protobuf::util::JsonStringToMessage(text_, &doc_);
    ASSERT_TRUE(s.ok()) << "openapi.json is not JSON: " << s.ToString();
  }
  const Struct& Paths() { return doc_.fields().at("paths").struct_value(); }
  const Struct& Schemas() {
    return doc_.fields().at("components").struct_value().fields().at(
        "schemas").struct_value();
  }

  std::string text_;
  Struct doc_;
};

TEST_F(OpenApiTest, IsOpenApi3) {
  EXPECT_EQ(doc_.fields().at("openapi").string_value().substr(0, 2), "3.");
  EXPECT_TRUE(Schemas().fields().count("Error"));
}

TEST_F(OpenApiTest, FileIsUpToDate) {
  EXPECT_TRUE(text_ == GenerateOpenApi())
      << "openapi.json is stale; regenerate it with\n  bazel run "
         "//controller/api/rest:openapi_gen > controller/api/rest/openapi.json";
}

TEST_F(OpenApiTest, EveryServedRouteIsDocumented) {
  std::set<std::pair<std::string, std::string>> documented;
  for (const auto& [path, item] : Paths().fields()) {
    for (const auto& [method, op] : item.struct_value().fields()) {
      documented.emplace(absl::AsciiStrToUpper(method), Normalize(path));
    }
  }
  std::set<std::pair<std::string, std::string>> served;
  for (const auto& [method, path] : rest_->routes()) {
    served.emplace(method, Normalize(path));
    EXPECT_TRUE(documented.count({method, Normalize(path)}))
        << method << " " << path << " is served but not in openapi.json";
  }
  for (const auto& op : documented) {
    EXPECT_TRUE(served.count(op))
        << op.first << " " << op.second << " is documented but not served";
  }
}

// Calls every documented operation with its path variables filled in; none
// may come back as an unknown route (404 NOT_FOUND from the router) or 405.
TEST_F(OpenApiTest, EveryDocumentedOperationIsServed) {
  int operations = 0;
  for (const auto& [path, item] : Paths().fields()) {
    std::string concrete;
    bool in_var = false;
    for (char c : path) {
      if (c == '{') {
        in_var = true;
        concrete += "x1";
      } else if (c == '}') {
        in_var = false;
      } else if (!in_var) {
        concrete += c;
      }
    }
    for (const auto& [method, op] : item.struct_value().fields()) {
      ++operations;
      const std::string m = absl::AsciiStrToUpper(method);
      TestResponse r = Call(m, concrete, m == "POST" ? "{}" : "");
      EXPECT_NE(r.status, 405) << m << " " << concrete;
      EXPECT_NE(r.status, 404) << m << " " << concrete << ": " << r.body;
      EXPECT_EQ(r.status, 200) << m << " " << concrete << ": " << r.body;
      EXPECT_EQ(fake_.last_rpc(), op.struct_value().fields().at(
                                      "operationId").string_value());
    }
  }
  EXPECT_EQ(operations, 17);
}

// Each message schema lists exactly the proto's JSON field names.
TEST_F(OpenApiTest, MessageSchemasUseProtoJsonNames) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  int checked = 0;
  for (const auto& [name, schema] : Schemas().fields()) {
    const auto* d = pool->FindMessageTypeByName("ferry.v1." + name);
    if (d == nullptr) continue;  // enums, Error
    ++checked;
    const Struct& props =
        schema.struct_value().fields().at("properties").struct_value();
    std::set<std::string> want, got;
    for (int i = 0; i < d->field_count(); ++i) want.insert(d->field(i)->json_name());
    for (const auto& [field, v] : props.fields()) got.insert(field);
    EXPECT_EQ(got, want) << name;
  }
  EXPECT_GT(checked, 30);
}

}  // namespace
}  // namespace ferry::rest::testing
