// Test-only: a deliberately small raw-socket HTTP/1.1 client, so tests see
// exactly the bytes the server sends (status line, headers, chunk framing)
// and can misbehave on purpose (bad framing, hanging up mid-stream).
#ifndef FERRY_CONTROLLER_API_REST_TEST_HTTP_CLIENT_H_
#define FERRY_CONTROLLER_API_REST_TEST_HTTP_CLIENT_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace ferry::rest::testing {

struct TestResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                 // de-chunked
  std::vector<std::string> chunks;  // chunk payloads, if chunked
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

class TestHttpClient {
 public:
  static absl::StatusOr<std::unique_ptr<TestHttpClient>> Connect(
      const std::string& address);
  ~TestHttpClient();

  absl::Status SendRaw(absl::string_view bytes);
  // Sends METHOD target with Host, optional JSON body (Content-Length).
  absl::Status Send(absl::string_view method, absl::string_view target,
                    absl::string_view body = "",
                    absl::string_view content_type = "application/json",
                    absl::string_view extra_headers = "");
  // Reads one full response (Content-Length, chunked, or to EOF).
  absl::StatusOr<TestResponse> Read(absl::Duration timeout = absl::Seconds(10));
  // Send + Read.
  absl::StatusOr<TestResponse> Call(absl::string_view method,
                                    absl::string_view target,
                                    absl::string_view body = "");

  // Streaming pieces: the status line and headers, then one chunk at a time
  // (empty string for the last chunk).
  absl::StatusOr<TestResponse> ReadHead(absl::Duration timeout);
  absl::StatusOr<std::string> ReadChunk(absl::Duration timeout);

  // True if the server closed the connection within `timeout`.
  bool WaitClosed(absl::Duration timeout);
  void Close();

 private:
  explicit TestHttpClient(int fd) : fd_(fd) {}
  // Ensures buffer_ holds `n` bytes / a CRLF-terminated line.
  absl::Status Fill(size_t n, absl::Time deadline);
  absl::StatusOr<std::string> Line(absl::Time deadline);

  int fd_;
  std::string buffer_;
  bool eof_ = false;
};

}  // namespace ferry::rest::testing

#endif  // FERRY_CONTROLLER_API_REST_TEST_HTTP_CLIENT_H_
