#include "controller/api/rest/routes.h"

#include <chrono>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "controller/api/rest/errors.h"
#include "controller/api/rest/transcoding.h"

namespace ferry::rest {
namespace {

using ferry::v1::ControllerService;
using Stub = ControllerService::Stub;

// Where a route's request fields come from besides the path.
enum class Body {
  kNone,   // query parameters only (GET, DELETE)
  kWhole,  // the JSON body is the whole request message (POST)
};

constexpr absl::string_view kNdjson = "application/x-ndjson";

void SendStatus(ResponseWriter& w, const absl::Status& s) {
  const auto code = static_cast<grpc::StatusCode>(s.code());
  const int http = HttpStatusFromGrpc(code);
  SendError(w, http, GrpcCodeName(code), s.message());
}

// Fills `req` from the HTTP request; on failure answers and returns false.
bool Decode(const HttpRequest& http, const PathParams& params, Body body,
            google::protobuf::Message* req, ResponseWriter& w) {
  if (body == Body::kWhole) {
    if (!http.body.empty()) {
      if (!HasJsonContentType(http)) {
        SendError(w, 415, "INVALID_ARGUMENT",
                  "request body must be JSON: set Content-Type: "
                  "application/json");
        return false;
      }
      if (absl::Status s = MergeJson(http.body, req); !s.ok()) {
        SendStatus(w, s);
        return false;
      }
    }
  } else if (!http.body.empty()) {
    SendError(w, 400, "INVALID_ARGUMENT",
              absl::StrCat(http.method,
                           " takes no request body; pass parameters in the "
                           "query string"));
    return false;
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> query =
      ParseQuery(http.query);
  if (!query.ok()) {
    SendStatus(w, query.status());
    return false;
  }
  if (body == Body::kWhole && !query->empty()) {
    SendError(w, 400, "INVALID_ARGUMENT",
              absl::StrCat("this method takes its fields in the JSON body, "
                           "not the query string (got \"",
                           query->front().first, "\")"));
    return false;
  }
  std::set<std::string> path_fields;
  for (const auto& [field, value] : params) path_fields.insert(field);
  if (absl::Status s = ApplyQuery(*query, path_fields, req); !s.ok()) {
    SendStatus(w, s);
    return false;
  }
  for (const auto& [field, value] : params) {
    if (absl::Status s = BindPathParam(field, value, req); !s.ok()) {
      SendStatus(w, s);
      return false;
    }
  }
  return true;
}

void SetDeadline(grpc::ClientContext* ctx, absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return;
  ctx->set_deadline(std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(timeout));
}

template <typename Req, typename Resp>
Router::Handler Unary(std::shared_ptr<const Backend> backend, Body body,
                      grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                   const Req&, Resp*)) {
  return [backend, body, method](const HttpRequest& http,
                                 const PathParams& params, ResponseWriter& w) {
    Req req;
    if (!Decode(http, params, body, &req, w)) return;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, backend->rpc_timeout);
    Resp resp;
    grpc::Status status;
    {
      // Stop() must not wait for a slow backend call.
      auto cancel = w.OnCancel([&ctx] { ctx.TryCancel(); }, false);
      status = ((*backend->stub).*method)(&ctx, req, &resp);
    }
    if (!status.ok()) {
      w.Send(HttpStatusFromGrpc(status.error_code()), "application/json",
             ErrorJsonFromGrpc(status));
      return;
    }
    absl::StatusOr<std::string> json = MessageToJson(resp);
    if (!json.ok()) {
      SendStatus(w, json.status());
      return;
    }
    w.Send(200, "application/json", *json);
  };
}

// A server-streaming RPC as newline-delimited JSON over a chunked response.
// Headers wait for the first message, so an RPC failing at once (NOT_FOUND)
// still gets a proper status code. A failure after that cannot change the
// status line; it becomes a last line {"error":{...}} before the stream
// ends. The client going away cancels the RPC.
template <typename Req, typename Resp>
Router::Handler Streaming(
    std::shared_ptr<const Backend> backend, Body body,
    std::unique_ptr<grpc::ClientReader<Resp>> (Stub::*method)(
        grpc::ClientContext*, const Req&)) {
  return [backend, body, method](const HttpRequest& http,
                                 const PathParams& params, ResponseWriter& w) {
    Req req;
    if (!Decode(http, params, body, &req, w)) return;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, backend->stream_timeout);
    auto cancel = w.OnCancel([&ctx] { ctx.TryCancel(); }, true);
    std::unique_ptr<grpc::ClientReader<Resp>> reader =
        ((*backend->stub).*method)(&ctx, req);
    Resp msg;
    bool started = false;
    while (reader->Read(&msg)) {
      absl::StatusOr<std::string> json = MessageToJson(msg);
      std::string line = json.ok() ? *json
                                   : ErrorJson(500, "INTERNAL",
                                               json.status().message());
      line += "\n";
      if (!started) {
        started = true;
        w.StartStream(200, kNdjson);
      }
      if (!json.ok() || !w.WriteChunk(line)) {
        ctx.TryCancel();
        while (reader->Read(&msg)) {
        }
        break;
      }
    }
    const grpc::Status status = reader->Finish();
    cancel.reset();
    if (!started) {
      if (!status.ok()) {
        w.Send(HttpStatusFromGrpc(status.error_code()), "application/json",
               ErrorJsonFromGrpc(status));
        return;
      }
      w.StartStream(200, kNdjson);  // an empty stream is still a success
    } else if (!status.ok() && !w.broken()) {
      w.WriteChunk(ErrorJsonFromGrpc(status) + "\n");
    }
    w.EndStream();
  };
}

