#include "controller/api/rest/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "controller/api/rest/errors.h"

namespace ferry::rest {
namespace {

constexpr size_t kReadChunk = 16 * 1024;
// While a connection is idle, how often its worker checks whether other
// connections are queued for a worker.
constexpr absl::Duration kIdleSlice = absl::Milliseconds(200);

int PollMillis(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;
}

absl::Status SplitListenAddress(const std::string& address, std::string* host,
                                std::string* port) {
  const size_t colon = address.rfind(':');
  int port_number = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port_number) ||
      port_number < 0 || port_number > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address \"", address,
        "\" is not host:port (e.g. 127.0.0.1:8080, [::1]:0, :8080)"));
  }
  *host = address.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  *port = std::to_string(port_number);
  return absl::OkStatus();
}

std::string FormatAddress(const sockaddr_storage& addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    return absl::StrCat("[", buf, "]:", ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
  inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
  return absl::StrCat(buf, ":", ntohs(a->sin_port));
}

absl::StatusOr<int> Listen(const std::string& address) {
  std::string host, port;
  if (absl::Status s = SplitListenAddress(address, &host, &port); !s.ok()) {
    return s;
  }
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(),
                             port.c_str(), &hints, &res);
  if (rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot resolve listen host \"", host, "\": ", gai_strerror(rc)));
  }
  std::string last_error = "no addresses";
  int fd = -1;
  for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                ai->ai_protocol);
    if (fd < 0) {
      last_error = absl::StrCat("socket: ", strerror(errno));
      continue;
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
      last_error = absl::StrCat("bind/listen: ", strerror(errno));
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", address, " (", last_error,
        "); pick a free port or another address"));
  }
  return fd;
}

}  // namespace

// ---------------------------------------------------------------------------
// ResponseWriter
// ---------------------------------------------------------------------------

bool ResponseWriter::Write(absl::string_view data) {
  if (broken_) return false;
  if (!server_->WriteAll(fd_, data)) broken_ = true;
  return !broken_;
}

bool ResponseWriter::Send(int status, absl::string_view content_type,
                          absl::string_view body, const Headers& extra) {
  if (responded_) return false;
  responded_ = true;
  // Give the worker back to queued connections rather than idling here.
  if (server_->stopping_ || server_->HasPending()) keep_alive_ = false;
  std::string head = absl::StrCat(
      "HTTP/1.1 ", status, " ", ReasonPhrase(status), "\r\nContent-Type: ",
      content_type, "\r\nContent-Length: ", body.size(),
      "\r\nCache-Control: no-store\r\nConnection: ",
      keep_alive_ ? "keep-alive" : "close", "\r\n");
  for (const auto& [name, value] : extra) {
    absl::StrAppend(&head, name, ": ", value, "\r\n");
  }
  head += "\r\n";
  // One write for small responses: fewer packets, no Nagle interplay.
  head.append(body.data(), body.size());
  return Write(head);
}

bool ResponseWriter::StartStream(int status, absl::string_view content_type) {
  if (responded_) return false;
  responded_ = true;
  streaming_ = true;
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ",
                                  ReasonPhrase(status), "\r\nContent-Type: ",
                                  content_type, "\r\nCache-Control: no-store\r\n");
  if (version_minor_ >= 1) {
    // The stream may run for long; let the next request wait for a fresh
    // connection only if others are queued.
    if (server_->stopping_ || server_->HasPending()) keep_alive_ = false;
    absl::StrAppend(&head, "Transfer-Encoding: chunked\r\nConnection: ",
                    keep_alive_ ? "keep-alive" : "close", "\r\n\r\n");
  } else {
    // HTTP/1.0 has no chunking: the body ends when the connection does.
    keep_alive_ = false;
    head += "Connection: close\r\n\r\n";
  }
  return Write(head);
}

bool ResponseWriter::WriteChunk(absl::string_view data) {
  if (!streaming_ || stream_ended_) return false;
  if (data.empty()) return !broken_;  // an empty chunk would end the stream
  if (version_minor_ == 0) return Write(data);
  std::string chunk = absl::StrCat(absl::Hex(data.size()), "\r\n");
  chunk.append(data.data(), data.size());
  chunk += "\r\n";
  return Write(chunk);
}

