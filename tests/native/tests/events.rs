//! Flow events, pending reads, cancellation and per-process totals on the
//! real image (see `src/events.rs`, `src/io.rs`, `src/csq.rs`).
//!
//! Each test repeats its scenario for consecutive seeds from
//! `WFPMON_NATIVE_SEED` (default per test), `WFPMON_NATIVE_REPEAT` times
//! (default per test), prints what the runs exercised, and requires the
//! interleavings it exists for to have happened. Without the image the
//! tests print `SKIPPED: no image at …` and pass; scripts/test.sh builds
//! the image first and refuses to run without it.

#![cfg(target_os = "linux")]

use wfpmon_native_host::events::{self, EventsSummary};
use wfpmon_native_host::{image_present, rng, scenarios};

/// Repeats `scenario`; `None` when skipped.
fn run(
    name: &str,
    default_seed: u64,
    default_reps: u32,
    scenario: impl FnMut(u64) -> Result<EventsSummary, String>,
) -> Option<EventsSummary> {
    if !image_present() {
        return None;
    }
    let base = rng::base_seed(default_seed);
    let reps = rng::repetitions(default_reps);
    let started = std::time::Instant::now();
    match events::repeat(name, base, reps, scenario) {
        Ok(summary) => {
            eprintln!(
                "{name}: {reps} runs from seed {base:#x} in {:.1?}: {summary:#?}",
                started.elapsed()
            );
            Some(summary)
        }
        Err(e) => panic!("{e}"),
    }
}

/// Rules K17, K19 and K21: a pending read cancelled through the queue's
/// cancel routine, and one cancelled before it was queued.
#[test]
fn the_event_protocol_step_by_step() {
    if let Some(s) = run(
        "the_event_protocol_step_by_step",
        0xE000,
        20,
        events::basics,
    ) {
        assert_eq!(
            s.io.cancel_routines_run, s.world.runs,
            "one IoCancelIrp of a pending read per run found the cancel routine: {s:?}"
        );
        assert_eq!(
            s.io.cancelled_before_queued, s.world.runs,
            "one IRP per run was cancelled before the driver queued it: {s:?}"
        );
    }
}

/// Rules K24 and K20: cleanup cancels a handle's pending reads while other
/// threads complete and cancel reads.
#[test]
fn events_under_concurrency_with_cancellation() {
    if let Some(s) = run(
        "events_under_concurrency_with_cancellation",
        0xE100,
        40,
        |seed| events::events_under_concurrency(seed, 3, 3, 300, false),
    ) {
        assert!(s.events_read > 0, "the readers read nothing: {s:?}");
        assert!(
            s.completed_by_classify > 0,
            "no pending read was ever completed by a classify thread: {s:?}"
        );
        assert!(
            s.io.cancel_routines_run > 0,
            "IoCancelIrp never met a queued read: {s:?}"
        );
        assert!(
            s.cancelled_by_cleanup > 0,
            "IRP_MJ_CLEANUP never cancelled a pending read: {s:?}"
        );
        assert_eq!(
            s.dropped, 0,
            "a run that fits the ring dropped events: {s:?}"
        );
    }
}

#[test]
fn events_under_concurrency_with_recycled_irps() {
    // The I/O manager hands out IRP memory again (lookaside lists): a read
    // completed on one thread often has the address of the next read sent.
    if let Some(s) = run(
        "events_under_concurrency_with_recycled_irps",
        0xE200,
        150,
        |seed| events::events_under_concurrency(seed, 3, 4, 300, true),
    ) {
        assert!(
            s.completed_by_classify > 0,
            "no pending read was ever completed by a classify thread: {s:?}"
        );
    }
}

#[test]
fn the_ring_overflows_with_exact_drop_counts() {
    if let Some(s) = run(
        "the_ring_overflows_with_exact_drop_counts",
        0xE300,
        4,
        |seed| events::ring_overflow(seed, 9_000),
    ) {
        assert!(
            s.dropped > 2 * s.world.runs,
            "the readers were never told of drops: {s:?}"
        );
    }
}