struct Entry {
  const char* method;
  const char* path;
  const char* rpc;
  Body body;
  bool streaming;
  const char* summary;
  Router::Handler handler;
};

// The one route table: serving and documentation both read it.
std::vector<Entry> RouteTable(const std::shared_ptr<const Backend>& b) {
  const Body kNone = Body::kNone;
  const Body kWhole = Body::kWhole;
  return {
      // Hosts.
      {"GET", "/v1/hosts", "ListHosts", kNone, false, "List hosts",
       Unary(b, kNone, &Stub::ListHosts)},
      {"GET", "/v1/hosts/{name}", "GetHost", kNone, false, "Get a host",
       Unary(b, kNone, &Stub::GetHost)},
      {"POST", "/v1/hosts:register", "RegisterHost", kWhole, false,
       "Register an agent's host (agents normally use gRPC)",
       Unary(b, kWhole, &Stub::RegisterHost)},
      {"POST", "/v1/hosts/{host_name}:heartbeat", "Heartbeat", kWhole, false,
       "Agent heartbeat (agents normally use gRPC)",
       Unary(b, kWhole, &Stub::Heartbeat)},
      {"POST", "/v1/hosts/{name}:cordon", "CordonHost", kWhole, false,
       "Cordon a host: no new VMs or incoming migrations",
       Unary(b, kWhole, &Stub::CordonHost)},
      {"POST", "/v1/hosts/{name}:uncordon", "UncordonHost", kWhole, false,
       "Uncordon a host", Unary(b, kWhole, &Stub::UncordonHost)},
      {"POST", "/v1/hosts/{name}:drain", "DrainHost", kWhole, true,
       "Cordon a host and migrate every VM off it; streams one update per "
       "VM outcome", Streaming(b, kWhole, &Stub::DrainHost)},
      // VMs.
      {"GET", "/v1/vms", "ListVms", kNone, false, "List VMs",
       Unary(b, kNone, &Stub::ListVms)},
      {"POST", "/v1/vms", "CreateVm", kWhole, false, "Create a VM",
       Unary(b, kWhole, &Stub::CreateVm)},
      {"GET", "/v1/vms/{name}", "GetVm", kNone, false, "Get a VM",
       Unary(b, kNone, &Stub::GetVm)},
      {"DELETE", "/v1/vms/{name}", "DeleteVm", kNone, false, "Delete a VM",
       Unary(b, kNone, &Stub::DeleteVm)},
      // Migrations.
      {"GET", "/v1/migrations", "ListMigrations", kNone, false,
       "List migrations", Unary(b, kNone, &Stub::ListMigrations)},
      {"POST", "/v1/migrations", "CreateMigration", kWhole, false,
       "Start a live migration", Unary(b, kWhole, &Stub::CreateMigration)},
      {"GET", "/v1/migrations/{id}", "GetMigration", kNone, false,
       "Get a migration", Unary(b, kNone, &Stub::GetMigration)},
      {"POST", "/v1/migrations/{id}:cancel", "CancelMigration", kWhole, false,
       "Cancel a migration at its next safe point",
       Unary(b, kWhole, &Stub::CancelMigration)},
      {"GET", "/v1/migrations/{id}:watch", "WatchMigration", kNone, true,
       "Stream the migration record at every change until terminal",
       Streaming(b, kNone, &Stub::WatchMigration)},
      // Events.
      {"GET", "/v1/events", "ListEvents", kNone, false,
       "List the event log", Unary(b, kNone, &Stub::ListEvents)},
  };
}

}  // namespace

std::vector<RouteDoc> ControllerRouteDocs() {
  std::vector<RouteDoc> out;
  for (const Entry& e : RouteTable(nullptr)) {
    out.push_back(RouteDoc{e.method, e.path, e.rpc, e.body == Body::kWhole,
                           e.streaming, e.summary});
  }
  return out;
}

absl::Status AddControllerRoutes(std::shared_ptr<const Backend> backend,
                                 Router* router) {
  for (const Entry& e : RouteTable(backend)) {
    if (absl::Status s = router->Add(e.method, e.path, e.handler); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace ferry::rest
