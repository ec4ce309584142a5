//! `wfpmonctl top` against the real `wfpmon.sys`, in this terminal: the
//! image loaded into this process, traffic of a few programs generated on
//! threads, and the tool's own live view (`wfpmonctl::top::run`: the
//! device client, model, drawing, keys and terminal handling of the real
//! command) reading the driver through `IRP_MJ_DEVICE_CONTROL`.
//!
//! ```text
//! wfpmon-native-top [--panic-test | --fail-test] [wfpmonctl top options, e.g. --interval 0.5]
//! ```
//!
//! The programs (process id, image path as the engine supplies it):
//! `browser.exe` (3 TCP flows receiving), `backup.exe` (1 TCP flow
//! sending), `svchost.exe` (2 UDP flows, small datagrams), and `curl.exe`,
//! whose short TCP connections come every 1.5 s and end 1.2 s later.
//! After the view quits: traffic stops, the driver unloads, the run is
//! checked (no broken rule, every context deleted) and a last line says
//! so. `--panic-test`: a process without an image path appears after 2 s
//! and naming it panics inside the view — the terminal must come back
//! (the view's panic hook) before the panic is reported. The workspace
//! builds with `panic = "abort"` (so does wfpmonctl.exe): the process then
//! aborts (the shell reports exit status 134, SIGABRT). `--fail-test`:
//! after 2 s every request to the control device fails (`ERROR_NOT_READY`)
//! — the view ends with the tool's error message and exit code after the
//! terminal is restored.
//!
//! `tests/native/tests/top_tmux.rs` runs it inside tmux.

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    host::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {}

#[cfg(target_os = "linux")]
mod host {
    use std::process::ExitCode;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use wfpmon_native_host::world::{Config, FilterKind, HostFlow, World};
    use wfpmonctl::top::{ControlDevice, IoctlError, NoNames};

    /// The process id whose naming panics in `--panic-test`.
    const PANIC_PID: u64 = 6666;

