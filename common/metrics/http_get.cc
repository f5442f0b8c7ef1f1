#include "common/metrics/http_get.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/metrics/metrics_server.h"

namespace ferry::metrics {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Waits for `events` on fd until `deadline`.
absl::Status Wait(int fd, short events, absl::Time deadline,
                  absl::string_view what) {
  for (;;) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) {
      return absl::DeadlineExceededError(absl::StrCat("HTTP GET: timed out ", what));
    }
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, static_cast<int>(ms));
    if (r > 0) return absl::OkStatus();
    if (r < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    }
  }
}

}  // namespace

absl::StatusOr<HttpResponse> HttpGet(absl::string_view host_port,
                                     absl::string_view target,
                                     absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<ListenAddress> addr = ParseListenAddress(host_port);
  if (!addr.ok()) return addr.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = absl::StrCat(addr->port);
  if (int rc = getaddrinfo(addr->host.c_str(), port.c_str(), &hints, &res);
      rc != 0) {
    return absl::UnavailableError(absl::StrCat("resolve ", host_port, ": ",
                                               gai_strerror(rc)));
  }
  Fd fd(socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    freeaddrinfo(res);
    return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  }
  const int crc = connect(fd.get(), res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (crc != 0 && errno != EINPROGRESS) {
    return absl::UnavailableError(
        absl::StrCat("connect ", host_port, ": ", std::strerror(errno)));
  }
  if (absl::Status s = Wait(fd.get(), POLLOUT, deadline, "connecting"); !s.ok()) {
    return s;
  }
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    return absl::UnavailableError(
        absl::StrCat("connect ", host_port, ": ", std::strerror(err)));
  }
  const std::string request = absl::StrCat(
      "GET ", target, " HTTP/1.0\r\nHost: ", host_port,
      "\r\nAccept: */*\r\nConnection: close\r\n\r\n");
  size_t off = 0;
  while (off < request.size()) {
    if (absl::Status s = Wait(fd.get(), POLLOUT, deadline, "sending"); !s.ok()) {
      return s;
    }
    const ssize_t n = send(fd.get(), request.data() + off, request.size() - off,
                           MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
    }
    if (n > 0) off += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[16384];
  for (;;) {
    if (absl::Status s = Wait(fd.get(), POLLIN, deadline, "reading"); !s.ok()) {
      return s;
    }
    const ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  const size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    return absl::InternalError(
        absl::StrCat("HTTP GET ", host_port, target, ": no header end in ",
                     raw.size(), " bytes"));
  }
  HttpResponse out;
  std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(raw).substr(0, head_end), "\r\n");
  std::vector<absl::string_view> status_line =
      absl::StrSplit(lines[0], absl::MaxSplits(' ', 2));
  if (status_line.size() < 2 || !absl::SimpleAtoi(status_line[1], &out.status)) {
    return absl::InternalError(
        absl::StrCat("HTTP GET: bad status line \"", lines[0], "\""));
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos) continue;
    if (absl::EqualsIgnoreCase(lines[i].substr(0, colon), "content-type")) {
      out.content_type =
          std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
    }
  }
  out.body = raw.substr(head_end + 4);
  return out;
}

std::string UrlEncode(absl::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

}  // namespace ferry::metrics
