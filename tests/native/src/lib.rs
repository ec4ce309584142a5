//! # wfpmon-native-host — the real `wfpmon.sys`, run natively on Linux
//!
//! Loads the kernel image the Linux build produces
//! (`target/x86_64-pc-windows-msvc/release/wfpmon.sys`) into this process
//! with a small PE loader ([`pe`]), resolves every import by name to an
//! `extern "win64"` model of the kernel ([`kernel`]) or of the filter engine
//! ([`engine`]), and drives it from real threads ([`world`],
//! [`scenarios`]). The models are rules, not stubs: every call is checked
//! against the documented contract of the function (IRQL, object
//! lifetimes, lock ownership, the engine's flow-context protocol), and a
//! broken rule is recorded as a violation that fails the run.
//!
//! Everything here is Linux-only; on other targets the crate is empty.
//!
//! Layout:
//! - [`pe`]: mapping, relocations, protections, imports, the
//!   `KUSER_SHARED_DATA` patch and the scan for kernel-only instructions;
//! - [`crash`]: a fault inside the image is reported as an image offset;
//! - [`clock`]: interrupt time (real or simulated) and the page the image
//!   reads it from;
//! - [`kernel`]: per-thread IRQL and in-image tracking, the pool ledger,
//!   spin locks, events, `DbgPrint`, device objects, kernel handles, ETW,
//!   and (for the benchmarks) where a thread's time goes: host, image or
//!   models;
//! - [`io`]: the I/O manager's side of IRPs — file objects, requests that
//!   stay pending, completion, `IoCancelIrp`, cleanup — and its rules;
//! - [`csq`]: the cancel-safe queue routines (`IoCsq*`), which call the
//!   driver's queue callbacks;
//! - [`engine`]: the fake filter engine (the rules of every model, with
//!   their sources, are in `docs/engine-rules.md`);
//! - [`etw`]: ETW registration, an enabling session, `TraceLogging` events
//!   decoded into the log;
//! - [`imports`]: the table of modelled imports (data-driven);
//! - [`world`]: one loaded image with its kernel and engine, and the
//!   host-side actions (flows, classify, IOCTLs, unload);
//! - [`scenarios`]: the threaded scenarios the tests, the memcheck run and
//!   the benchmark share;
//! - [`events`]: flow events, pending reads, per-process totals: their
//!   client side and scenarios;
//! - [`standin`]: the benchmarks' host-model baseline (the driver's kernel
//!   and engine calls per flow, without the driver).

#![cfg(target_os = "linux")]
// Lints relaxed for this test host, each for a reason:
#![allow(
    // The models are called by the image through its import table, not by
    // Rust code: `#[must_use]` on them would tell no caller anything.
    clippy::must_use_candidate,
    // The documentation quotes WDK identifiers (FwpsCalloutRegister1,
    // flowDeleteFn, KUSER_SHARED_DATA) as prose, as the WDK pages do.
    clippy::doc_markdown,
    // A panic of the host is a failed run with its message.
    clippy::missing_panics_doc,
    // The engine and the kernel models hold their locks across each rule's
    // decision on purpose (the decision must be atomic).
    clippy::significant_drop_tightening,
    // Structures the driver hands over are C structures, naturally aligned
    // at their documented offsets.
    clippy::cast_ptr_alignment,
    // Module and scenario documentation leads with the whole rule.
    clippy::too_long_first_doc_paragraph,
    // The import table and the IRP builder read best as one list each.
    clippy::too_many_lines
)]

pub mod clock;
pub mod crash;
pub mod csq;
pub mod engine;
pub mod etw;
pub mod events;
pub mod imports;
pub mod io;
pub mod kernel;
pub mod pe;
pub mod rng;
pub mod scenarios;
pub mod standin;
pub mod world;

/// Where the Linux build puts the image, relative to the workspace root.
pub const IMAGE_RELATIVE_PATH: &str = "target/x86_64-pc-windows-msvc/release/wfpmon.sys";

/// The image to load: `$WFPMON_SYS` when set, else the build's output in
/// this workspace.
#[must_use]
pub fn image_path() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("WFPMON_SYS") {
        return path.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(IMAGE_RELATIVE_PATH)
}

/// `true` when the image exists; otherwise says loudly (on stdout and
/// stderr) that the calling test is skipped.
#[must_use]
pub fn image_present() -> bool {
    let path = image_path();
    if path.exists() {
        return true;
    }
    let message = format!(
        "SKIPPED: no image at {} (run scripts/linux/build.sh)",
        path.display()
    );
    println!("{message}");
    eprintln!("{message}");
    false
}