#[test]
fn per_process_totals_are_exact_while_flows_end() {
    if let Some(s) = run(
        "per_process_totals_are_exact_while_flows_end",
        0xE400,
        20,
        |seed| events::process_totals(seed, 600),
    ) {
        assert!(
            s.process_pages > 10 * s.world.runs,
            "few process pages were checked: {s:?}"
        );
        assert!(
            s.busy_retries > 0,
            "two racing queries never met STATUS_DEVICE_BUSY: {s:?}"
        );
    }
}

/// Rule K25: no request reaches the driver once Unload begins.
#[test]
fn unload_with_reads_pending_on_several_threads() {
    if let Some(s) = run(
        "unload_with_reads_pending_on_several_threads",
        0xE500,
        60,
        |seed| events::unload_with_pending_reads(seed, 4, seed % 2 == 0),
    ) {
        assert!(
            s.completed_during_unload >= 4 * s.world.runs / 2,
            "the reads pending at Unload were not completed by it: {s:?}"
        );
        assert!(
            s.cancelled_reads >= 4 * s.world.runs / 2,
            "the quiet runs' pending reads were not cancelled by the teardown: {s:?}"
        );
    }
}

#[test]
fn driver_entry_initialises_the_read_queue_first_and_fails_cleanly_there() {
    if !image_present() {
        return;
    }
    let base = rng::base_seed(0xE600);
    let calls = scenarios::failable_driver_entry_calls(base).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("DriverEntry's failable calls: {calls:?}");
    let csq = calls.iter().position(|c| *c == "IoCsqInitialize");
    let device = calls.iter().position(|c| *c == "IoCreateDevice");
    assert!(
        csq.is_some() && csq < device,
        "IoCsqInitialize must come before IoCreateDevice: {calls:?}"
    );
    // Only the ETW registration (whose failure does not fail the driver)
    // comes before it.
    assert!(
        calls[..csq.unwrap_or(0)]
            .iter()
            .all(|c| c.starts_with("Etw")),
        "failable calls before IoCsqInitialize: {calls:?}"
    );
    let k = csq.unwrap_or(0) + 1;
    let status = events::driver_entry_failing_at(base, k).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        status,
        wfpmon_core::status::STATUS_INSUFFICIENT_RESOURCES,
        "DriverEntry must fail with IoCsqInitialize's status"
    );
    let s = scenarios::repeat(
        "fault at IoCsqInitialize",
        base + 1,
        rng::repetitions(10),
        |seed| scenarios::driver_entry_fault(seed, k, 2),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("fault at IoCsqInitialize: {s:?}");
    assert_eq!(
        s.contexts, 0,
        "no flow can be tracked when DriverEntry fails first: {s:?}"
    );
}

/// Rules K11, K12, K15 and K18 firing: the I/O model reports each
/// deliberate breakage of [`events::io_self_check`].
#[test]
fn the_io_checks_catch_what_they_must() {
    if !image_present() {
        return;
    }
    let seen = events::io_self_check(rng::base_seed(0xE700)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("I/O self-check violations: {seen:#?}");
    for expected in [
        "not an outstanding IRP (completed twice",
        "with IoStatus.Status = STATUS_PENDING",
        "with a cancel routine still set",
        "not an IO_CSQ initialised by IoCsqInitialize",
        "IRP(s) sent to the driver were still pending",
    ] {
        assert!(
            seen.iter().any(|v| v.contains(expected)),
            "the harness did not report \"{expected}\"; it reported {seen:#?}"
        );
    }
}

#[test]
fn more_processes_than_the_table_holds() {
    if let Some(s) = run(
        "more_processes_than_the_table_holds",
        0xE800,
        5,
        events::process_table_full,
    ) {
        assert!(s.process_pages > 0, "{s:?}");
    }
}