bool ResponseWriter::EndStream() {
  if (!streaming_ || stream_ended_) return false;
  stream_ended_ = true;
  if (version_minor_ == 0) return !broken_;
  return Write("0\r\n\r\n");
}

std::unique_ptr<Cancellation> ResponseWriter::OnCancel(
    std::function<void()> cancel, bool watch_peer) {
  std::unique_ptr<Cancellation> guard(new Cancellation());
  guard->server_ = server_;
  if (!watch_peer) {
    guard->id_ = server_->RegisterCancel(std::move(cancel));
    return guard;
  }
  // The callback may run from Stop() and from the watcher; run it once.
  auto once = std::make_shared<std::once_flag>();
  auto shared = std::make_shared<std::function<void()>>(std::move(cancel));
  auto run = [once, shared] { std::call_once(*once, *shared); };
  guard->id_ = server_->RegisterCancel(run);
  guard->wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (guard->wake_fd_ < 0) return guard;  // Stop() still cancels
  const int fd = fd_;
  const int wake = guard->wake_fd_;
  guard->watcher_ = std::thread([fd, wake, run] {
    // POLLRDHUP: the peer shut down its side (FIN); POLLHUP/POLLERR: reset
    // or our own shutdown() in Stop(). Pipelined request bytes (POLLIN) are
    // deliberately not watched: they are the next request, not a hangup.
    pollfd fds[2] = {{fd, POLLRDHUP, 0}, {wake, POLLIN, 0}};
    while (true) {
      const int n = poll(fds, 2, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 || (fds[1].revents & POLLIN)) return;
      if (fds[0].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) {
        run();
        return;
      }
    }
  });
  return guard;
}

Cancellation::~Cancellation() {
  if (server_ != nullptr && id_ != 0) server_->UnregisterCancel(id_);
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
    if (watcher_.joinable()) watcher_.join();
    close(wake_fd_);
  }
}

// ---------------------------------------------------------------------------
// HttpServer
// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const HttpServerOptions& options, Handler handler) {
  if (options.worker_threads < 1 || options.max_pending_connections < 1 ||
      options.max_header_bytes < 256) {
    return absl::InvalidArgumentError(
        "HTTP server limits must allow at least one worker, one pending "
        "connection and 256 header bytes");
  }
  absl::StatusOr<int> listen_fd = Listen(options.listen_address);
  if (!listen_fd.ok()) return listen_fd.status();
  sockaddr_storage bound = {};
  socklen_t len = sizeof(bound);
  getsockname(*listen_fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd < 0) {
    close(*listen_fd);
    return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  }
  std::unique_ptr<HttpServer> server(new HttpServer(
      options, std::move(handler), *listen_fd, stop_fd, FormatAddress(bound)));
  for (int i = 0; i < options.worker_threads; ++i) {
    server->workers_.emplace_back([s = server.get()] { s->WorkerLoop(); });
  }
  server->acceptor_ = std::thread([s = server.get()] { s->AcceptLoop(); });
  return server;
}

HttpServer::HttpServer(const HttpServerOptions& options, Handler handler,
                       int listen_fd, int stop_fd, std::string address)
    : options_(options), handler_(std::move(handler)), listen_fd_(listen_fd),
      stop_fd_(stop_fd), address_(std::move(address)) {}

HttpServer::~HttpServer() {
  Stop();
  close(stop_fd_);
}

void HttpServer::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  {
    // Under mu_ so workers waiting for a connection re-check at once.
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  const uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  if (acceptor_.joinable()) acceptor_.join();
  close(listen_fd_);
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, cancel] : cancels_) cancel();
    // Wakes peer watchers and any send/recv in progress on these sockets.
    for (int fd : active_) shutdown(fd, SHUT_RDWR);
  }
  for (std::thread& t : workers_) t.join();
  absl::MutexLock lock(&mu_);
  for (int fd : pending_) close(fd);
  pending_.clear();
}

