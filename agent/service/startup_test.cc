// The daemon's start-up pieces: flag parsing, host probing, backend choice,
// the data-dir lock, the port file and the server's bind.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/service/data_dir.h"
#include "agent/service/host_info.h"
#include "agent/service/server.h"
#include "agent/service/soft_port.h"
#include "gtest/gtest.h"

namespace ferry::service {
namespace {

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return absl::StrCat(base ? base : "/tmp", "/", name, "-", getpid());
}

TEST(ParseByteSizeTest, UnitsAndErrors) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("64MiB"), 64ull << 20);
  EXPECT_EQ(*ParseByteSize("8GiB"), 8ull << 30);
  EXPECT_EQ(*ParseByteSize("1.5G"), 3ull << 29);
  EXPECT_EQ(*ParseByteSize("2GB"), 2000000000u);
  EXPECT_EQ(*ParseByteSize(" 1k "), 1024u);
  for (const char* bad : {"", "MiB", "-1", "abc", "1QiB", "1e30"}) {
    EXPECT_EQ(ParseByteSize(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(ParseLabelsTest, PairsAndErrors) {
  auto labels = ParseLabels("zone=a, rack=3,empty=");
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_EQ(labels->at("zone"), "a");
  EXPECT_EQ(labels->at("rack"), "3");
  EXPECT_EQ(labels->at("empty"), "");
  EXPECT_TRUE(ParseLabels("")->empty());
  for (const char* bad : {"novalue", "=v", "a=1,a=2", "ferry.dev/x=1"}) {
    EXPECT_EQ(ParseLabels(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(HostTest, ResourcesAndDefaultCapacity) {
  HostResourcesProbe p = ProbeHostResources();
  EXPECT_GT(p.memory_bytes, 0u);
  EXPECT_GT(p.cpus, 0u);
  EXPECT_EQ(DefaultMemoryCapacity(64ull << 30), (64ull << 30) - (64ull << 30) / 10);
  EXPECT_EQ(DefaultMemoryCapacity(4ull << 30), 3ull << 30);   // 1 GiB reserve
  EXPECT_EQ(DefaultMemoryCapacity(1ull << 30), 512ull << 20);  // at most half
  EXPECT_FALSE(HostName().empty());
}

TEST(HostTest, KvmCapabilitiesOfAMissingDeviceSayWhy) {
  absl::Status why;
  v1::KvmCapabilities caps = ProbeKvmCapabilities("/nonexistent/kvm", &why);
  EXPECT_FALSE(caps.available());
  EXPECT_EQ(why.code(), absl::StatusCode::kNotFound) << why;
}

TEST(ChooseBackendsTest, AutoFallsBackToSoftWithTheReason) {
  auto c = ChooseBackends("auto", "/nonexistent/kvm", MakeSoftMemoryPortFactory());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kvm, nullptr);
  ASSERT_NE(c->soft, nullptr);
  EXPECT_EQ(c->preferred, v1::VM_BACKEND_SOFT);
  EXPECT_TRUE(absl::StrContains(c->summary, "/nonexistent/kvm")) << c->summary;
  EXPECT_FALSE(c->kvm_status.ok());
}

TEST(ChooseBackendsTest, SoftOnlyAndErrors) {
  auto soft = ChooseBackends("soft", "/dev/kvm", MakeSoftMemoryPortFactory());
  ASSERT_TRUE(soft.ok());
  EXPECT_EQ(soft->kvm, nullptr);
  EXPECT_NE(soft->soft, nullptr);
  EXPECT_EQ(ChooseBackends("kvm", "/nonexistent/kvm", MakeSoftMemoryPortFactory())
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ChooseBackends("qemu", "/dev/kvm", MakeSoftMemoryPortFactory())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DataDirLockTest, OneHolderAtATime) {
  const std::string dir = TempDir("lock") + "/nested/dir";
  auto first = DataDirLock::Acquire(dir);
  ASSERT_TRUE(first.ok()) << first.status();
  std::ifstream pid_file(first->lock_path());
  std::string pid;
  pid_file >> pid;
  EXPECT_EQ(pid, std::to_string(getpid()));

  // flock locks belong to the open file description, so even this process
  // cannot take it twice.
  auto second = DataDirLock::Acquire(dir);
  ASSERT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(second.status().message(),
                                absl::StrCat("pid ", getpid())))
      << second.status();
  EXPECT_TRUE(absl::StrContains(second.status().message(), "in use"));

  { DataDirLock released = std::move(*first); }
  EXPECT_TRUE(DataDirLock::Acquire(dir).ok());
}

TEST(DataDirLockTest, AFileIsNotADataDir) {
  const std::string file = TempDir("file");
  ASSERT_TRUE(WriteFileAtomically(file, "x").ok());
  EXPECT_EQ(DataDirLock::Acquire(file).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(DataDirLock::Acquire("").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WriteFileAtomicallyTest, WritesAndReplaces) {
  const std::string path = TempDir("port");
  ASSERT_TRUE(WriteFileAtomically(path, "one\n").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "127.0.0.1:1\n").ok());
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "127.0.0.1:1");
  EXPECT_FALSE(WriteFileAtomically("/nonexistent/dir/file", "x").ok());
}

TEST(ServerTest, PortZeroBindsAndAFixedPortIsExclusive) {
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  auto a = GrpcServer::Start(options);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_GT((*a)->port(), 0);
  EXPECT_EQ((*a)->address(), absl::StrCat("127.0.0.1:", (*a)->port()));
  // SO_REUSEPORT is off: a second server cannot share the port.
  options.listen = (*a)->address();
  auto b = GrpcServer::Start(options);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kUnavailable) << b.status();
  (*a)->Shutdown(absl::ZeroDuration());
  (*a)->Shutdown(absl::ZeroDuration());  // idempotent
}

TEST(ServerTest, MalformedAddresses) {
  std::string host;
  int port;
  EXPECT_TRUE(SplitHostPort("[::1]:7070", &host, &port).ok());
  EXPECT_EQ(host, "[::1]");
  EXPECT_EQ(port, 7070);
  for (const char* bad : {"nohost", ":80", "h:", "h:x", "h:70000"}) {
    EXPECT_EQ(SplitHostPort(bad, &host, &port).code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
    ServerOptions options;
    options.listen = bad;
    EXPECT_FALSE(GrpcServer::Start(options).ok()) << bad;
  }
}

}  // namespace
}  // namespace ferry::service
