// Randomized differential test: ShadowMmu + SoftVcpus against the
// ReferenceModel, over millions of mixed operations if asked:
//   FERRY_SOFTMMU_DIFF_OPS=5000000 FERRY_SOFTMMU_SEED=123 bazel test ...
// (--test_env=...). The seed is printed; a failure names the op index.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mmu/dirty_bitmap.h"
#include "mmu/softmmu/reference_model.h"
#include "mmu/softmmu/shadow_mmu.h"
#include "mmu/softmmu/soft_vcpu.h"
#include "mmu/softmmu/test_util.h"

namespace ferry::mmu::softmmu {
namespace {

constexpr int kPoolPages = 24;  // guest table candidates: gpa 0..24 pages
constexpr int kVcpus = 3;

uint64_t EnvOr(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 0) : def;
}

class Differential {
 public:
  Differential(uint64_t seed, MmuOptions options)
      : rng_(seed),
        ram_({{0, 0, 256}, {1, 0x400000, 128}}),
        ref_(ram_.slots()) {
    mmu_ = *ShadowMmu::Create(ram_.slots(), options);
    for (int i = 0; i < kVcpus; ++i) {
      vcpus_.push_back(std::make_unique<SoftVcpu>(mmu_.get()));
      cpus_.push_back({});
    }
  }
  ~Differential() { vcpus_.clear(); }

  // Runs `ops` operations; returns "" or a description of the mismatch.
  std::string Run(uint64_t ops) {
    for (op_ = 0; op_ < ops; ++op_) {
      std::string err = Step();
      if (err.empty() && (op_ < 20000 ? op_ % 16 == 0 : op_ % 256 == 0)) {
        absl::Status s = mmu_->CheckInvariants();
        if (!s.ok()) err = s.ToString();
      }
      if (err.empty() && (paranoid_ || op_ % 4096 == 0)) {
        err = CompareMemory();
      }
      if (!err.empty()) {
        return absl::StrCat("op ", op_, " (kind ", last_, "): ", err);
      }
    }
    std::string err = CompareMemory();
    if (err.empty()) {
      absl::Status s = mmu_->CheckInvariants();
      if (!s.ok()) err = s.ToString();
    }
    return err;
  }

  const MmuStats stats() const { return mmu_->stats(); }

 private:
  uint64_t R(uint64_t n) { return rng_() % n; }
  bool P(int percent) { return R(100) < static_cast<uint64_t>(percent); }

  uint64_t RandomFrame() {
    const uint64_t r = R(100);
    if (r < 45) return R(kPoolPages) * 4096;
    if (r < 70) return R(256) * 4096;
    if (r < 90) return 0x400000 + R(128) * 4096;
    if (r < 95) return 0x200000 + R(4) * 4096;  // unmapped
    return R(2) * 0x400000;  // 2M / 4M aligned
  }

  uint64_t RandomGpte(int size) {
    uint64_t v = RandomFrame();
    if (P(90)) v |= kGptePresent;
    if (P(70)) v |= kGpteWrite;
    if (P(70)) v |= kGpteUser;
    if (P(75)) v |= kGpteAccessed;
    if (P(50)) v |= kGpteDirty;
    if (P(8)) v |= kGptePs;
    if (size == 8 && P(3)) v |= uint64_t{1} << (13 + R(8));  // 2M rsvd
    if (size == 4) v &= 0xFFFFFFFFull;
    return v;
  }

  uint64_t RandomGva(PagingMode mode) {
    const uint64_t off = R(4096);
    if (mode == PagingMode::kDirect) {
      const uint64_t r = R(10);
      if (r < 6) return R(256) * 4096 + off;
      if (r < 9) return 0x400000 + R(128) * 4096 + off;
      return 0x300000 + off;
    }
    if (mode == PagingMode::kLongMode) {
      static const uint64_t kIdx[] = {0, 1, 2, 3, 511};
      uint64_t gva = off;
      for (int l = 1; l <= 4; ++l) gva |= kIdx[R(l == 4 ? 2 : 5)] << (3 + 9 * l);
      return gva;
    }
    static const uint64_t kPd[] = {0, 1, 2, 256, 257, 512, 768, 1023};
    static const uint64_t kPt[] = {0, 1, 2, 3, 512, 513, 1023};
    return (kPd[R(8)] << 22) | (kPt[R(7)] << 12) | off;
  }

