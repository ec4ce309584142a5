//! Time.

/// Address of `KUSER_SHARED_DATA.InterruptTime` in kernel space
/// (`SharedInterruptTime` in wdm.h: `KI_USER_SHARED_DATA + 0x8`).
const SHARED_INTERRUPT_TIME: usize = 0xFFFF_F780_0000_0008;

/// Interrupt time: 100 ns units since boot, monotonic. Any IRQL.
///
/// This is what wdm.h's `KeQueryInterruptTime()` macro does on x64 — it is a
/// macro there, not an export, which is why bindgen has nothing to bind: a
/// single aligned 64-bit read of the shared user data page, which the kernel
/// updates atomically on 64-bit systems.
#[must_use]
pub fn interrupt_time() -> u64 {
    // SAFETY: KUSER_SHARED_DATA is mapped read-only at this fixed address in
    // every x64 kernel address space; the field is naturally aligned.
    unsafe { core::ptr::read_volatile(SHARED_INTERRUPT_TIME as *const u64) }
}