void HttpServer::AcceptLoop() {
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  while (!stopping_) {
    const int n = poll(fds, 2, -1);
    if (n < 0 && errno != EINTR) return;
    if (fds[1].revents & POLLIN) return;
    while (true) {
      const int fd = accept4(listen_fd_, nullptr, nullptr,
                             SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
            errno == ENOMEM) {
          // Out of descriptors: the listener stays readable, so back off
          // instead of spinning; queued clients wait in the backlog.
          pollfd stop = {stop_fd_, POLLIN, 0};
          poll(&stop, 1, 100);
        }
        break;  // EAGAIN (or the back-off above): poll again
      }
      const int one = 1;
      // Streamed NDJSON lines should leave as soon as they are written.
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      bool queued = false;
      {
        absl::MutexLock lock(&mu_);
        if (static_cast<int>(pending_.size()) <
            options_.max_pending_connections) {
          pending_.push_back(fd);
          queued = true;
        }
      }
      if (!queued) {
        const std::string body =
            ErrorJson(503, "UNAVAILABLE",
                      "server is at its connection limit; retry shortly");
        const std::string response = absl::StrCat(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
            "application/json\r\nContent-Length: ", body.size(),
            "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n", body);
        (void)!send(fd, response.data(), response.size(),
                    MSG_NOSIGNAL | MSG_DONTWAIT);
        close(fd);
      }
    }
  }
}

void HttpServer::WorkerLoop() {
  while (true) {
    int fd = -1;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stopping_.load() || !pending_.empty();
      };
      mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(1));
      if (stopping_) return;
      if (pending_.empty()) continue;
      fd = pending_.front();
      pending_.pop_front();
      active_.insert(fd);
    }
    Serve(fd);
    {
      absl::MutexLock lock(&mu_);
      active_.erase(fd);
    }
    close(fd);
  }
}

bool HttpServer::HasPending() {
  absl::MutexLock lock(&mu_);
  return !pending_.empty();
}

uint64_t HttpServer::RegisterCancel(std::function<void()> cancel) {
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_cancel_id_++;
  if (stopping_) {
    cancel();  // Stop() already ran the others: do not miss this one
  }
  cancels_.emplace(id, std::move(cancel));
  return id;
}

void HttpServer::UnregisterCancel(uint64_t id) {
  absl::MutexLock lock(&mu_);
  cancels_.erase(id);
}

void HttpServer::LingeringClose(int fd) {
  // Closing with unread request bytes (say, the 413 body we refused) makes
  // the kernel send RST, which can destroy our error response before the
  // client reads it. So: half-close, then discard input briefly.
  shutdown(fd, SHUT_WR);
  const absl::Time deadline = absl::Now() + absl::Milliseconds(500);
  size_t discarded = 0;
  std::string sink;
  while (discarded < (1u << 20)) {
    sink.clear();
    const ssize_t got = ReadSome(fd, &sink, deadline, false);
    if (got <= 0) return;
    discarded += static_cast<size_t>(got);
  }
}

void HttpServer::Serve(int fd) {
  std::string buffer;  // bytes read but not yet consumed (pipelining)
  while (!stopping_) {
    HttpRequest request;
    HttpError error;
    const ReadOutcome outcome = ReadRequest(fd, &buffer, &request, &error);
    if (outcome == ReadOutcome::kClosed) return;
    if (outcome == ReadOutcome::kError) {
      // The rest of the stream cannot be framed reliably: answer and close.
      ResponseWriter writer(this, fd, false, 1);
      writer.Send(error.status, "application/json",
                  ErrorJson(error.status,
                            error.status == 408   ? "DEADLINE_EXCEEDED"
                            : error.status == 413 ||
                                    error.status == 431
                                ? "RESOURCE_EXHAUSTED"
                            : error.status == 505 ? "UNIMPLEMENTED"
                                                  : "INVALID_ARGUMENT",
                            error.message));
      LingeringClose(fd);
      return;
    }
    ResponseWriter writer(this, fd, request.WantsKeepAlive(),
                          request.version_minor);
    handler_(request, writer);
    if (!writer.responded()) {
      writer.Send(500, "application/json",
                  ErrorJson(500, "INTERNAL", "handler produced no response"));
    } else if (writer.streaming_ && !writer.stream_ended_) {
      writer.EndStream();
    }
    if (writer.broken() || !writer.keep_alive_) return;
  }
}

