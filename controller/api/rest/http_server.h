// A small HTTP/1.1 origin server on POSIX sockets, enough for a JSON API:
// keep-alive, Content-Length request bodies with a cap, chunked responses
// for streams, timeouts against slow or idle clients, and a Stop() that
// returns promptly with requests in flight.
//
// Threading: one acceptor thread and a fixed pool of workers. A worker owns
// one connection at a time and serves its requests in order (pipelining
// works; responses are never interleaved). Accepted connections wait in a
// bounded queue; when it is full the acceptor answers 503 and closes, so
// load never grows threads or memory without bound. Because an idle
// keep-alive connection occupies a worker, a worker drops its idle
// connection as soon as others are queued (HTTP lets a server close an idle
// connection at any time; clients reconnect).
#ifndef FERRY_CONTROLLER_API_REST_HTTP_SERVER_H_
#define FERRY_CONTROLLER_API_REST_HTTP_SERVER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/api/rest/http_message.h"

namespace ferry::rest {

struct HttpServerOptions {
  // "host:port"; port 0 picks a free one (see HttpServer::address()).
  // "[::1]:0", ":8080" (all interfaces) and "localhost:0" work too.
  std::string listen_address = "127.0.0.1:0";
  int worker_threads = 16;
  // Accepted connections waiting for a worker; beyond this, 503.
  int max_pending_connections = 64;
  // Request line plus headers.
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1 << 20;
  // A request must arrive completely within this much time of its first
  // byte (defeats slowloris-style clients holding a worker).
  absl::Duration read_timeout = absl::Seconds(10);
  // How long a keep-alive connection may sit between requests.
  absl::Duration idle_timeout = absl::Seconds(30);
  // A write that makes no progress for this long fails the connection.
  absl::Duration write_timeout = absl::Seconds(10);
};

class HttpServer;

// Keeps a cancellation callback armed; destroying it disarms (and joins the
// peer watcher thread, if any). Destroy it before what the callback touches.
class Cancellation {
 public:
  ~Cancellation();
  Cancellation(const Cancellation&) = delete;
  Cancellation& operator=(const Cancellation&) = delete;

 private:
  friend class ResponseWriter;
  Cancellation() = default;
  HttpServer* server_ = nullptr;
  uint64_t id_ = 0;
  int wake_fd_ = -1;
  std::thread watcher_;
};

// How a handler answers. Exactly one of Send() or StartStream() (then any
// WriteChunk()s, then EndStream()); the server closes the stream and adds a
// 500 if a handler forgets.
class ResponseWriter {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;

  // A complete response with Content-Length. Returns false if the peer is
  // gone (nothing else to do: the connection is closed afterwards).
  bool Send(int status, absl::string_view content_type, absl::string_view body,
            const Headers& extra_headers = {});
  // Status line and headers of a streamed response: chunked transfer
  // encoding for HTTP/1.1, read-until-close for HTTP/1.0.
  bool StartStream(int status, absl::string_view content_type);
  bool WriteChunk(absl::string_view data);
  bool EndStream();

  bool responded() const { return responded_; }
  // A write failed or timed out: the peer will not see more.
  bool broken() const { return broken_; }

  // Runs `cancel` once, from another thread, if the server stops, or (with
  // `watch_peer`) the client closes or resets the connection, while the
  // returned guard lives. Use it to cancel the backend call a request is
  // waiting on. `cancel` must be quick and must not block.
  std::unique_ptr<Cancellation> OnCancel(std::function<void()> cancel,
                                         bool watch_peer);

 private:
  friend class HttpServer;
  ResponseWriter(HttpServer* server, int fd, bool keep_alive, int version_minor)
      : server_(server), fd_(fd), keep_alive_(keep_alive),
        version_minor_(version_minor) {}
  bool Write(absl::string_view data);

  HttpServer* server_;
  int fd_;
  bool keep_alive_;
  int version_minor_;
  bool responded_ = false;
  bool streaming_ = false;
  bool stream_ended_ = false;
  bool broken_ = false;
};

class HttpServer {
 public:
  using Handler = std::function<void(const HttpRequest&, ResponseWriter&)>;

  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const HttpServerOptions& options, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound "host:port" (IPv6 hosts in brackets).
  std::string address() const { return address_; }

  // Stops accepting, cancels in-flight requests (their Cancellation
  // callbacks run), closes every connection and joins all threads. A handler
  // blocked in something that ignores cancellation delays it; ours never do.
  // Idempotent.
  void Stop();

 private:
  friend class ResponseWriter;
  friend class Cancellation;
  enum class ReadOutcome { kRequest, kClosed, kError };

  HttpServer(const HttpServerOptions& options, Handler handler, int listen_fd,
             int stop_fd, std::string address);
  void AcceptLoop();
  void WorkerLoop();
  void Serve(int fd);
  ReadOutcome ReadRequest(int fd, std::string* buffer, HttpRequest* request,
                          HttpError* error);
  // Reads what is available into `buffer`: >0 bytes read, 0 on EOF, -1 on
  // error/timeout/stop.
  ssize_t ReadSome(int fd, std::string* buffer, absl::Time deadline,
                   bool idle);
  bool WriteAll(int fd, absl::string_view data);
  void LingeringClose(int fd);
  bool HasPending();
  uint64_t RegisterCancel(std::function<void()> cancel);
  void UnregisterCancel(uint64_t id);

  const HttpServerOptions options_;
  const Handler handler_;
  const int listen_fd_;
  // An eventfd made readable (and left so) by Stop(): every poll() here
  // includes it, so no thread sleeps through a stop.
  const int stop_fd_;
  const std::string address_;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::vector<std::thread> workers_;

  absl::Mutex stop_mu_;  // serializes Stop()
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;

  absl::Mutex mu_;
  std::deque<int> pending_ ABSL_GUARDED_BY(mu_);
  std::set<int> active_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::function<void()>> cancels_ ABSL_GUARDED_BY(mu_);
  uint64_t next_cancel_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace ferry::rest

#endif  // FERRY_CONTROLLER_API_REST_HTTP_SERVER_H_
