//! The threaded scenarios on the real image (see `src/scenarios.rs`).
//!
//! Each test repeats its scenario for consecutive seeds from
//! `WFPMON_NATIVE_SEED` (default per test), `WFPMON_NATIVE_REPEAT` times
//! (default per test), prints what the runs exercised, and requires the
//! interleaving it exists for to have happened at least once. Without the
//! image the tests print `SKIPPED: no image at …` and pass; scripts/test.sh
//! builds the image first and refuses to run without it.

#![cfg(target_os = "linux")]

use wfpmon_native_host::engine::Barrier;
use wfpmon_native_host::world::Summary;
use wfpmon_native_host::{image_path, image_present, rng, scenarios};

/// Repeats `scenario`; `None` when skipped.
fn run(
    name: &str,
    default_seed: u64,
    default_reps: u32,
    scenario: impl FnMut(u64) -> Result<Summary, String>,
) -> Option<Summary> {
    if !image_present() {
        return None;
    }
    let base = rng::base_seed(default_seed);
    let reps = rng::repetitions(default_reps);
    match scenarios::repeat(name, base, reps, scenario) {
        Ok(summary) => {
            eprintln!("{name}: {reps} runs from seed {base:#x}: {summary:?}");
            Some(summary)
        }
        Err(e) => panic!("{e}"),
    }
}

/// Rule K35: the image's reads of `KUSER_SHARED_DATA.InterruptTime` are
/// found and pointed at the host's page.
#[test]
fn loader_resolves_every_import_and_patches_interrupt_time() {
    if !image_present() {
        return;
    }
    let image =
        wfpmon_native_host::pe::Image::load(&image_path()).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("imports: {:?}", image.imports);
    eprintln!(
        "interrupt-time reads patched at {:x?}",
        image.interrupt_time_sites
    );
    assert!(!image.imports.is_empty(), "the image imports nothing?");
    assert!(
        !image.interrupt_time_sites.is_empty(),
        "no read of KUSER_SHARED_DATA.InterruptTime found (src/kernel/time.rs reads it)"
    );
    assert!(image.is_code(image.entry()));
}

/// Rule E6: a second association of a flow answers
/// `STATUS_OBJECT_NAME_EXISTS` (the scenario checks the driver copes).
#[test]
fn lifecycle() {
    if let Some(s) = run("lifecycle", 0x1000, 50, scenarios::lifecycle) {
        assert!(
            s.contexts >= 8 * s.runs,
            "each run associates a context per flow: {s:?}"
        );
    }
}

/// Rule E8: Unload's removal pass over ten thousand contexts, each
/// flowDeleteFn inside its `FwpsFlowRemoveContext0`.
#[test]
fn ten_thousand_flows() {
    if let Some(s) = run("ten_thousand_flows", 0x2000, 3, |seed| {
        scenarios::many_flows(seed, 10_000)
    }) {
        assert_eq!(
            s.contexts,
            10_000 * s.runs,
            "every flow got a context: {s:?}"
        );
    }
}

/// Rule E4: the engine waits for the classifies in progress.
#[test]
fn unload_during_traffic_engine_waits() {
    if let Some(s) = run("unload_during_traffic_engine_waits", 0x3000, 600, |seed| {
        scenarios::unload_during_traffic(seed, 4, Barrier::Wait)
    }) {
        assert!(
            s.classifies_during_unload > 0,
            "no classify ever overlapped Unload: {s:?}"
        );
        assert!(
            s.refused_classifies > 0,
            "no classify ever met an unregistered callout: {s:?}"
        );
    }
}

/// Rule E5: the engine answers busy while a classify is in progress.
#[test]
fn unload_during_traffic_engine_answers_busy() {
    if let Some(s) = run(
        "unload_during_traffic_engine_answers_busy",
        0x3800,
        200,
        |seed| scenarios::unload_during_traffic(seed, 4, Barrier::Busy),
    ) {
        assert!(
            s.classifies_during_unload > 0,
            "no classify ever overlapped Unload: {s:?}"
        );
        assert!(
            s.busy_unregisters > 0,
            "the engine never answered busy: {s:?}"
        );
    }
}

/// Rule E11: flows end on their own during Unload's removal pass.
#[test]
fn flows_end_during_the_removal_pass() {
    if let Some(s) = run("flows_end_during_the_removal_pass", 0x4000, 300, |seed| {
        scenarios::flows_end_during_removal(seed, 2_000)
    }) {
        assert!(
            s.flows_ended_during_unload > 0,
            "no flow ever ended during Unload: {s:?}"
        );
    }
}

/// Rule E12: every deletion deferred by ten simulated minutes.
#[test]
fn slow_deferred_deletions_are_waited_for() {
    if let Some(s) = run(
        "slow_deferred_deletions_are_waited_for",
        0x5000,
        5,
        |seed| scenarios::slow_deferred_deletions(seed, 200),
    ) {
        assert!(
            s.pending_removals >= 200 * s.runs,
            "removals were not deferred: {s:?}"
        );
    }
}