  std::string Step() {
    const uint64_t r = R(1000);
    const int v = static_cast<int>(R(kVcpus));
    if (paranoid_) last_ = r;
    if (r < 330) return DoAccess(v, /*write=*/true);
    if (r < 630) return DoAccess(v, /*write=*/false);
    if (r < 780) return DoGpteWrite();
    if (r < 800) return DoDataGpaWrite();
    if (r < 840) return SwitchCr3(v, cpus_[v].mode);
    if (r < 850) return SwitchCr3(v, static_cast<PagingMode>(R(3)));
    if (r < 860) {
      cpus_[v].user = !cpus_[v].user;
      vcpus_[v]->set_user_mode(cpus_[v].user);
      return "";
    }
    if (r < 880) return ToggleLogging();
    if (r < 940) return CollectAndCompare();
    if (r < 960) {
      const uint64_t a = R(0x480), b = a + R(64);
      mmu_->ZapGfnRange(a, b);
      return "";
    }
    if (r < 990) return TdpOps();
    if (r < 992) mmu_->ZapAll();
    return "";
  }

  std::string DoAccess(int v, bool write) {
    const PagingMode mode = cpus_[v].mode;
    uint64_t gva = RandomGva(mode);
    size_t len = size_t{1} << R(4);
    if (!P(3)) gva = std::min<uint64_t>(gva, (gva | 4095) + 1 - len);
    uint8_t real_buf[8], ref_buf[8];
    uint64_t val = rng_();
    if (R(4) == 0) val = RandomGpte(8);  // plausible gptes land on tables
    std::memcpy(real_buf, &val, 8);
    std::memcpy(ref_buf, &val, 8);
    AccessResult real = write ? vcpus_[v]->Write(gva, real_buf, len)
                              : vcpus_[v]->Read(gva, real_buf, len);
    // The reference goes page by page like SoftVcpu.
    AccessResult ref;
    size_t done = 0;
    while (done < len && ref.ok()) {
      const uint64_t a = gva + done;
      const size_t n = std::min<size_t>(len - done, 4096 - (a & 4095));
      ref = ref_.Access(cpus_[v], a, ref_buf + done, n, write);
      done += n;
    }
    if (!(real == ref)) {
      return absl::StrCat(write ? "write" : "read", " vcpu ", v, " mode ",
                          static_cast<int>(mode), " gva ", absl::Hex(gva),
                          ": real status ", static_cast<int>(real.status),
                          " ec ", real.error_code, " addr ",
                          absl::Hex(real.addr), " ref status ",
                          static_cast<int>(ref.status), " ec ",
                          ref.error_code, " addr ", absl::Hex(ref.addr));
    }
    if (!write && real.ok() && std::memcmp(real_buf, ref_buf, len) != 0) {
      return absl::StrCat("read data differs at gva ", absl::Hex(gva));
    }
    return "";
  }

  std::string DoGpteWrite() {
    const int size = P(50) ? 8 : 4;
    static const uint64_t k8[] = {0, 1, 2, 3, 511};
    static const uint64_t k4[] = {0, 1, 2, 3, 256, 257, 512, 513, 768, 1023};
    const uint64_t idx = size == 8 ? k8[R(5)] : k4[R(10)];
    const uint64_t gpa = R(kPoolPages) * 4096 + idx * size;
    const uint64_t val = RandomGpte(size);
    return WriteBoth(gpa, val, size);
  }

  std::string DoDataGpaWrite() {
    const uint64_t gpa = P(80) ? R(256 * 4096) : 0x400000 + R(128 * 4096);
    const int size = static_cast<int>(std::min<uint64_t>(
        uint64_t{1} << R(4), 4096 - (gpa & 4095)));
    return WriteBoth(gpa, rng_(), size);
  }

  std::string WriteBoth(uint64_t gpa, uint64_t val, int size) {
    uint8_t b[8];
    std::memcpy(b, &val, 8);
    const bool real = mmu_->WriteGpa(gpa, b, size).ok();
    const bool ref = ref_.WriteGpa(gpa, b, size);
    if (real != ref) return absl::StrCat("WriteGpa ", gpa, " disagrees");
    return "";
  }

  std::string SwitchCr3(int v, PagingMode mode) {
    const uint64_t cr3 = (P(80) ? R(4) : R(kPoolPages)) * 4096;
    cpus_[v].mode = mode;
    cpus_[v].cr3 = mode == PagingMode::kDirect ? 0 : cr3;
    absl::Status s = vcpus_[v]->SetPaging(mode, cr3);
    return s.ok() ? "" : s.ToString();
  }

  std::string ToggleLogging() {
    const uint32_t slot = static_cast<uint32_t>(R(2));
    if (mmu_->dirty_logging(slot)) {
      if (!mmu_->DisableDirtyLogging(slot).ok()) return "disable failed";
      ref_.DisableLog(slot);
    } else {
      if (!mmu_->EnableDirtyLogging(slot).ok()) return "enable failed";
      ref_.EnableLog(slot);
    }
    return "";
  }

