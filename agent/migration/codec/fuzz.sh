#!/bin/bash
# Builds codec_fuzz.cc with clang + libFuzzer + ASan/UBSan (outside Bazel,
# whose toolchain is gcc) and runs it.
#
#   agent/migration/codec/fuzz.sh [SECONDS] [extra libFuzzer flags...]
#
# SECONDS defaults to 60. Work files go to $FUZZ_DIR (default
# /tmp/ferry-codec-fuzz): the binary, a copy of the seed corpus that grows
# as the fuzzer finds new coverage (the checked-in corpus/ is not touched),
# and crash-* reproducers. Reproduce a crash with
#   $FUZZ_DIR/codec_fuzz $FUZZ_DIR/crash-...
# or, under gcc, bazel-bin/agent/migration/codec/codec_fuzz_replay_test FILE.
set -euo pipefail

SECONDS_TO_RUN="${1:-60}"
shift || true
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
OUT="${FUZZ_DIR:-/tmp/ferry-codec-fuzz}"
CXX="${CXX:-clang++-14}"
mkdir -p "$OUT/gen" "$OUT/corpus"

# Generated protobuf code, like //proto:defs.bzl does.
(cd "$ROOT" && protoc -I. --cpp_out="$OUT/gen" proto/vm.proto proto/migration.proto)

SRCS=(
  "$ROOT/agent/migration/codec/codec_fuzz.cc"
  "$ROOT/agent/migration/codec/codec.cc"
  "$ROOT/agent/migration/codec/compression.cc"
  "$ROOT/agent/migration/codec/crc32c.cc"
  "$ROOT/agent/migration/codec/xor_cache.cc"
  "$ROOT/agent/migration/codec/xor_delta.cc"
  "$ROOT/mmu/guest_memory.cc"
  "$OUT/gen/proto/migration.pb.cc"
  "$OUT/gen/proto/vm.pb.cc"
)
# Instrument only our code for coverage; protobuf/absl/lz4/zstd are the
# system libraries (ASan still checks every access we make into them).
if [[ ! -x "$OUT/codec_fuzz" || -n "${REBUILD:-}" ]] ||
   [[ -n "$(find "$ROOT/agent/migration/codec" "$ROOT/mmu" -newer "$OUT/codec_fuzz" -name '*.cc' -o -newer "$OUT/codec_fuzz" -name '*.h' | head -1)" ]]; then
  echo "building $OUT/codec_fuzz with $CXX"
  # shellcheck disable=SC2046
  "$CXX" -std=c++17 -O1 -g -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -DABSL_USES_STD_STRING_VIEW -I"$ROOT" -I"$OUT/gen" \
    "${SRCS[@]}" -o "$OUT/codec_fuzz" \
    $(pkg-config --libs protobuf liblz4 libzstd) \
    $(pkg-config --libs $(cd /usr/lib/x86_64-linux-gnu/pkgconfig 2>/dev/null && ls absl_*.pc | sed 's/\.pc$//')) \
    -lpthread
fi

cp -n "$ROOT/agent/migration/codec/corpus/"* "$OUT/corpus/" 2>/dev/null || true
cd "$OUT"
exec ./codec_fuzz -max_total_time="$SECONDS_TO_RUN" -max_len=20000 \
  -rss_limit_mb=2048 -print_final_stats=1 "$@" corpus
