#include "agent/vmm/kvm/state_proto.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace ferry::vmm {
namespace {

void SegmentTo(const kvm_segment& s, v1::Segment* p) {
  p->set_base(s.base);
  p->set_limit(s.limit);
  p->set_selector(s.selector);
  p->set_type(s.type);
  p->set_present(s.present);
  p->set_dpl(s.dpl);
  p->set_db(s.db);
  p->set_s(s.s);
  p->set_l(s.l);
  p->set_g(s.g);
  p->set_avl(s.avl);
  p->set_unusable(s.unusable);
}

kvm_segment SegmentFrom(const v1::Segment& p) {
  kvm_segment s{};
  s.base = p.base();
  s.limit = p.limit();
  s.selector = static_cast<uint16_t>(p.selector());
  s.type = static_cast<uint8_t>(p.type());
  s.present = p.present();
  s.dpl = static_cast<uint8_t>(p.dpl());
  s.db = p.db();
  s.s = p.s();
  s.l = p.l();
  s.g = p.g();
  s.avl = p.avl();
  s.unusable = p.unusable();
  return s;
}

// kvm_regs and v1::Regs list the same 18 registers in the same order.
#define FERRY_REGS(X) \
  X(rax) X(rbx) X(rcx) X(rdx) X(rsi) X(rdi) X(rsp) X(rbp) X(r8) X(r9) \
  X(r10) X(r11) X(r12) X(r13) X(r14) X(r15) X(rip) X(rflags)

void RegsTo(const kvm_regs& r, v1::Regs* p) {
#define X(f) p->set_##f(r.f);
  FERRY_REGS(X)
#undef X
}

kvm_regs RegsFrom(const v1::Regs& p) {
  kvm_regs r{};
#define X(f) r.f = p.f();
  FERRY_REGS(X)
#undef X
  return r;
}

#define FERRY_SEGS(X) X(cs) X(ds) X(es) X(fs) X(gs) X(ss) X(tr) X(ldt)

void SregsTo(const kvm_sregs& s, v1::Sregs* p) {
#define X(f) SegmentTo(s.f, p->mutable_##f());
  FERRY_SEGS(X)
#undef X
  p->mutable_gdt()->set_base(s.gdt.base);
  p->mutable_gdt()->set_limit(s.gdt.limit);
  p->mutable_idt()->set_base(s.idt.base);
  p->mutable_idt()->set_limit(s.idt.limit);
  p->set_cr0(s.cr0);
  p->set_cr2(s.cr2);
  p->set_cr3(s.cr3);
  p->set_cr4(s.cr4);
  p->set_cr8(s.cr8);
  p->set_efer(s.efer);
  p->set_apic_base(s.apic_base);
}

kvm_sregs SregsFrom(const v1::Sregs& p) {
  kvm_sregs s{};
#define X(f) s.f = SegmentFrom(p.f());
  FERRY_SEGS(X)
#undef X
  s.gdt.base = p.gdt().base();
  s.gdt.limit = static_cast<uint16_t>(p.gdt().limit());
  s.idt.base = p.idt().base();
  s.idt.limit = static_cast<uint16_t>(p.idt().limit());
  s.cr0 = p.cr0();
  s.cr2 = p.cr2();
  s.cr3 = p.cr3();
  s.cr4 = p.cr4();
  s.cr8 = p.cr8();
  s.efer = p.efer();
  s.apic_base = p.apic_base();
  // interrupt_bitmap stays 0: pending interrupts travel in VcpuEvents.
  return s;
}

void EventsTo(const kvm_vcpu_events& e, v1::VcpuEvents* p) {
  p->set_exception_injected(e.exception.injected);
  p->set_exception_nr(e.exception.nr);
  p->set_exception_has_error_code(e.exception.has_error_code);
  p->set_exception_pending(e.exception.pending);
  p->set_exception_error_code(e.exception.error_code);
  p->set_exception_has_payload(e.exception_has_payload);
  p->set_exception_payload(e.exception_payload);
  p->set_interrupt_injected(e.interrupt.injected);
  p->set_interrupt_nr(e.interrupt.nr);
  p->set_interrupt_soft(e.interrupt.soft);
  p->set_interrupt_shadow(e.interrupt.shadow);
  p->set_nmi_injected(e.nmi.injected);
  p->set_nmi_pending(e.nmi.pending);
  p->set_nmi_masked(e.nmi.masked);
  p->set_sipi_vector(e.sipi_vector);
  p->set_flags(e.flags);
  p->set_smi_smm(e.smi.smm);
  p->set_smi_pending(e.smi.pending);
  p->set_smi_inside_nmi(e.smi.smm_inside_nmi);
  p->set_smi_latched_init(e.smi.latched_init);
  p->set_triple_fault_pending(e.triple_fault.pending);
}

kvm_vcpu_events EventsFrom(const v1::VcpuEvents& p) {
  kvm_vcpu_events e{};
  e.exception.injected = p.exception_injected();
  e.exception.nr = static_cast<uint8_t>(p.exception_nr());
  e.exception.has_error_code = p.exception_has_error_code();
  e.exception.pending = p.exception_pending();
  e.exception.error_code = p.exception_error_code();
  e.exception_has_payload = p.exception_has_payload();
  e.exception_payload = p.exception_payload();
  e.interrupt.injected = p.interrupt_injected();
  e.interrupt.nr = static_cast<uint8_t>(p.interrupt_nr());
  e.interrupt.soft = p.interrupt_soft();
  e.interrupt.shadow = static_cast<uint8_t>(p.interrupt_shadow());
  e.nmi.injected = p.nmi_injected();
  e.nmi.pending = p.nmi_pending();
  e.nmi.masked = p.nmi_masked();
  e.sipi_vector = p.sipi_vector();
  e.flags = p.flags();
  e.smi.smm = p.smi_smm();
  e.smi.pending = p.smi_pending();
  e.smi.smm_inside_nmi = p.smi_inside_nmi();
  e.smi.latched_init = p.smi_latched_init();
  e.triple_fault.pending = p.triple_fault_pending();
  return e;
}

void DebugTo(const kvm_debugregs& d, v1::DebugRegs* p) {
  for (uint64_t db : d.db) p->add_db(db);
  p->set_dr6(d.dr6);
  p->set_dr7(d.dr7);
  p->set_flags(d.flags);
}

absl::StatusOr<kvm_debugregs> DebugFrom(const v1::DebugRegs& p) {
  kvm_debugregs d{};
  if (p.db_size() != 0 && p.db_size() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("VcpuState.debug_regs.db has ", p.db_size(), " entries, "
                     "want 4"));
  }
  for (int i = 0; i < p.db_size(); ++i) d.db[i] = p.db(i);
  d.dr6 = p.dr6();
  d.dr7 = p.dr7();
  d.flags = static_cast<uint32_t>(p.flags());
  return d;
}