/// Rules K30 and E1: each failable call of `DriverEntry` fails in turn, while
/// other threads classify at the callouts registered so far.
#[test]
fn a_failure_at_every_failable_driver_entry_call() {
    if !image_present() {
        return;
    }
    let base = rng::base_seed(0x6000);
    let calls = scenarios::failable_driver_entry_calls(base).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("DriverEntry's failable calls: {calls:?}");
    assert!(
        calls.len() >= 8,
        "DriverEntry made only these failable calls: {calls:?}"
    );
    let reps = rng::repetitions(5);
    let mut total = Summary::default();
    for k in 1..=calls.len() {
        let name = format!("fault at call {k} ({})", calls[k - 1]);
        match scenarios::repeat(&name, base + k as u64 * 0x100, reps, |seed| {
            scenarios::driver_entry_fault(seed, k, 2)
        }) {
            Ok(s) => total = total.plus(s),
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("faults: {total:?}");
    assert!(
        total.contexts > 0,
        "the hammering threads never got a flow associated: {total:?}"
    );
}

/// Rules K30 and E7: allocations fail at random; flows left without a
/// context get no data classify at the conditional callouts.
#[test]
fn pool_exhaustion_during_traffic() {
    if let Some(s) = run("pool_exhaustion_during_traffic", 0x9000, 20, |seed| {
        scenarios::allocation_failures(seed, 3, 1_000)
    }) {
        assert!(s.contexts > 0, "no flow was tracked at all: {s:?}");
    }
}

/// Rules E9 and E11: flows end while another thread classifies them; the
/// deletion waits for that classify.
#[test]
fn flows_shared_by_all_threads() {
    if let Some(s) = run("flows_shared_by_all_threads", 0xA000, 100, |seed| {
        scenarios::shared_flows(seed, 3, 2_000)
    }) {
        assert!(
            s.ended_while_classifying > 0,
            "no flow ever ended during a classify of it: {s:?}"
        );
    }
}

#[test]
fn ioctls_from_another_thread_during_traffic() {
    if let Some(s) = run(
        "ioctls_from_another_thread_during_traffic",
        0x7000,
        30,
        |seed| scenarios::ioctls_during_traffic(seed, 3, 2_000),
    ) {
        assert!(s.contexts > 0, "{s:?}");
    }
}

/// Rules K1, K9, K26, K27, K29, K32, K34 and T3 firing: the harness
/// reports each deliberate breakage of [`scenarios::self_check`].
#[test]
fn the_checks_catch_what_they_must() {
    if !image_present() {
        return;
    }
    let seen = scenarios::self_check(rng::base_seed(0x8000)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("self-check violations: {seen:#?}");
    for expected in [
        "returned holding 1 spin lock",
        "returned at IRQL 2",
        "Unload returned leaving 1 pool block(s) (Leak:64B)",
        "driver code called after the image was unloaded",
        "ZwClose called at IRQL 2; its maximum is 0",
        "ExAllocatePool2(POOL_FLAG_PAGED) above APC_LEVEL",
        "KeWaitForSingleObject with a non-zero timeout at IRQL 2",
        "IoDeleteDevice while 1 callout(s) registered against the device are still registered",
        "Unload returned leaving an ETW provider registered",
    ] {
        assert!(
            seen.iter().any(|v| v.contains(expected)),
            "the harness did not report \"{expected}\"; it reported {seen:#?}"
        );
    }
}

#[test]
fn a_fault_inside_the_image_is_reported_as_an_image_offset() {
    if !image_present() {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wfpmon-native-stress"))
        .arg("fault-in-image")
        .output()
        .expect("run wfpmon-native-stress");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived: {stderr}");
    assert!(
        stderr.contains("fatal signal SIGSEGV") && stderr.contains("= wfpmon.sys image offset 0x"),
        "no image offset in the report: {stderr}"
    );
}

/// Rule E14: `NOT_FOUND` while deferred `flowDeleteFn` calls are owed,
/// with the engine waiting for classifies in progress.
#[test]
fn not_found_while_deletions_are_owed_engine_waits() {
    if let Some(s) = run(
        "not_found_while_deletions_are_owed_engine_waits",
        0x5800,
        5,
        |seed| scenarios::not_found_while_deletions_are_owed(seed, 200, Barrier::Wait),
    ) {
        assert!(
            s.pending_removals >= 200 * s.runs,
            "removals were not deferred: {s:?}"
        );
    }
}

/// Rule E14 with the classify barrier answering busy.
#[test]
fn not_found_while_deletions_are_owed_engine_answers_busy() {
    if let Some(s) = run(
        "not_found_while_deletions_are_owed_engine_answers_busy",
        0x5900,
        5,
        |seed| scenarios::not_found_while_deletions_are_owed(seed, 200, Barrier::Busy),
    ) {
        assert!(
            s.pending_removals >= 200 * s.runs,
            "removals were not deferred: {s:?}"
        );
    }
}
