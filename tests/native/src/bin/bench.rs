//! Native benchmarks of the real wfpmon.sys (a command, not a test):
//!
//! ```text
//! cargo run -p wfpmon-native-host --release --bin wfpmon-native-bench
//! cargo make native-bench
//! ```
//!
//! Every figure is printed beside a baseline measured in the same run
//! through the same host path with an empty function (or an empty driver
//! state), so that a noisy machine still yields ratios. The best of a few
//! trials (five) is kept; for the two-thread figures, the median trial. `WFPMON_NATIVE_BENCH_SCALE` (default 1) multiplies the
//! iteration counts.

// The world (and its guard) lives for a whole measurement on purpose;
// figures are printed as floating point.
#![allow(
    clippy::significant_drop_tightening,
    clippy::cast_precision_loss,
    clippy::many_single_char_names
)]

#[cfg(target_os = "linux")]
mod bench {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use wfpmon_native_host::kernel::DISPATCH_LEVEL;
    use wfpmon_native_host::world::{Config, FilterKind, HostFlow, Target, World, WorldGuard};

    const TRIALS: usize = 5;

    fn scale() -> u64 {
        std::env::var("WFPMON_NATIVE_BENCH_SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1)
    }

    fn boot() -> WorldGuard {
        // No ETW session: events are not written, as on a machine where
        // nobody traces.
        let config = Config {
            etw_session: None,
            ..Config::new(0xBE7C)
        };
        let w = World::create(config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.driver_entry(), 0, "DriverEntry failed");
        w.account.store(false, Ordering::Relaxed);
        w
    }

    fn finish(w: &World) {
        if let Err(e) = w.finish() {
            eprintln!("wfpmon-native-bench: the run broke rules:\n{e}");
            std::process::exit(1);
        }
    }

    fn best<F: FnMut() -> Duration>(mut f: F) -> Duration {
        (0..TRIALS).map(|_| f()).min().unwrap_or_default()
    }

    /// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`):
    /// the two-thread figures use it, so that time slices of a busy VM do
    /// not count while cache-line transfers between cores do.
    fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to fill; the clock id is a constant.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    }

    fn ns_per(d: Duration, n: u64) -> f64 {
        d.as_secs_f64() * 1e9 / n as f64
    }

    fn established(w: &World, n: u64, v6: bool) -> Vec<HostFlow> {
        (0..n)
            .map(|i| {
                let f = w.open_flow(v6, true, false, i);
                w.establish(&f, FilterKind::Inspection)
                    .expect("flow-established classify");
                f
            })
            .collect()
    }

    pub struct Row {
        what: String,
        value: f64,
        baseline: f64,
        unit: &'static str,
        note: &'static str,
    }

    fn row(
        rows: &mut Vec<Row>,
        what: impl Into<String>,
        value: f64,
        baseline: f64,
        unit: &'static str,
        note: &'static str,
    ) {
        let r = Row {
            what: what.into(),
            value,
            baseline,
            unit,
            note,
        };
        eprintln!(
            "  {:<58} {:>10.1} {:<3} (baseline {:.1})",
            r.what, r.value, r.unit, r.baseline
        );
        rows.push(r);
    }

    /// Stream classify on one thread: the driver's classifyFn in a tight
    /// loop (arguments built once), beside an empty classifyFn.
    fn stream_one_thread(rows: &mut Vec<Row>) {
        let w = boot();
        let f = established(&w, 1, false).remove(0);
        let callout = w.callout(f.data_callout()).expect("stream callout");
        let n = 5_000_000 * scale();
        let run = |target: Target| {
            best(|| {
                w.stream_loop(&callout, &f, n, true, target)
                    .expect("classified")
            })
        };
        let base = run(Target::Empty);
        let driver = run(Target::Driver);
        row(
            rows,
            "stream classify, 1 thread",
            ns_per(driver, n),
            ns_per(base, n),
            "ns",
            "per packet",
        );
        w.unload();
        finish(&w);
    }

