#include "controller/api/rest/transcoding.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>

namespace ferry::rest {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

const FieldDescriptor* FindField(const Descriptor* d, absl::string_view key) {
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->json_name() == key || f->name() == key) return f;
  }
  return nullptr;
}

absl::Status BadValue(const FieldDescriptor* f, absl::string_view value,
                      absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat(
      "query parameter ", f->json_name(), "=\"", value, "\" is not ",
      expected));
}

// Sets (or adds, for repeated fields) one scalar value parsed from text.
absl::Status SetScalar(const FieldDescriptor* f, absl::string_view value,
                       Message* m) {
  const Reflection* r = m->GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      if (f->type() == FieldDescriptor::TYPE_BYTES) {
        return absl::InvalidArgumentError(absl::StrCat(
            "query parameter ", f->json_name(), " is bytes; send it in a body"));
      }
      rep ? r->AddString(m, f, std::string(value))
          : r->SetString(m, f, std::string(value));
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!absl::SimpleAtoi(value, &v)) return BadValue(f, value, "a 32-bit integer");
      rep ? r->AddInt32(m, f, v) : r->SetInt32(m, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!absl::SimpleAtoi(value, &v)) return BadValue(f, value, "a 64-bit integer");
      rep ? r->AddInt64(m, f, v) : r->SetInt64(m, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (value.empty() || value[0] == '-' || !absl::SimpleAtoi(value, &v)) {
        return BadValue(f, value, "an unsigned 32-bit integer");
      }
      rep ? r->AddUInt32(m, f, v) : r->SetUInt32(m, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (value.empty() || value[0] == '-' || !absl::SimpleAtoi(value, &v)) {
        return BadValue(f, value, "an unsigned 64-bit integer");
      }
      rep ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double v;
      if (!absl::SimpleAtod(value, &v)) return BadValue(f, value, "a number");
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE) {
        rep ? r->AddDouble(m, f, v) : r->SetDouble(m, f, v);
      } else {
        rep ? r->AddFloat(m, f, static_cast<float>(v))
            : r->SetFloat(m, f, static_cast<float>(v));
      }
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if (value == "true") {
        v = true;
      } else if (value == "false") {
        v = false;
      } else {
        return BadValue(f, value, "true or false");
      }
      rep ? r->AddBool(m, f, v) : r->SetBool(m, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const EnumValueDescriptor* e = f->enum_type()->FindValueByName(
          std::string(value));
      int number;
      if (e == nullptr && absl::SimpleAtoi(value, &number)) {
        e = f->enum_type()->FindValueByNumber(number);
      }
      if (e == nullptr) {
        std::string names;
        for (int i = 0; i < f->enum_type()->value_count(); ++i) {
          absl::StrAppend(&names, i ? ", " : "", f->enum_type()->value(i)->name());
        }
        return BadValue(f, value, absl::StrCat("one of ", names));
      }
      rep ? r->AddEnum(m, f, e) : r->SetEnum(m, f, e);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "query parameter ", f->json_name(),
      " is a structured field; it cannot be set from the query string"));
}

}  // namespace

bool HasJsonContentType(const HttpRequest& request) {
  const std::string* type = request.Header("content-type");
  if (type == nullptr) return false;
  absl::string_view media = *type;
  media = media.substr(0, media.find(';'));
  return absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(media),
                                "application/json");
}

absl::Status MergeJson(absl::string_view json, Message* message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), message, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request body is not a valid JSON ", message->GetDescriptor()->name(),
        ": ", std::string(status.message())));
  }
  return absl::OkStatus();
}

absl::Status ApplyQuery(
    const std::vector<std::pair<std::string, std::string>>& query,
    const std::set<std::string>& path_fields, Message* message) {
  const Descriptor* d = message->GetDescriptor();
  std::map<const FieldDescriptor*, int> seen;
  for (const auto& [key, value] : query) {
    const FieldDescriptor* f = FindField(d, key);
    if (f == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown query parameter \"", key, "\" for this method"));
    }
    if (path_fields.count(f->name()) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "query parameter ", key, " is set by the path; remove it"));
    }
    if (f->is_map() || f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      return SetScalar(f, value, message);  // the structured-field error
    }
    if (!f->is_repeated() && seen[f]++ > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("query parameter ", key, " given more than once"));
    }
    if (f->is_repeated() && f->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
      // Enum names cannot contain ',', so "phases=A,B" is unambiguous.
      for (absl::string_view piece : absl::StrSplit(value, ',')) {
        if (absl::Status s = SetScalar(f, piece, message); !s.ok()) return s;
      }
      continue;
    }
    if (absl::Status s = SetScalar(f, value, message); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status BindPathParam(const std::string& field, const std::string& value,
                           Message* message) {
  const FieldDescriptor* f = message->GetDescriptor()->FindFieldByName(field);
  if (f == nullptr || f->is_repeated() ||
      f->cpp_type() != FieldDescriptor::CPPTYPE_STRING) {
    // A route table bug, not the client's: say so plainly.
    return absl::InternalError(absl::StrCat(
        "route binds path parameter to ", field, ", which is not a string "
        "field of ", message->GetDescriptor()->full_name()));
  }
  const Reflection* r = message->GetReflection();
  const std::string current = r->GetString(*message, f);
  if (!current.empty() && current != value) {
    return absl::InvalidArgumentError(absl::StrCat(
        "body field ", f->json_name(), "=\"", current,
        "\" contradicts the path, which says \"", value,
        "\"; omit it from the body or make them equal"));
  }
  r->SetString(message, f, value);
  return absl::OkStatus();
}

absl::StatusOr<std::string> MessageToJson(const Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  std::string out;
  const auto status =
      google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) {
    // Reachable with invalid UTF-8 in a string field or a broken Any.
    return absl::InternalError(absl::StrCat(
        "cannot render ", message.GetDescriptor()->full_name(),
        " as JSON: ", std::string(status.message())));
  }
  return out;
}

}  // namespace ferry::rest
