#include "controller/api/rest/openapi_gen.h"

#include <cctype>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include <google/protobuf/descriptor.h>
#include "controller/api/rest/errors.h"
#include "controller/api/rest/router.h"
#include "controller/api/rest/routes.h"
#include "proto/controller.pb.h"

namespace ferry::rest {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;

// A JSON value with insertion-ordered objects, so the output is stable and
// reads in a sensible order (the protobuf Struct printer sorts keys).
class Json {
 public:
  static Json Str(std::string s) { return Json(kString, std::move(s)); }
  static Json Raw(std::string literal) { return Json(kRaw, std::move(literal)); }
  static Json Obj() { return Json(kObject, ""); }
  static Json Arr() { return Json(kArray, ""); }

  Json& Set(const std::string& key, Json value) {
    for (auto& [k, v] : members_) {
      if (k == key) {
        v = std::move(value);
        return v;
      }
    }
    members_.emplace_back(key, std::move(value));
    return members_.back().second;
  }
  Json& Set(const std::string& key, const char* s) { return Set(key, Str(s)); }
  Json& Push(Json value) {
    members_.emplace_back("", std::move(value));
    return members_.back().second;
  }

  void Dump(std::string* out, int indent) const {
    const std::string pad(indent + 2, ' ');
    switch (kind_) {
      case kString:
        absl::StrAppend(out, "\"", JsonEscape(text_), "\"");
        return;
      case kRaw:
        *out += text_;
        return;
      case kObject:
      case kArray: {
        const bool obj = kind_ == kObject;
        if (members_.empty()) {
          *out += obj ? "{}" : "[]";
          return;
        }
        *out += obj ? "{\n" : "[\n";
        for (size_t i = 0; i < members_.size(); ++i) {
          *out += pad;
          if (obj) absl::StrAppend(out, "\"", JsonEscape(members_[i].first), "\": ");
          members_[i].second.Dump(out, indent + 2);
          *out += i + 1 < members_.size() ? ",\n" : "\n";
        }
        absl::StrAppend(out, std::string(indent, ' '), obj ? "}" : "]");
        return;
      }
    }
  }

 private:
  enum Kind { kString, kRaw, kObject, kArray };
  Json(Kind kind, std::string text) : kind_(kind), text_(std::move(text)) {}
  Kind kind_;
  std::string text_;
  std::vector<std::pair<std::string, Json>> members_;
};

const google::protobuf::ServiceDescriptor* Service() {
  // Referencing a message's descriptor makes sure controller.pb.cc is linked
  // and registered before the pool lookup.
  return ferry::v1::Host::descriptor()->file()->FindServiceByName(
      "ControllerService");
}

Json Ref(const std::string& name) {
  Json j = Json::Obj();
  j.Set("$ref", Json::Str("#/components/schemas/" + name));
  return j;
}

class Generator {
 public:
  std::string Run();

 private:
  Json FieldSchema(const FieldDescriptor* f, bool ignore_repeated = false);
  void AddMessage(const Descriptor* d);
  void AddEnum(const EnumDescriptor* e);
  Json Operation(const RouteDoc& route);