    /// Two threads classifying in tight loops: on two flows (IPv4 and IPv6
    /// callouts), or on the same flow (one sending, one receiving).
    fn stream_two_threads(rows: &mut Vec<Row>, same_flow: bool) {
        let w = boot();
        let a = established(&w, 1, false).remove(0);
        // WFPMON_NATIVE_BENCH_SPACER=n establishes n flows between the two
        // (to see whether adjacent pool blocks share a cache line).
        let spacer: u64 = std::env::var("WFPMON_NATIVE_BENCH_SPACER")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let _spacers = established(&w, spacer, false);
        let b = if same_flow {
            a.clone()
        } else {
            established(&w, 1, true).remove(0)
        };
        let n = 2_000_000 * scale();
        // One trial: the larger CPU time of the two threads, and how much
        // of their wall-clock spans overlapped (a busy VM may run them one
        // after the other, and then no cache line moves between cores).
        let trial = |target: Target| {
            let start = std::sync::Barrier::new(2);
            let spans: Vec<(Duration, Instant, Instant)> = std::thread::scope(|s| {
                let handles: Vec<_> = [(&a, true), (&b, false)]
                    .into_iter()
                    .map(|(f, send)| {
                        let w: &World = &w;
                        let start = &start;
                        s.spawn(move || {
                            let callout = w.callout(f.data_callout()).expect("stream callout");
                            start.wait();
                            let (cpu, t0) = (thread_cpu_time(), Instant::now());
                            w.stream_loop(&callout, f, n, send, target)
                                .expect("classified");
                            let cpu = thread_cpu_time().checked_sub(cpu).unwrap_or_default();
                            (cpu, t0, Instant::now())
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            let cpu = spans.iter().map(|s| s.0).max().unwrap_or_default();
            let (first, second) = (spans[0], spans[1]);
            let union = first.2.max(second.2) - first.1.min(second.1);
            let overlap = first
                .2
                .min(second.2)
                .saturating_duration_since(first.1.max(second.1));
            (cpu, overlap.as_secs_f64() / union.as_secs_f64().max(1e-9))
        };
        // The median trial, not the best: the best is the one in which the
        // threads disturbed each other least, which is not what this
        // measures.
        let run = |target: Target| {
            let mut trials: Vec<(Duration, f64)> = (0..TRIALS).map(|_| trial(target)).collect();
            trials.sort_by_key(|t| t.0);
            trials[TRIALS / 2]
        };
        let (base, _) = run(Target::Empty);
        let (driver, overlap) = run(Target::Driver);
        let what = if same_flow {
            "stream classify, 2 threads, same flow (send + receive)"
        } else {
            "stream classify, 2 threads, different flows"
        };
        eprintln!(
            "    (the two driver loops overlapped {:.0}% of their span)",
            overlap * 100.0
        );
        row(
            rows,
            what,
            ns_per(driver, n),
            ns_per(base, n),
            "ns",
            "CPU time per packet per thread",
        );
        w.unload();
        finish(&w);
    }

    /// Flow-established classify (pool allocation, registry insert,
    /// association) with `live` flows already tracked.
    fn flow_established(rows: &mut Vec<Row>, live: u64) {
        let w = boot();
        let _live = established(&w, live, false);
        let n = 10_000 * scale();
        let callout = w.callout(4).expect("flow-established callout");
        let run = |target: Target| {
            best(|| {
                let flows: Vec<HostFlow> =
                    (0..n).map(|i| w.open_flow(false, true, false, i)).collect();
                let t = Instant::now();
                for f in &flows {
                    w.establish_with(&callout, f, FilterKind::Inspection, target);
                }
                let d = t.elapsed();
                for f in &flows {
                    w.end_flow(f);
                }
                d
            })
        };
        let base = run(Target::Empty);
        let driver = run(Target::Driver);
        row(
            rows,
            format!("flow established, {live} live flows"),
            ns_per(driver, n),
            ns_per(base, n),
            "ns",
            "per flow",
        );
        w.unload();
        finish(&w);
    }

    /// `DriverUnload` with `live` flows (the removal pass), beside Unload of
    /// a driver with none.
    fn unload(rows: &mut Vec<Row>, live: u64) {
        let time_unload = |n: u64| {
            best(|| {
                let w = boot();
                let _flows = established(&w, n, false);
                let t = Instant::now();
                w.unload();
                let d = t.elapsed();
                finish(&w);
                d
            })
        };
        let base = time_unload(0);
        let driver = time_unload(live);
        row(
            rows,
            format!("DriverUnload, {live} live flows"),
            driver.as_secs_f64() * 1e6,
            base.as_secs_f64() * 1e6,
            "us",
            "baseline: no flows",
        );
    }

    /// The longest time the registry lock is held while the flows IOCTL
    /// lists `live` flows, beside the longest hold during the last 1000
    /// flow-established classifies that built them (one insert each).
    fn list_lock(rows: &mut Vec<Row>, live: u64) {
        let w = boot();
        let inserts = live.min(1000);
        let _flows = established(&w, live - inserts, false);
        let extra: Vec<HostFlow> = (0..inserts)
            .map(|i| w.open_flow(false, true, false, live + i))
            .collect();
        w.kernel.lock_max_ns.store(0, Ordering::SeqCst);
        for f in &extra {
            w.establish(f, FilterKind::Inspection);
        }
        let base = w.kernel.lock_max_ns.load(Ordering::SeqCst);
        let total = live;
        w.kernel.lock_max_ns.store(0, Ordering::SeqCst);
        start_sampling(&w);
        let t = Instant::now();
        let (entries, _, calls) = w.list_all_flows(256).unwrap_or_else(|e| panic!("{e}"));
        let ioctl = t.elapsed();
        let list_holds = stop_sampling(&w);
        assert!(
            entries.len() as u64 == total,
            "LIST_FLOWS returned {} of {total}",
            entries.len()
        );
        let held = w.kernel.lock_max_ns.load(Ordering::SeqCst);
        row(
            rows,
            format!("longest registry lock hold, LIST_FLOWS of {total} flows"),
            held as f64 / 1e3,
            base as f64 / 1e3,
            "us",
            "baseline: longest hold over the last 1000 inserts",
        );
        row(
            rows,
            format!("99th percentile lock hold, LIST_FLOWS of {total} flows"),
            percentile(&list_holds, 990) as f64 / 1e3,
            base as f64 / 1e3,
            "us",
            "the max includes host preemption inside a hold",
        );
        eprintln!(
            "    (whole listing: {calls} IOCTLs, {} lock holds, {:.1} ms; holds p50 {:.2} us, p99 {:.2} us, p99.9 {:.2} us)",
            list_holds.len(),
            ioctl.as_secs_f64() * 1e3,
            percentile(&list_holds, 500) as f64 / 1e3,
            percentile(&list_holds, 990) as f64 / 1e3,
            percentile(&list_holds, 999) as f64 / 1e3,
        );
        w.kernel.lock_max_ns.store(0, Ordering::SeqCst);
        start_sampling(&w);
        let stats = w.query_stats().unwrap_or_else(|e| panic!("{e}"));
        let stats_holds = stop_sampling(&w);
        assert_eq!(stats.flows_active, total, "QUERY_STATS counts every flow");
        eprintln!(
            "    (statistics: {} lock holds; p50 {:.2} us, p99 {:.2} us, p99.9 {:.2} us)",
            stats_holds.len(),
            percentile(&stats_holds, 500) as f64 / 1e3,
            percentile(&stats_holds, 990) as f64 / 1e3,
            percentile(&stats_holds, 999) as f64 / 1e3,
        );
        let held = w.kernel.lock_max_ns.load(Ordering::SeqCst);
        row(
            rows,
            format!("longest registry lock hold, QUERY_STATS with {total} flows"),
            held as f64 / 1e3,
            base as f64 / 1e3,
            "us",
            "baseline: longest hold over the last 1000 inserts",
        );
        row(
            rows,
            format!("99th percentile lock hold, QUERY_STATS with {total} flows"),
            percentile(&stats_holds, 990) as f64 / 1e3,
            base as f64 / 1e3,
            "us",
            "the max includes host preemption inside a hold",
        );
        w.unload();
        finish(&w);
    }

    fn start_sampling(w: &World) {
        *w.kernel
            .lock_holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Vec::new());
    }

    fn stop_sampling(w: &World) -> Vec<u64> {
        w.kernel
            .lock_holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default()
    }

    /// The `per_mille`-th ‰ of `samples` (0 when empty).
    fn percentile(samples: &[u64], per_mille: usize) -> u64 {
        let mut v = samples.to_vec();
        v.sort_unstable();
        v.get((v.len() * per_mille / 1000).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    }

    /// Flow counts from `var` (comma-separated) or `default`.
    fn sizes(var: &str, default: &[u64]) -> Vec<u64> {
        std::env::var(var).ok().map_or_else(
            || default.to_vec(),
            |v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        )
    }

    pub fn main() {
        let path = wfpmon_native_host::image_path();
        if !path.exists() {
            eprintln!(
                "wfpmon-native-bench: no image at {} (run scripts/linux/build.sh)",
                path.display()
            );
            std::process::exit(2);
        }
        let _ = DISPATCH_LEVEL;
        eprintln!(
            "wfpmon-native-bench: {} ({} cores)",
            path.display(),
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        );
        let mut rows = Vec::new();
        stream_one_thread(&mut rows);
        stream_two_threads(&mut rows, false);
        stream_two_threads(&mut rows, true);
        for n in sizes("WFPMON_NATIVE_BENCH_SETUP_FLOWS", &[10, 1_000_000]) {
            flow_established(&mut rows, n);
        }
        for n in sizes("WFPMON_NATIVE_BENCH_UNLOAD_FLOWS", &[100_000, 1_000_000]) {
            unload(&mut rows, n);
        }
        for n in sizes("WFPMON_NATIVE_BENCH_LIST_FLOWS", &[100_000, 1_000_000]) {
            list_lock(&mut rows, n);
        }
        println!();
        println!("| measure | wfpmon | baseline (same path, empty) | difference | ratio | unit |");
        println!("|---|---:|---:|---:|---:|---|");
        for r in &rows {
            let ratio = if r.baseline > 0.0 {
                format!("{:.1}x", r.value / r.baseline)
            } else {
                "-".into()
            };
            println!(
                "| {} | {:.1} | {:.1} | {:.1} | {ratio} | {} ({}) |",
                r.what,
                r.value,
                r.baseline,
                r.value - r.baseline,
                r.unit,
                r.note
            );
        }
        goals(&rows);
    }

    /// The scale goals as ratios of this run's rows (a report, not a test).
    fn goals(rows: &[Row]) {
        let find = |needle: &str| {
            rows.iter()
                .find(|r| r.what.contains(needle))
                .map(|r| r.value)
        };
        let pair = |a: &str, b: &str| Some((find(a)?, find(b)?));
        println!();
        println!("| goal | measured | target |");
        println!("|---|---:|---|");
        if let Some((one, same)) = pair("1 thread", "same flow") {
            println!(
                "| 2 threads on one flow vs 1 thread, ns/packet | {:.2}x | <= 1.5x |",
                same / one
            );
        }
        let setup: Vec<(&str, f64)> = rows
            .iter()
            .filter(|r| r.what.starts_with("flow established"))
            .map(|r| (r.what.as_str(), r.value))
            .collect();
        if let [first, .., last] = setup.as_slice() {
            println!(
                "| flow set-up, {} vs {} | {:.2}x | <= 1.2x |",
                last.0,
                first.0,
                last.1 / first.1
            );
        }
        let unload: Vec<&Row> = rows
            .iter()
            .filter(|r| r.what.starts_with("DriverUnload"))
            .collect();
        if let [first, .., last] = unload.as_slice() {
            println!(
                "| {} vs {} | {:.2}x | <= 10.5x for 10x the flows |",
                last.what,
                first.what,
                last.value / first.value
            );
        }
        for r in rows.iter().filter(|r| r.what.contains("lock hold")) {
            println!("| {} | {:.1} us | <= 25 us |", r.what, r.value);
        }
    }
}

#[cfg(target_os = "linux")]
fn main() {
    bench::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("wfpmon-native-bench runs on Linux only");
}
