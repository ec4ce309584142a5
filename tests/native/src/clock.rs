//! Interrupt time, and the host page that stands in for
//! `KUSER_SHARED_DATA` (rule K35 of `docs/engine-rules.md`).
//!
//! `KeQueryInterruptTime()` is a wdm.h macro: the image reads
//! `KUSER_SHARED_DATA.InterruptTime` at the fixed kernel address
//! `0xFFFFF78000000008` with a `movabs`. User space cannot map that address,
//! so the loader rewrites those immediates to point into [`shared_page`],
//! which a host thread keeps up to date (every 200 µs).
//!
//! Time is real monotonic time plus a *simulated* offset that only grows:
//! a world with a simulated clock advances it instead of sleeping through
//! the driver's timeouts, so an engine that answers only after ten minutes
//! runs in well under a second.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Offset of `InterruptTime` in `KUSER_SHARED_DATA`.
pub const INTERRUPT_TIME_OFFSET: usize = 8;
/// The kernel address the image reads (`SharedInterruptTime`).
pub const KERNEL_INTERRUPT_TIME: u64 = 0xFFFF_F780_0000_0008;
/// The kernel address of the whole page (`KI_USER_SHARED_DATA`).
pub const KERNEL_USER_SHARED_DATA: u64 = 0xFFFF_F780_0000_0000;

static START: OnceLock<Instant> = OnceLock::new();
static SIMULATED_100NS: AtomicU64 = AtomicU64::new(0);
/// An arbitrary uptime at process start, so that interrupt time is never 0.
const BOOT_100NS: u64 = 3_600 * 10_000_000;

/// Interrupt time now, in 100 ns units.
#[must_use]
pub fn now_100ns() -> u64 {
    let start = START.get_or_init(Instant::now);
    let real = u64::try_from(start.elapsed().as_nanos() / 100).unwrap_or(u64::MAX);
    BOOT_100NS + real + SIMULATED_100NS.load(Ordering::Acquire)
}

/// Moves simulated time forward by `delta_100ns`.
pub fn advance(delta_100ns: u64) {
    SIMULATED_100NS.fetch_add(delta_100ns, Ordering::AcqRel);
    publish();
}

/// Time converted for printing.
#[must_use]
pub const fn as_duration(t_100ns: u64) -> Duration {
    Duration::from_nanos(t_100ns.saturating_mul(100))
}

struct Page(usize);

static PAGE: OnceLock<Page> = OnceLock::new();

/// The host page whose `InterruptTime` field the patched image reads
/// (mapped once per process; an updater thread keeps it current).
///
/// # Panics
/// When the page cannot be mapped.
pub fn shared_page() -> usize {
    PAGE.get_or_init(|| {
        // SAFETY: an anonymous private mapping of one page; no existing
        // memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap of the shared data page failed");
        let page = Page(p as usize);
        // SAFETY: the page was just mapped, 8-aligned at this offset; no one
        // else knows it yet. The first value, before the updater runs.
        unsafe { ((p as usize + INTERRUPT_TIME_OFFSET) as *mut u64).write(now_100ns()) };
        std::thread::Builder::new()
            .name("kuser-clock".into())
            .spawn(|| {
                loop {
                    publish();
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
            .expect("clock thread");
        page
    })
    .0
}

fn interrupt_time_cell() -> &'static AtomicU64 {
    let addr = shared_page() + INTERRUPT_TIME_OFFSET;
    // SAFETY: the page is mapped for the life of the process (never
    // unmapped), 8-aligned at this offset, and only ever accessed atomically
    // by the host; the image only reads it (an aligned 64-bit load).
    unsafe { &*(addr as *const AtomicU64) }
}

/// Writes the current time to the page.
pub fn publish() {
    interrupt_time_cell().store(now_100ns(), Ordering::Release);
}

/// The interrupt time the image reads now (the page's value, which trails
/// [`now_100ns`] by up to the updater's period — more on a loaded machine).
#[must_use]
pub fn published_100ns() -> u64 {
    interrupt_time_cell().load(Ordering::Acquire)
}
