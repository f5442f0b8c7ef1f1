#include "controller/api/rest/test_http_client.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ferry::rest::testing {

absl::StatusOr<std::unique_ptr<TestHttpClient>> TestHttpClient::Connect(
    const std::string& address) {
  const size_t colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
  const std::string port = address.substr(colon + 1);
  addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) {
    return absl::InvalidArgumentError("cannot resolve " + address);
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int rc = fd < 0 ? -1 : connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0) {
    if (fd >= 0) close(fd);
    return absl::UnavailableError(
        absl::StrCat("connect ", address, ": ", strerror(errno)));
  }
  return std::unique_ptr<TestHttpClient>(new TestHttpClient(fd));
}

TestHttpClient::~TestHttpClient() { Close(); }

void TestHttpClient::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

absl::Status TestHttpClient::SendRaw(absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return absl::UnavailableError(strerror(errno));
    bytes.remove_prefix(n);
  }
  return absl::OkStatus();
}

absl::Status TestHttpClient::Send(absl::string_view method,
                                  absl::string_view target,
                                  absl::string_view body,
                                  absl::string_view content_type,
                                  absl::string_view extra_headers) {
  std::string req = absl::StrCat(method, " ", target,
                                 " HTTP/1.1\r\nHost: test\r\n", extra_headers);
  if (!body.empty()) {
    absl::StrAppend(&req, "Content-Type: ", content_type,
                    "\r\nContent-Length: ", body.size(), "\r\n");
  }
  absl::StrAppend(&req, "\r\n", body);
  return SendRaw(req);
}

absl::Status TestHttpClient::Fill(size_t n, absl::Time deadline) {
  while (buffer_.size() < n) {
    if (eof_) return absl::DataLossError("connection closed by server");
    pollfd p = {fd_, POLLIN, 0};
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0 || poll(&p, 1, static_cast<int>(ms)) <= 0) {
      return absl::DeadlineExceededError("timed out reading the response");
    }
    char buf[8192];
    const ssize_t got = recv(fd_, buf, sizeof(buf), 0);
    if (got <= 0) {
      eof_ = true;
    } else {
      buffer_.append(buf, got);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> TestHttpClient::Line(absl::Time deadline) {
  size_t pos;
  while ((pos = buffer_.find("\r\n")) == std::string::npos) {
    if (absl::Status s = Fill(buffer_.size() + 1, deadline); !s.ok()) return s;
  }
  std::string line = buffer_.substr(0, pos);
  buffer_.erase(0, pos + 2);
  return line;
}

absl::StatusOr<TestResponse> TestHttpClient::ReadHead(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  TestResponse r;
  absl::StatusOr<std::string> status_line = Line(deadline);
  if (!status_line.ok()) return status_line.status();
  if (status_line->size() < 12 ||
      !absl::SimpleAtoi(status_line->substr(9, 3), &r.status)) {
    return absl::DataLossError("bad status line: " + *status_line);
  }
  while (true) {
    absl::StatusOr<std::string> line = Line(deadline);
    if (!line.ok()) return line.status();
    if (line->empty()) break;
    const size_t colon = line->find(':');
    if (colon == std::string::npos) return absl::DataLossError("bad header");
    r.headers[absl::AsciiStrToLower(line->substr(0, colon))] = std::string(
        absl::StripAsciiWhitespace(line->substr(colon + 1)));
  }
  return r;
}

absl::StatusOr<std::string> TestHttpClient::ReadChunk(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<std::string> size_line = Line(deadline);
  if (!size_line.ok()) return size_line.status();
  size_t size = 0;
  if (!absl::SimpleHexAtoi(*size_line, &size)) {
    return absl::DataLossError("bad chunk size line: " + *size_line);
  }
  if (absl::Status s = Fill(size + 2, deadline); !s.ok()) return s;
  if (buffer_.substr(size, 2) != "\r\n") {
    return absl::DataLossError("chunk not followed by CRLF");
  }
  std::string data = buffer_.substr(0, size);
  buffer_.erase(0, size + 2);
  if (size == 0 && !data.empty()) return absl::DataLossError("impossible");
  return data;
}

absl::StatusOr<TestResponse> TestHttpClient::Read(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<TestResponse> r = ReadHead(timeout);
  if (!r.ok()) return r;
  if (r->status == 100) return Read(deadline - absl::Now());
  if (r->Header("transfer-encoding") == "chunked") {
    while (true) {
      absl::StatusOr<std::string> chunk = ReadChunk(deadline - absl::Now());
      if (!chunk.ok()) return chunk.status();
      if (chunk->empty()) break;
      r->body += *chunk;
      r->chunks.push_back(*std::move(chunk));
    }
    return r;
  }
  const std::string length = r->Header("content-length");
  size_t n = 0;
  if (!length.empty()) {
    if (!absl::SimpleAtoi(length, &n)) return absl::DataLossError("bad length");
    if (absl::Status s = Fill(n, deadline); !s.ok()) return s;
  } else {
    while (!eof_) {
      if (absl::Status s = Fill(buffer_.size() + 1, deadline);
          !s.ok() && !eof_) {
        return s;
      }
    }
    n = buffer_.size();
  }
  r->body = buffer_.substr(0, n);
  buffer_.erase(0, n);
  return r;
}

absl::StatusOr<TestResponse> TestHttpClient::Call(absl::string_view method,
                                                  absl::string_view target,
                                                  absl::string_view body) {
  if (absl::Status s = Send(method, target, body); !s.ok()) return s;
  return Read();
}

bool TestHttpClient::WaitClosed(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!eof_) {
    absl::Status s = Fill(buffer_.size() + 1, deadline);
    if (!s.ok() && !eof_) return false;
  }
  return true;
}

}  // namespace ferry::rest::testing
