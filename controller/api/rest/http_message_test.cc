// Request parsing and path templates, on strings.
#include "controller/api/rest/http_message.h"

#include "controller/api/rest/router.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::rest {
namespace {

absl::StatusOr<uint64_t> Parse(const std::string& head, HttpRequest* r,
                               HttpError* e, uint64_t max_body = 100) {
  return ParseRequestHead(head, max_body, r, e);
}

TEST(ParseRequestHeadTest, ParsesLineHeadersAndLength) {
  HttpRequest r;
  HttpError e;
  auto n = Parse("POST /v1/vms?a=1#frag HTTP/1.1\r\nHost: x\r\n"
                 "Content-Type:  application/json \r\nContent-Length: 12", &r, &e);
  ASSERT_TRUE(n.ok()) << e.message;
  EXPECT_EQ(*n, 12u);
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.path, "/v1/vms");
  EXPECT_EQ(r.query, "a=1");
  EXPECT_EQ(*r.Header("content-type"), "application/json");
  EXPECT_TRUE(r.WantsKeepAlive());
}

TEST(ParseRequestHeadTest, KeepAliveRules) {
  HttpRequest r;
  HttpError e;
  ASSERT_TRUE(Parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: Close", &r, &e).ok());
  EXPECT_FALSE(r.WantsKeepAlive());
  HttpRequest r10;
  ASSERT_TRUE(Parse("GET / HTTP/1.0", &r10, &e).ok());
  EXPECT_FALSE(r10.WantsKeepAlive());
  HttpRequest r10k;
  ASSERT_TRUE(Parse("GET / HTTP/1.0\r\nConnection: keep-alive", &r10k, &e).ok());
  EXPECT_TRUE(r10k.WantsKeepAlive());
}

TEST(ParseRequestHeadTest, RejectsAmbiguousFraming) {
  struct Case {
    const char* head;
    int status;
  };
  const Case cases[] = {
      {"GET  / HTTP/1.1\r\nHost: x", 400},
      {"GET / HTTP/1.1 extra\r\nHost: x", 400},
      {"G(T / HTTP/1.1\r\nHost: x", 400},
      {"GET /\x01 HTTP/1.1\r\nHost: x", 400},
      {"GET / HTTP/3\r\nHost: x", 505},
      {"GET / HTTP/1.2\r\nHost: x", 505},
      {"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1", 400},
      {"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1", 400},
      {"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999", 400},
      {"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 101", 413},
      {"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked", 411},
      {"GET / HTTP/1.1\r\nHost: x\r\nBad\x01: y", 400},
      {"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7f", 400},
      {"GET / HTTP/1.1\r\nNoColon", 400},
  };
  for (const Case& c : cases) {
    HttpRequest r;
    HttpError e;
    EXPECT_FALSE(Parse(c.head, &r, &e).ok()) << c.head;
    EXPECT_EQ(e.status, c.status) << c.head << ": " << e.message;
    EXPECT_FALSE(e.message.empty());
  }
}

TEST(UrlDecodeTest, Decodes) {
  EXPECT_EQ(*UrlDecode("a%2Fb%3a+c", false), "a/b:+c");
  EXPECT_EQ(*UrlDecode("a+b", true), "a b");
  EXPECT_FALSE(UrlDecode("a%2", false).ok());
  EXPECT_FALSE(UrlDecode("a%", false).ok());
  EXPECT_FALSE(UrlDecode("%g0", false).ok());
  auto q = ParseQuery("a=1&&b=x%20y&c&a=2");
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->size(), 4u);
  EXPECT_EQ((*q)[1].second, "x y");
  EXPECT_EQ((*q)[2].first, "c");
  EXPECT_EQ((*q)[3].second, "2");
}

TEST(PathTemplateTest, MatchesVariablesAndVerbs) {
  auto t = PathTemplate::Parse("/v1/hosts/{name}:cordon");
  ASSERT_TRUE(t.ok());
  PathParams p;
  absl::Status err;
  EXPECT_TRUE(t->Match("/v1/hosts/a%3Ab:cordon", &p, &err));
  EXPECT_EQ(p.at("name"), "a:b");
  EXPECT_FALSE(t->Match("/v1/hosts/:cordon", &p, &err));
  EXPECT_FALSE(t->Match("/v1/hosts/a:drain", &p, &err));
  EXPECT_FALSE(t->Match("/v1/hosts/a/b:cordon", &p, &err));

  auto c = PathTemplate::Parse("/v1/hosts:register");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->Match("/v1/hosts:register", &p, &err));
  EXPECT_FALSE(c->Match("/v1/hosts", &p, &err));

  auto plain = PathTemplate::Parse("/v1/vms/{name}");
  EXPECT_FALSE(plain->Match("/v1/vms/a:b", &p, &err));  // unknown verb
  EXPECT_TRUE(plain->Match("/v1/vms/a%zz", &p, &err));
  EXPECT_FALSE(err.ok());

  EXPECT_FALSE(PathTemplate::Parse("v1/x").ok());
  EXPECT_FALSE(PathTemplate::Parse("/v1/{bad-name}").ok());
  EXPECT_FALSE(PathTemplate::Parse("/v1//x").ok());
}

}  // namespace
}  // namespace ferry::rest
