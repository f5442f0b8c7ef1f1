#include "common/metrics/metrics_server.h"

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "common/metrics/families.h"
#include "common/metrics/http_get.h"
#include "common/metrics/text_format.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"

namespace ferry::metrics {
namespace {

class FixedCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    ++calls_;
    prometheus::MetricFamily f =
        MakeFamily("test_value_bytes", "a value", prometheus::MetricType::Gauge);
    AddSample(f, {{"vm", "a"}, {"q", "with \"quote\""}}, 42);
    AddSample(f, {{"vm", "b"}, {"q", ""}}, static_cast<double>(calls_));
    return {f};
  }
  mutable int calls_ = 0;
};

TEST(ParseListenAddressTest, AcceptsHostPortAndBracketedV6) {
  absl::StatusOr<ListenAddress> a = ParseListenAddress("127.0.0.1:9464");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 9464);
  a = ParseListenAddress("[::1]:0");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 0);
}

TEST(ParseListenAddressTest, RejectsMalformedWithReason) {
  for (const char* bad : {"", "9464", "127.0.0.1", ":80", "127.0.0.1:",
                          "127.0.0.1:8443s", "127.0.0.1:65536", "::1:80",
                          "[::1]80", "[::1", "host:-1"}) {
    absl::StatusOr<ListenAddress> a = ParseListenAddress(bad);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    if (!a.ok()) {
      EXPECT_TRUE(absl::StrContains(a.status().message(), "host:port"));
    }
  }
}

TEST(MetricsServerTest, ServesRegistryAndCollectablesOnPickedPort) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start("127.0.0.1:0");
  if (!server.ok()) GTEST_SKIP() << "cannot bind loopback: " << server.status();
  EXPECT_FALSE(absl::EndsWith((*server)->address(), ":0"));
  prometheus::BuildCounter()
      .Name("test_events_total")
      .Help("events")
      .Register((*server)->registry())
      .Add({})
      .Increment(3);
  auto collector = std::make_shared<FixedCollector>();
  (*server)->AddCollectable(collector);

  absl::StatusOr<HttpResponse> r = HttpGet((*server)->address(), "/metrics");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  absl::StatusOr<std::vector<Sample>> samples = ParseTextFormat(r->body);
  ASSERT_TRUE(samples.ok()) << samples.status() << "\n" << r->body;
  EXPECT_EQ(FindSample(*samples, "test_events_total"), 3);
  EXPECT_EQ(FindSample(*samples, "test_value_bytes",
                       {{"vm", "a"}, {"q", "with \"quote\""}}),
            42);
  // Collect-on-scrape: each scrape calls the collector again.
  r = HttpGet((*server)->address(), "/metrics");
  ASSERT_TRUE(r.ok()) << r.status();
  samples = ParseTextFormat(r->body);
  ASSERT_TRUE(samples.ok());
  EXPECT_EQ(FindSample(*samples, "test_value_bytes", {{"vm", "b"}}), 2);
}

TEST(MetricsServerTest, PortInUseIsUnavailableNotACrash) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> first =
      MetricsServer::Start("127.0.0.1:0");
  if (!first.ok()) GTEST_SKIP() << "cannot bind loopback: " << first.status();
  absl::StatusOr<std::unique_ptr<MetricsServer>> second =
      MetricsServer::Start((*first)->address());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable)
      << second.status();
}

TEST(MetricsServerTest, MalformedListenIsInvalidArgument) {
  EXPECT_EQ(MetricsServer::Start("localhost").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TextFormatTest, RejectsGarbage) {
  EXPECT_FALSE(ParseTextFormat("foo{a=\"b\" 1\n").ok());
  EXPECT_FALSE(ParseTextFormat("foo notanumber\n").ok());
  absl::StatusOr<std::vector<Sample>> ok =
      ParseTextFormat("# HELP x y\nx{le=\"+Inf\"} 3\ny 1.5e3\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(FindSample(*ok, "y"), 1500);
  EXPECT_EQ(CountSamples(*ok, "x"), 1);
}

}  // namespace
}  // namespace ferry::metrics