ssize_t HttpServer::ReadSome(int fd, std::string* buffer, absl::Time deadline,
                             bool idle) {
  pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  while (true) {
    const absl::Time now = absl::Now();
    if (now >= deadline) return -1;
    absl::Time wake = deadline;
    if (idle) wake = std::min(deadline, now + kIdleSlice);
    const int n = poll(fds, 2, PollMillis(wake));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (fds[1].revents & POLLIN)) return -1;
    if (n == 0) {
      if (idle && HasPending()) return -1;
      continue;
    }
    char chunk[kReadChunk];
    const ssize_t got = recv(fd, chunk, sizeof(chunk), 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (got > 0) buffer->append(chunk, static_cast<size_t>(got));
    return got < 0 ? -1 : got;
  }
}

HttpServer::ReadOutcome HttpServer::ReadRequest(int fd, std::string* buffer,
                                                HttpRequest* request,
                                                HttpError* error) {
  auto fail = [&](int status, std::string message) {
    error->status = status;
    error->message = std::move(message);
    return ReadOutcome::kError;
  };
  // RFC 9112 2.2: ignore empty lines before a request line.
  auto skip_blank = [&] {
    while (absl::StartsWith(*buffer, "\r\n")) buffer->erase(0, 2);
  };
  skip_blank();
  absl::Time deadline = buffer->empty() ? absl::Now() + options_.idle_timeout
                                        : absl::Now() + options_.read_timeout;
  size_t head_end;
  while ((head_end = buffer->find("\r\n\r\n")) == std::string::npos) {
    if (buffer->size() > options_.max_header_bytes) {
      return fail(431, absl::StrCat("request line and headers exceed ",
                                    options_.max_header_bytes, " bytes"));
    }
    const bool idle = buffer->empty();
    const ssize_t got = ReadSome(fd, buffer, deadline, idle);
    if (got <= 0) {
      // EOF, stop, or the idle timer: a quiet close. Mid-request: 408.
      if (idle || got == 0 || stopping_) return ReadOutcome::kClosed;
      return fail(408, "request not received in time");
    }
    skip_blank();
    if (idle && !buffer->empty()) {
      deadline = absl::Now() + options_.read_timeout;
    }
  }
  if (head_end > options_.max_header_bytes) {
    return fail(431, absl::StrCat("request line and headers exceed ",
                                  options_.max_header_bytes, " bytes"));
  }
  absl::StatusOr<uint64_t> length =
      ParseRequestHead(absl::string_view(*buffer).substr(0, head_end),
                       options_.max_body_bytes, request, error);
  if (!length.ok()) return ReadOutcome::kError;
  const size_t body_start = head_end + 4;
  const std::string* expect = request->Header("expect");
  if (expect != nullptr && absl::EqualsIgnoreCase(*expect, "100-continue") &&
      request->version_minor >= 1 && buffer->size() - body_start < *length) {
    // curl waits (1 s) for this before sending bodies over 1 KiB.
    if (!WriteAll(fd, "HTTP/1.1 100 Continue\r\n\r\n")) {
      return ReadOutcome::kClosed;
    }
  }
  while (buffer->size() - body_start < *length) {
    const ssize_t got = ReadSome(fd, buffer, deadline, false);
    if (got == 0 || stopping_) return ReadOutcome::kClosed;
    if (got < 0) return fail(408, "request body not received in time");
  }
  request->body = buffer->substr(body_start, *length);
  buffer->erase(0, body_start + *length);
  return ReadOutcome::kRequest;
}

bool HttpServer::WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    pollfd fds[2] = {{fd, POLLOUT, 0}, {stop_fd_, POLLIN, 0}};
    const int ready = poll(
        fds, 2, static_cast<int>(absl::ToInt64Milliseconds(options_.write_timeout)));
    if (ready <= 0 || (fds[1].revents & POLLIN)) return false;
    if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) return false;
  }
  return true;
}

}  // namespace ferry::rest
