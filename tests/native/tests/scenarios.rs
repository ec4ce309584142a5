//! The threaded scenarios on the real image (see `src/scenarios.rs`).
//!
//! Each test repeats its scenario for consecutive seeds from
//! `WFPMON_NATIVE_SEED` (default per test), `WFPMON_NATIVE_REPEAT` times
//! (default per test). Without the image the tests print
//! `SKIPPED: no image at …` and pass; scripts/test.sh builds the image
//! first and refuses to run without it.

#![cfg(target_os = "linux")]

use wfpmon_native_host::engine::Barrier;
use wfpmon_native_host::{image_path, rng, scenarios};

/// `true` when the image exists; otherwise says loudly that the test is skipped.
fn image_present() -> bool {
    let path = image_path();
    if path.exists() {
        true
    } else {
        println!(
            "SKIPPED: no image at {} (run scripts/linux/build.sh)",
            path.display()
        );
        eprintln!(
            "SKIPPED: no image at {} (run scripts/linux/build.sh)",
            path.display()
        );
        false
    }
}

fn run(
    name: &str,
    default_seed: u64,
    default_reps: u32,
    scenario: impl FnMut(u64) -> Result<(), String>,
) {
    if !image_present() {
        return;
    }
    let base = rng::base_seed(default_seed);
    let reps = rng::repetitions(default_reps);
    if let Err(e) = scenarios::repeat(name, base, reps, scenario) {
        panic!("{e}");
    }
}

#[test]
fn loader_resolves_every_import_and_patches_interrupt_time() {
    if !image_present() {
        return;
    }
    let image =
        wfpmon_native_host::pe::Image::load(&image_path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!image.imports.is_empty(), "the image imports nothing?");
    assert!(
        !image.interrupt_time_sites.is_empty(),
        "no read of KUSER_SHARED_DATA.InterruptTime found (src/kernel/time.rs reads it)"
    );
    assert!(image.is_code(image.entry()));
}

#[test]
fn lifecycle() {
    run("lifecycle", 0x1000, 20, scenarios::lifecycle);
}

#[test]
fn ten_thousand_flows() {
    run("ten_thousand_flows", 0x2000, 2, |seed| {
        scenarios::many_flows(seed, 10_000)
    });
}

#[test]
fn unload_during_traffic_engine_waits() {
    run("unload_during_traffic_engine_waits", 0x3000, 40, |seed| {
        scenarios::unload_during_traffic(seed, 4, Barrier::Wait)
    });
}

#[test]
fn unload_during_traffic_engine_answers_busy() {
    run(
        "unload_during_traffic_engine_answers_busy",
        0x3800,
        20,
        |seed| scenarios::unload_during_traffic(seed, 4, Barrier::Busy),
    );
}

#[test]
fn flows_end_during_the_removal_pass() {
    run("flows_end_during_the_removal_pass", 0x4000, 30, |seed| {
        scenarios::flows_end_during_removal(seed, 2_000)
    });
}

#[test]
fn slow_deferred_deletions_are_waited_for() {
    run(
        "slow_deferred_deletions_are_waited_for",
        0x5000,
        3,
        |seed| scenarios::slow_deferred_deletions(seed, 200),
    );
}

#[test]
fn a_failure_at_every_failable_driver_entry_call() {
    if !image_present() {
        return;
    }
    let base = rng::base_seed(0x6000);
    let calls = scenarios::failable_driver_entry_calls(base).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        calls.len() >= 8,
        "DriverEntry made only these failable calls: {calls:?}"
    );
    let reps = rng::repetitions(3);
    for k in 1..=calls.len() {
        let name = format!("fault at call {k} ({})", calls[k - 1]);
        if let Err(e) = scenarios::repeat(&name, base + k as u64 * 0x100, reps, |seed| {
            scenarios::driver_entry_fault(seed, k, 2)
        }) {
            panic!("{e}");
        }
    }
}

#[test]
fn ioctls_from_another_thread_during_traffic() {
    run(
        "ioctls_from_another_thread_during_traffic",
        0x7000,
        10,
        |seed| scenarios::ioctls_during_traffic(seed, 3, 2_000),
    );
}