template <typename T>
std::string Bytes(const T* data, size_t n) {
  return std::string(reinterpret_cast<const char*>(data), n * sizeof(T));
}

}  // namespace

v1::VcpuState VcpuStateToProto(uint32_t index, const kmod::VcpuState& s) {
  v1::VcpuState p;
  p.set_vcpu_index(index);
  RegsTo(s.regs, p.mutable_regs());
  SregsTo(s.sregs, p.mutable_sregs());
  p.set_xsave(Bytes(s.xsave.data(), s.xsave.size()));
  for (uint32_t i = 0; i < s.xcrs.nr_xcrs && i < KVM_MAX_XCRS; ++i) {
    v1::XcrEntry* x = p.add_xcrs();
    x->set_xcr(s.xcrs.xcrs[i].xcr);
    x->set_value(s.xcrs.xcrs[i].value);
  }
  for (const kmod::MsrEntry& m : s.msrs) {
    v1::MsrEntry* e = p.add_msrs();
    e->set_index(m.index);
    e->set_value(m.data);
  }
  if (s.lapic) p.set_lapic(Bytes(s.lapic->regs, sizeof(s.lapic->regs)));
  EventsTo(s.events, p.mutable_events());
  p.set_mp_state(s.mp_state.mp_state);
  DebugTo(s.debugregs, p.mutable_debug_regs());
  for (const kvm_cpuid_entry2& c : s.cpuid) {
    v1::CpuidEntry* e = p.add_cpuid();
    e->set_function(c.function);
    e->set_index(c.index);
    e->set_flags(c.flags);
    e->set_eax(c.eax);
    e->set_ebx(c.ebx);
    e->set_ecx(c.ecx);
    e->set_edx(c.edx);
  }
  return p;
}

absl::StatusOr<kmod::VcpuState> VcpuStateFromProto(const v1::VcpuState& p) {
  kmod::VcpuState s;
  s.regs = RegsFrom(p.regs());
  s.sregs = SregsFrom(p.sregs());
  if (p.xsave().size() % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "VcpuState.xsave is ", p.xsave().size(), " bytes, not whole u32s"));
  }
  s.xsave.resize(p.xsave().size() / 4);
  std::memcpy(s.xsave.data(), p.xsave().data(), p.xsave().size());
  if (p.xcrs_size() > KVM_MAX_XCRS) {
    return absl::InvalidArgumentError("VcpuState.xcrs: too many entries");
  }
  s.xcrs.nr_xcrs = p.xcrs_size();
  for (int i = 0; i < p.xcrs_size(); ++i) {
    s.xcrs.xcrs[i].xcr = p.xcrs(i).xcr();
    s.xcrs.xcrs[i].value = p.xcrs(i).value();
  }
  for (const v1::MsrEntry& m : p.msrs()) s.msrs.push_back({m.index(), m.value()});
  if (!p.lapic().empty()) {
    kvm_lapic_state lapic{};
    if (p.lapic().size() != sizeof(lapic.regs)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "VcpuState.lapic is ", p.lapic().size(), " bytes, want ",
          sizeof(lapic.regs)));
    }
    std::memcpy(lapic.regs, p.lapic().data(), sizeof(lapic.regs));
    s.lapic = lapic;
  }
  s.events = EventsFrom(p.events());
  s.mp_state.mp_state = p.mp_state();
  auto debug = DebugFrom(p.debug_regs());
  if (!debug.ok()) return debug.status();
  s.debugregs = *debug;
  for (const v1::CpuidEntry& c : p.cpuid()) {
    kvm_cpuid_entry2 e{};
    e.function = c.function();
    e.index = c.index();
    e.flags = c.flags();
    e.eax = c.eax();
    e.ebx = c.ebx();
    e.ecx = c.ecx();
    e.edx = c.edx();
    s.cpuid.push_back(e);
  }
  return s;
}

}  // namespace ferry::vmm