    /// The control device as `DeviceIoControl` sees it (as in
    /// `tests/wfpmonctl_flows.rs`); from `fail_from` on, every request
    /// fails with `ERROR_NOT_READY`.
    struct Device<'w> {
        world: &'w World,
        fail_from: Option<Instant>,
    }

    impl ControlDevice for Device<'_> {
        fn ioctl(
            &mut self,
            code: u32,
            input: &[u8],
            output: &mut [u8],
        ) -> Result<usize, IoctlError> {
            if self.fail_from.is_some_and(|t| Instant::now() >= t) {
                return Err(IoctlError::win32(21));
            }
            let (status, out) = self.world.ioctl(code, input, output.len());
            if status < 0 {
                return Err(IoctlError::win32(win32_error(status)));
            }
            output[..out.len()].copy_from_slice(&out);
            Ok(out.len())
        }
    }

    /// `RtlNtStatusToDosError` for the statuses the control device answers.
    const fn win32_error(status: i32) -> u32 {
        match status.cast_unsigned() {
            0xC000_0010 => 1,    // STATUS_INVALID_DEVICE_REQUEST
            0xC000_000D => 87,   // STATUS_INVALID_PARAMETER
            0xC000_0023 => 122,  // STATUS_BUFFER_TOO_SMALL
            0xC000_0059 => 1306, // STATUS_REVISION_MISMATCH
            0xC000_0095 => 534,  // STATUS_INTEGER_OVERFLOW
            0xC000_0206 => 1784, // STATUS_INVALID_BUFFER_SIZE
            0x8000_0005 => 234,  // STATUS_BUFFER_OVERFLOW: ERROR_MORE_DATA
            0x8000_0011 => 170,  // STATUS_DEVICE_BUSY: ERROR_BUSY
            0xC000_0120 => 995,  // STATUS_CANCELLED: ERROR_OPERATION_ABORTED
            _ => 317,
        }
    }

    fn path(image: &str) -> Arc<[u16]> {
        image.encode_utf16().collect()
    }

    /// A flow of `pid` at `path` (None: the engine supplies no path),
    /// established by the driver.
    fn open(w: &World, tcp: bool, n: u64, pid: u64, path: Option<&Arc<[u16]>>) -> HostFlow {
        let f = w.open_flow_of(false, tcp, false, n, Some(pid), path.cloned());
        let _ = w.establish(&f, FilterKind::Inspection);
        f
    }

    /// The programs' traffic until `stop`.
    fn traffic(w: &World, stop: &AtomicBool, panic_test: bool) {
        let browser = path(r"\device\harddiskvolume3\program files\browser\browser.exe");
        let backup = path(r"\device\harddiskvolume3\tools\backup.exe");
        let svchost = path(r"\device\harddiskvolume3\windows\system32\svchost.exe");
        let curl = path(r"\device\harddiskvolume3\windows\system32\curl.exe");
        let mut n = 0;
        let mut next = |w: &World, tcp, pid, p: Option<&Arc<[u16]>>| {
            n += 1;
            open(w, tcp, n, pid, p)
        };
        let browsing: Vec<HostFlow> = (0..3)
            .map(|_| next(w, true, 1200, Some(&browser)))
            .collect();
        let sending = next(w, true, 3300, Some(&backup));
        let dns: Vec<HostFlow> = (0..2)
            .map(|_| next(w, false, 880, Some(&svchost)))
            .collect();
        let mut short: Vec<(Instant, HostFlow)> = Vec::new();
        let mut odd = None;
        let start = Instant::now();
        let mut last_curl: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            for (i, f) in browsing.iter().enumerate() {
                let _ = w.stream(f, 16_384 * (i + 1), false, FilterKind::Inspection);
                let _ = w.stream(f, 200, true, FilterKind::Inspection);
            }
            let _ = w.stream(&sending, 65_536, true, FilterKind::Inspection);
            let _ = w.stream(&sending, 60, false, FilterKind::Inspection);
            for f in &dns {
                let _ = w.datagrams(f, &[60], false, FilterKind::Inspection);
                let _ = w.datagrams(f, &[120], true, FilterKind::Inspection);
            }
            if last_curl.is_none_or(|t| t.elapsed() >= Duration::from_millis(1500)) {
                let now = Instant::now();
                last_curl = Some(now);
                short.push((now, next(w, true, 5000, Some(&curl))));
            }
            for (_, f) in &short {
                let _ = w.stream(f, 4096, false, FilterKind::Inspection);
            }
            short.retain(|(at, f)| {
                let keep = at.elapsed() < Duration::from_millis(1200);
                if !keep {
                    w.end_flow(f);
                }
                keep
            });
            if panic_test && odd.is_none() && start.elapsed() >= Duration::from_secs(2) {
                odd = Some(next(w, true, PANIC_PID, None));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for (_, f) in &short {
            w.end_flow(f);
        }
    }

    /// Sets `stop` when dropped (also while a panic unwinds).
    struct StopOnDrop<'a>(&'a AtomicBool);

    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    pub fn main() -> ExitCode {
        let mut args: Vec<String> = std::env::args().skip(1).collect();
        let panic_test = args.iter().any(|a| a == "--panic-test");
        let fail_test = args.iter().any(|a| a == "--fail-test");
        args.retain(|a| a != "--panic-test" && a != "--fail-test");
        let image = wfpmon_native_host::image_path();
        if !image.exists() {
            eprintln!(
                "wfpmon-native-top: no image at {} (run scripts/linux/build.sh)",
                image.display()
            );
            return ExitCode::from(2);
        }
        let config = Config {
            etw_session: None,
            ..Config::new(0x70_9000)
        };
        let world = match World::create(config) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("wfpmon-native-top: {e}");
                return ExitCode::from(2);
            }
        };
        if world.driver_entry() != 0 {
            eprintln!("wfpmon-native-top: DriverEntry failed");
            return ExitCode::from(2);
        }
        let stop = AtomicBool::new(false);
        let w: &World = &world;
        let outcome = std::thread::scope(|s| {
            s.spawn(|| traffic(w, &stop, panic_test));
            let _stop = StopOnDrop(&stop);
            let words: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut device = Device {
                world: w,
                fail_from: fail_test.then(|| Instant::now() + Duration::from_secs(2)),
            };
            wfpmonctl::top::run(
                &words,
                &mut device,
                |pid| {
                    assert!(
                        !(panic_test && pid == PANIC_PID),
                        "--panic-test: naming process {pid} panics inside the view"
                    );
                    None
                },
                &NoNames,
            )
        });
        world.unload();
        let checked = world.finish();
        drop(world);
        let code = match outcome {
            Ok(()) => 0,
            Err((code, message)) => {
                eprintln!("wfpmonctl: error: {message}");
                code
            }
        };
        match checked {
            Ok(summary) => println!(
                "wfpmon-native-top: driver unloaded, run checked: no rule broken, every context deleted ({} contexts)",
                summary.contexts
            ),
            Err(report) => {
                eprintln!("wfpmon-native-top: the run broke rules:\n{report}");
                return ExitCode::from(3);
            }
        }
        ExitCode::from(code)
    }
}
