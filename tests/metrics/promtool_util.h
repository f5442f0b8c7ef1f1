// Shared by the tests in tests/metrics: locating data files in the
// runfiles and running Debian's prometheus/promtool binaries.
#ifndef FERRY_TESTS_METRICS_PROMTOOL_UTIL_H_
#define FERRY_TESTS_METRICS_PROMTOOL_UTIL_H_

#include <string>

namespace ferry::metrics_test {

// $TEST_SRCDIR/ferry/<path>, else <path> (bazel run's cwd is the workspace).
std::string Runfile(const std::string& path);

// The first of /usr/bin/<name>, /usr/local/bin/<name> that is executable,
// else "".
std::string FindBinary(const std::string& name);

// Runs `command` with sh -c, stderr merged into the output. Returns the
// exit status (-1 if it could not run) and fills `output`.
int RunCommand(const std::string& command, std::string* output);

}  // namespace ferry::metrics_test

#endif  // FERRY_TESTS_METRICS_PROMTOOL_UTIL_H_