  // Component schemas by name; std::map keeps them sorted for readers.
  std::map<std::string, Json> schemas_;
};

Json Generator::FieldSchema(const FieldDescriptor* f, bool ignore_repeated) {
  if (f->is_map()) {
    Json j = Json::Obj();
    j.Set("type", "object");
    j.Set("additionalProperties",
          FieldSchema(f->message_type()->map_value(), true));
    return j;
  }
  if (f->is_repeated() && !ignore_repeated) {
    Json j = Json::Obj();
    j.Set("type", "array");
    j.Set("items", FieldSchema(f, true));
    return j;
  }
  Json j = Json::Obj();
  switch (f->type()) {
    case FieldDescriptor::TYPE_STRING:
      j.Set("type", "string");
      break;
    case FieldDescriptor::TYPE_BYTES:
      j.Set("type", "string");
      j.Set("format", "byte");
      break;
    case FieldDescriptor::TYPE_BOOL:
      j.Set("type", "boolean");
      break;
    case FieldDescriptor::TYPE_DOUBLE:
    case FieldDescriptor::TYPE_FLOAT:
      j.Set("type", "number");
      j.Set("format", f->type() == FieldDescriptor::TYPE_DOUBLE ? "double" : "float");
      break;
    case FieldDescriptor::TYPE_INT32:
    case FieldDescriptor::TYPE_SINT32:
    case FieldDescriptor::TYPE_SFIXED32:
      j.Set("type", "integer");
      j.Set("format", "int32");
      break;
    case FieldDescriptor::TYPE_UINT32:
    case FieldDescriptor::TYPE_FIXED32:
      j.Set("type", "integer");
      j.Set("format", "int64");
      j.Set("minimum", Json::Raw("0"));
      j.Set("maximum", Json::Raw("4294967295"));
      break;
    case FieldDescriptor::TYPE_INT64:
    case FieldDescriptor::TYPE_SINT64:
    case FieldDescriptor::TYPE_SFIXED64:
    case FieldDescriptor::TYPE_UINT64:
    case FieldDescriptor::TYPE_FIXED64: {
      // Proto JSON writes 64-bit integers as decimal strings (and accepts
      // numbers), since JSON numbers lose precision past 2^53.
      const bool is_unsigned = f->type() == FieldDescriptor::TYPE_UINT64 ||
                               f->type() == FieldDescriptor::TYPE_FIXED64;
      j.Set("type", "string");
      j.Set("format", is_unsigned ? "uint64" : "int64");
      break;
    }
    case FieldDescriptor::TYPE_ENUM:
      AddEnum(f->enum_type());
      return Ref(f->enum_type()->name());
    case FieldDescriptor::TYPE_MESSAGE:
    case FieldDescriptor::TYPE_GROUP: {
      const std::string& full = f->message_type()->full_name();
      if (full == "google.protobuf.Timestamp") {
        j.Set("type", "string");
        j.Set("format", "date-time");
        j.Set("example", "2026-01-02T15:04:05Z");
        break;
      }
      if (full == "google.protobuf.Duration") {
        j.Set("type", "string");
        j.Set("pattern", "^-?[0-9]+(\\.[0-9]{1,9})?s$");
        j.Set("example", "1.5s");
        break;
      }
      AddMessage(f->message_type());
      return Ref(f->message_type()->name());
    }
  }
  return j;
}

void Generator::AddEnum(const EnumDescriptor* e) {
  if (schemas_.count(e->name()) != 0) return;
  Json j = Json::Obj();
  j.Set("type", "string");
  Json values = Json::Arr();
  for (int i = 0; i < e->value_count(); ++i) {
    values.Push(Json::Str(e->value(i)->name()));
  }
  j.Set("enum", std::move(values));
  schemas_.emplace(e->name(), std::move(j));
}

void Generator::AddMessage(const Descriptor* d) {
  if (schemas_.count(d->name()) != 0) return;
  // Placeholder first: recursive messages must not recurse forever.
  schemas_.emplace(d->name(), Json::Obj());
  Json j = Json::Obj();
  j.Set("type", "object");
  j.Set("description", Json::Str(absl::StrCat("proto ", d->full_name())));
  Json props = Json::Obj();
  for (int i = 0; i < d->field_count(); ++i) {
    props.Set(d->field(i)->json_name(), FieldSchema(d->field(i)));
  }
  j.Set("properties", std::move(props));
  j.Set("additionalProperties", Json::Raw("false"));
  schemas_.at(d->name()) = std::move(j);
}

Json Generator::Operation(const RouteDoc& route) {
  const auto* service = Service();
  const auto* method = service->FindMethodByName(route.rpc);
  const Descriptor* in = method->input_type();
  const Descriptor* out = method->output_type();
  AddMessage(in);
  AddMessage(out);

  Json op = Json::Obj();
  op.Set("operationId", Json::Str(route.rpc));
  op.Set("summary", Json::Str(route.summary));
  op.Set("tags", Json::Arr()).Push(Json::Str(
      route.path.substr(4, route.path.find_first_of("/:{", 4) - 4)));
  Json params = Json::Arr();
  std::set<std::string> path_fields;
  auto t = PathTemplate::Parse(route.path);
  for (const std::string& var : t->variables()) {
    path_fields.insert(var);
    Json p = Json::Obj();
    p.Set("name", Json::Str(in->FindFieldByName(var)->json_name()));
    p.Set("in", "path");
    p.Set("required", Json::Raw("true"));
    p.Set("description",
          Json::Str(absl::StrCat(in->name(), ".", var,
                                 " (percent-encode '/', ':' and '%')")));
    Json s = Json::Obj();
    s.Set("type", "string");
    p.Set("schema", std::move(s));
    params.Push(std::move(p));
  }
  if (!route.json_body) {
    for (int i = 0; i < in->field_count(); ++i) {
      const FieldDescriptor* f = in->field(i);
      if (path_fields.count(f->name()) != 0) continue;
      Json p = Json::Obj();
      p.Set("name", Json::Str(f->json_name()));
      p.Set("in", "query");
      p.Set("description",
            Json::Str(absl::StrCat(in->name(), ".", f->name(),
                                   f->is_repeated()
                                       ? " (repeat the parameter, or comma-"
                                         "separate enum names)"
                                       : "")));
      p.Set("schema", FieldSchema(f));
      if (f->is_repeated()) {
        p.Set("style", "form");
        p.Set("explode", Json::Raw("true"));
      }
      params.Push(std::move(p));
    }
  }
  op.Set("parameters", std::move(params));
  if (route.json_body) {
    Json body = Json::Obj();
    body.Set("required", Json::Raw("false"));
    body.Set("description",
             Json::Str("The request message as JSON; may be empty. Fields "
                       "bound by the path may be omitted, or must equal the "
                       "path. Unknown fields are rejected."));
    body.Set("content", Json::Obj())
        .Set("application/json", Json::Obj())
        .Set("schema", Ref(in->name()));
    op.Set("requestBody", std::move(body));
  }
  Json responses = Json::Obj();
  Json ok = Json::Obj();
  if (route.streaming) {
    ok.Set("description",
           Json::Str(absl::StrCat(
               "A stream of ", out->name(),
               " records, one JSON object per line (chunked transfer "
               "encoding). A failure after the first line arrives as a last "
               "line {\"error\":{...}} (see Error).")));
    ok.Set("content", Json::Obj())
        .Set("application/x-ndjson", Json::Obj())
        .Set("schema", Ref(out->name()));
  } else {
    ok.Set("description", Json::Str(out->name()));
    ok.Set("content", Json::Obj())
        .Set("application/json", Json::Obj())
        .Set("schema", Ref(out->name()));
  }
  responses.Set("200", std::move(ok));
  Json error = Json::Obj();
  error.Set("$ref", "#/components/responses/Error");
  responses.Set("default", std::move(error));
  op.Set("responses", std::move(responses));
  return op;
}

Json ErrorSchema() {
  Json codes = Json::Arr();
  for (int c = 0; c <= 16; ++c) {
    codes.Push(Json::Str(std::string(
        GrpcCodeName(static_cast<grpc::StatusCode>(c)))));
  }
  Json inner = Json::Obj();
  inner.Set("type", "object");
  Json props = Json::Obj();
  Json code = Json::Obj();
  code.Set("type", "integer");
  code.Set("description", "The HTTP status code.");
  props.Set("code", std::move(code));
  Json status = Json::Obj();
  status.Set("type", "string");
  status.Set("description",
             "google.rpc.Code name. HTTP mapping: INVALID_ARGUMENT, "
             "FAILED_PRECONDITION, OUT_OF_RANGE 400; UNAUTHENTICATED 401; "
             "PERMISSION_DENIED 403; NOT_FOUND 404; ALREADY_EXISTS, ABORTED "
             "409; RESOURCE_EXHAUSTED 429; CANCELLED 499; INTERNAL, UNKNOWN, "
             "DATA_LOSS 500; UNIMPLEMENTED 501; UNAVAILABLE 503; "
             "DEADLINE_EXCEEDED 504. HTTP-level errors: 405 UNIMPLEMENTED "
             "(with Allow), 408 DEADLINE_EXCEEDED, 411/415 INVALID_ARGUMENT, "
             "413/431 RESOURCE_EXHAUSTED.");
  status.Set("enum", std::move(codes));
  props.Set("status", std::move(status));
  Json message = Json::Obj();
  message.Set("type", "string");
  message.Set("description", "What was wrong and what to do.");
  props.Set("message", std::move(message));
  inner.Set("properties", std::move(props));
  Json required = Json::Arr();
  for (const char* r : {"code", "status", "message"}) required.Push(Json::Str(r));
  inner.Set("required", std::move(required));

  Json j = Json::Obj();
  j.Set("type", "object");
  j.Set("properties", Json::Obj()).Set("error", std::move(inner));
  j.Set("required", Json::Arr()).Push(Json::Str("error"));
  return j;
}

std::string Generator::Run() {
  Json root = Json::Obj();
  root.Set("openapi", "3.0.3");
  Json& info = root.Set("info", Json::Obj());
  info.Set("title", "ferry controller REST API");
  info.Set("version", "v1");
  info.Set("description",
           "The JSON mapping of ferry.v1.ControllerService "
           "(proto/controller.proto): protobuf's canonical JSON (lowerCamelCase "
           "names, enums by name, 64-bit integers as strings, RFC 3339 "
           "timestamps, durations like \"1.5s\"). Generated by "
           "//controller/api/rest:openapi_gen; do not edit by hand.");
  std::vector<std::string> order;
  std::map<std::string, Json> items;
  for (const RouteDoc& route : ControllerRouteDocs()) {
    // OpenAPI path variables use the JSON (camelCase) names.
    std::string path = route.path;
    const Descriptor* in = Service()
                               ->FindMethodByName(route.rpc)
                               ->input_type();
    for (const std::string& var : PathTemplate::Parse(route.path)->variables()) {
      path = absl::StrReplaceAll(
          path, {{"{" + var + "}",
                  "{" + in->FindFieldByName(var)->json_name() + "}"}});
    }
    std::string method = route.method;
    for (char& c : method) c = static_cast<char>(std::tolower(c));
    if (items.count(path) == 0) {
      order.push_back(path);
      items.emplace(path, Json::Obj());
    }
    items.at(path).Set(method, Operation(route));
  }
  Json& paths = root.Set("paths", Json::Obj());
  for (const std::string& path : order) {
    paths.Set(path, std::move(items.at(path)));
  }
  schemas_.emplace("Error", ErrorSchema());
  Json& components = root.Set("components", Json::Obj());
  Json& schemas = components.Set("schemas", Json::Obj());
  for (auto& [name, schema] : schemas_) schemas.Set(name, std::move(schema));
  Json error = Json::Obj();
  error.Set("description",
            "Any failure: {\"error\":{\"code\",\"status\",\"message\"}}.");
  error.Set("content", Json::Obj())
      .Set("application/json", Json::Obj())
      .Set("schema", Ref("Error"));
  components.Set("responses", Json::Obj()).Set("Error", std::move(error));
  std::string out;
  root.Dump(&out, 0);
  out += "\n";
  return out;
}

}  // namespace

std::string GenerateOpenApi() { return Generator().Run(); }

}  // namespace ferry::rest
