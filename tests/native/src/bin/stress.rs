//! The scenarios the memcheck run executes, as a plain program (valgrind
//! runs a binary, not the test harness):
//!
//! ```text
//! wfpmon-native-stress stress             # must be clean under memcheck
//! wfpmon-native-stress use-after-delete   # memcheck must report it
//! wfpmon-native-stress fault-in-image     # dies, naming the image offset
//! wfpmon-native-stress events             # flow events, pending reads,
//!                                         # cancellation, process totals:
//!                                         # must be clean under memcheck
//! ```
//!
//! Seed: `WFPMON_NATIVE_SEED`; repetitions: `WFPMON_NATIVE_REPEAT`.

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    use wfpmon_native_host::{events, rng, scenarios};
    let which = std::env::args().nth(1).unwrap_or_default();
    let path = wfpmon_native_host::image_path();
    if !path.exists() {
        eprintln!(
            "wfpmon-native-stress: no image at {} (run scripts/linux/build.sh)",
            path.display()
        );
        return std::process::ExitCode::from(2);
    }
    let base = rng::base_seed(0x5EED_0001);
    let reps = rng::repetitions(1);
    let result = match which.as_str() {
        "stress" => {
            scenarios::repeat("stress", base, reps, scenarios::stress).map(|s| format!("{s:?}"))
        }
        "use-after-delete" => {
            scenarios::repeat("use-after-delete", base, 1, scenarios::use_after_delete)
                .map(|s| format!("{s:?}"))
        }
        "fault-in-image" => scenarios::fault_in_image(base).map(|s| format!("{s:?}")),
        "events" => events::repeat("events", base, reps, events::stress).map(|s| format!("{s:?}")),
        _ => {
            eprintln!("usage: wfpmon-native-stress stress|use-after-delete|fault-in-image|events");
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(summary) => {
            println!(
                "wfpmon-native-stress {which}: ok (seed {base:#x}, {reps} repetition(s)): {summary}"
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wfpmon-native-stress {which}: FAILED\n{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("wfpmon-native-stress runs on Linux only");
}
