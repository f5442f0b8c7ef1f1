// Replays fuzz inputs through LLVMFuzzerTestOneInput without libFuzzer, so
// the fuzz target stays built and exercised by `bazel test` (gcc).
//
//   codec_fuzz_replay_test [FILE|DIR]...
//
// Runs every file given (directories: every file in them), then a fixed
// number of deterministic mutations of those inputs (bit flips, byte sets,
// truncations, splices), so corrupt variants of every seed are covered too.
// A broken invariant aborts inside the target.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "agent/migration/codec/codec_fuzz.h"

namespace {

void Collect(const std::string& path, std::vector<std::string>* files) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return;
  if (!S_ISDIR(st.st_mode)) {
    files->push_back(path);
    return;
  }
  DIR* d = opendir(path.c_str());
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") Collect(path + "/" + name, files);
  }
  closedir(d);
}

void Run(const std::string& in) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(in.data()), in.size());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) Collect(argv[i], &files);
  std::vector<std::string> inputs;
  for (const std::string& f : files) {
    std::ifstream s(f, std::ios::binary);
    inputs.emplace_back(std::istreambuf_iterator<char>(s), std::istreambuf_iterator<char>());
  }
  if (inputs.empty()) {
    std::fprintf(stderr, "no inputs given\n");
    return 1;
  }
  for (const std::string& in : inputs) Run(in);

  const int kMutations = 3000;
  std::mt19937_64 rng(20240601);
  for (int i = 0; i < kMutations; ++i) {
    std::string in = inputs[rng() % inputs.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !in.empty(); ++e) {
      // Keep byte 0 (the mode) most of the time.
      const size_t at = 1 + rng() % std::max<size_t>(in.size() - 1, 1);
      switch (rng() % 4) {
        case 0:
          if (at < in.size()) in[at] ^= static_cast<char>(1 << (rng() % 8));
          break;
        case 1:
          if (at < in.size()) in[at] = static_cast<char>(rng());
          break;
        case 2:
          in.resize(at);
          break;
        default: {
          const std::string& other = inputs[rng() % inputs.size()];
          if (other.size() > 1) {
            const size_t from = rng() % other.size();
            in.insert(std::min(at, in.size()), other.substr(from, 1 + rng() % 64));
          }
        }
      }
    }
    Run(in);
  }
  std::printf("replayed %zu inputs and %d mutations\n", inputs.size(), kMutations);
  return 0;
}