  std::string CollectAndCompare() {
    const uint32_t slot = static_cast<uint32_t>(R(2));
    if (!mmu_->dirty_logging(slot)) return "";
    const uint64_t how = R(3);
    if (how == 2) {  // KVM_CLEAR_DIRTY_LOG of a random range
      const uint64_t npages = slot == 0 ? 256 : 128;
      const uint64_t first = R(npages), n = R(npages - first + 1);
      if (!mmu_->ClearDirtyLog(slot, first, n).ok()) return "clear failed";
      ref_.ClearLog(slot, first, n);
      return "";
    }
    DirtyBitmap bm;
    if (!mmu_->GetDirtyLog(slot, &bm, how == 0).ok()) return "get failed";
    std::vector<uint64_t> real;
    bm.ForEachSetBit([&](uint64_t p) { real.push_back(p); });
    const std::vector<uint64_t> ref = ref_.GetLog(slot, how == 0);
    if (real != ref) {
      std::string d = absl::StrCat("dirty log of slot ", slot, " (",
                                   how == 0 ? "get+clear" : "get", "): real");
      for (uint64_t p : real) absl::StrAppend(&d, " ", p);
      absl::StrAppend(&d, "; reference");
      for (uint64_t p : ref) absl::StrAppend(&d, " ", p);
      return d;
    }
    return "";
  }

  std::string TdpOps() {
    const uint64_t a = R(0x480), b = a + 1 + R(600);
    switch (R(3)) {
      case 0: mmu_->TdpZapGfnRange(a, b); break;
      case 1: mmu_->TdpWriteProtectGfnRange(a, b); break;
      default: {
        std::vector<uint64_t> gfns;
        mmu_->TdpHarvestDirtyGfnRange(a, b, &gfns);
      }
    }
    return "";
  }

  std::string CompareMemory() {
    for (const Memslot& m : ram_.slots()) {
      const std::vector<uint8_t>& ref = ref_.memory(m.slot);
      if (std::memcmp(ref.data(), m.hva, m.size) != 0) {
        size_t i = 0;
        while (ref[i] == m.hva[i]) ++i;
        return absl::StrCat("memory differs: slot ", m.slot, " offset ",
                            absl::Hex(i), " real ", m.hva[i], " ref ",
                            ref[i]);
      }
    }
    return "";
  }

  std::mt19937_64 rng_;
  GuestRam ram_;
  ReferenceModel ref_;
  std::unique_ptr<ShadowMmu> mmu_;
  std::vector<std::unique_ptr<SoftVcpu>> vcpus_;
  std::vector<ReferenceModel::Cpu> cpus_;
  uint64_t op_ = 0;
  uint64_t last_ = 0;
  const bool paranoid_ = EnvOr("FERRY_SOFTMMU_PARANOID", 0) != 0;
};

void RunDifferential(MmuOptions options, uint64_t default_ops) {
  const uint64_t seed = EnvOr("FERRY_SOFTMMU_SEED", std::random_device{}());
  const uint64_t ops = EnvOr("FERRY_SOFTMMU_DIFF_OPS", default_ops);
  std::printf("differential: seed=%" PRIu64 " ops=%" PRIu64 "\n", seed, ops);
  // Several short runs from derived seeds cover more start states.
  for (uint64_t run = 0; run < 4; ++run) {
    Differential d(seed + run, options);
    const std::string err = d.Run(ops / 4);
    ASSERT_EQ(err, "") << "seed=" << seed + run
                       << " (rerun: FERRY_SOFTMMU_SEED=" << seed + run << ")";
    const MmuStats s = d.stats();
    std::printf("run %" PRIu64 ": faults=%" PRIu64 " emulated=%" PRIu64
                " gpte_updates=%" PRIu64 " gpte_zaps=%" PRIu64
                " pages_created=%" PRIu64 " fast_fixes=%" PRIu64 "\n",
                run, s.faults, s.emulated_writes, s.gpte_updates,
                s.gpte_zaps, s.pages_created, s.fast_fixes);
    EXPECT_GT(s.emulated_writes, 0u);
    if (!options.zap_on_gpte_write) {
      EXPECT_GT(s.gpte_updates, 0u);
    }
  }
}

TEST(DifferentialTest, UpdateOnGpteWrite) { RunDifferential({}, 400000); }

TEST(DifferentialTest, ZapOnGpteWriteNoSlotBitmap) {
  MmuOptions o;
  o.zap_on_gpte_write = true;
  o.slot_bitmap_filter = false;
  RunDifferential(o, 200000);
}

}  // namespace
}  // namespace ferry::mmu::softmmu
