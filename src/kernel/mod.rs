//! The kernel boundary: every call into ntoskrnl or the filter engine, and
//! every read of memory the kernel hands us, happens in this module, behind
//! typed wrappers whose safe APIs cannot be misused from the rest of the
//! driver. Each function documents the IRQL it may be called at.

pub mod csq;
pub mod device;
pub mod driver;
pub mod irp;
pub mod pool;
pub mod sync;
pub mod time;
pub mod wfp;

/// Writes a line to the kernel debugger (`DbgPrint`), prefixed with the
/// driver's name — in debug builds only, for a developer with a debugger
/// attached. Release builds report through ETW ([`crate::trace`]); the
/// arguments are still type-checked there, and the call is compiled out.
/// Used at `PASSIVE_LEVEL` lifecycle steps only, never per flow or packet.
macro_rules! log {
    ($($arg:tt)*) => {
        if cfg!(debug_assertions) {
            wdk::println!("wfpmon: {}", format_args!($($arg)*));
        }
    };
}
pub(crate) use log;

/// An `NTSTATUS` formatted the way Windows documentation spells it.
#[derive(Clone, Copy)]
pub struct Status(pub wdk_sys::NTSTATUS);

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        #[allow(clippy::cast_sign_loss)] // print the bit pattern
        let bits = self.0 as u32;
        write!(f, "{bits:#010x}")
    }
}

/// `KernelMode` as the `KPROCESSOR_MODE` (`CCHAR`) that waits and object
/// calls take.
#[allow(clippy::cast_possible_truncation)] // KernelMode is 0
pub const KERNEL_MODE: i8 = wdk_sys::_MODE::KernelMode as i8;

/// `NT_SUCCESS()`.
#[must_use]
pub const fn nt_success(status: wdk_sys::NTSTATUS) -> bool {
    status >= 0
}

/// A NUL-terminated UTF-16 copy of an ASCII string, built at compile time,
/// for kernel `UNICODE_STRING`s (no allocation, no `RtlInitUnicodeString`).
pub struct WideStr<const N: usize>([u16; N]);

impl<const N: usize> WideStr<N> {
    /// Encodes `s` followed by a NUL; `N` must be `s.len() + 1`.
    ///
    /// # Panics
    /// At compile time, when `s` is not ASCII or `N` is not its length + 1.
    #[must_use]
    pub const fn with_nul(s: &str) -> Self {
        let bytes = s.as_bytes();
        assert!(bytes.len() + 1 == N, "length mismatch");
        let mut out = [0u16; N];
        let mut i = 0;
        while i < bytes.len() {
            assert!(bytes[i].is_ascii(), "not ASCII");
            out[i] = bytes[i] as u16;
            i += 1;
        }
        Self(out)
    }

    /// The characters.
    #[must_use]
    pub const fn as_slice(&self) -> &[u16] {
        &self.0
    }
}
