//! Native benchmarks of the real wfpmon.sys (a command, not a test):
//!
//! ```text
//! cargo run -p wfpmon-native-host --release --bin wfpmon-native-bench
//! cargo make native-bench
//! ```
//!
//! Every figure is printed beside a baseline measured in the same run
//! through the same host path without the driver's work, so that a noisy
//! machine still yields ratios: an empty classifyFn for the per-packet
//! rows, and for flow set-up and unload the *stand-in*
//! (`wfpmon_native_host::standin`), which makes the driver's kernel and
//! engine calls per flow through the same models at the same flow count —
//! what the host's own tables and models cost there. Flow set-up and unload
//! are timed in CPU time of the measuring thread (time slices other
//! processes get do not count) and also split by time accounting
//! (`kernel::time_split`: the time stamp counter at every entry into and
//! return from the image and the models): the *driver's own code* is the
//! time spent in the image between its calls to the models, minus the same
//! for the stand-in. The best of a few trials (five) is kept, for each
//! quantity separately; for the two-thread figures, the median trial.
//! `WFPMON_NATIVE_BENCH_SCALE` (default 1) multiplies the iteration counts;
//! `WFPMON_NATIVE_BENCH_SETUP_FLOWS`, `_UNLOAD_FLOWS` and `_LIST_FLOWS`
//! (comma-separated flow counts) choose the sizes.

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

    use wfpmon_core::catalog::{AddressFamily, data_callout_for};
    use wfpmon_core::unload::unregistration_order;
    use wfpmon_native_host::kernel::{DISPATCH_LEVEL, TimeSplit, set_time_accounting, time_split};
    use wfpmon_native_host::standin;
    use wfpmon_native_host::world::{Config, FilterKind, HostFlow, Target, World, WorldGuard};

    const TRIALS: usize = 5;
    /// Flow set-up trials are short (10 000 flows each): more of them.
    const SETUP_TRIALS: usize = 9;

    fn scale() -> u64 {
        std::env::var("WFPMON_NATIVE_BENCH_SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1)
    }

    /// A booted driver, the host's tables sized for `capacity` flows.
    fn boot(capacity: u64) -> WorldGuard {
        // No ETW session: events are not written, as on a machine where
        // nobody traces.
        let config = Config {
            etw_session: None,
            capacity: usize::try_from(capacity).unwrap_or(0),
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

    /// What flow `i` of an unload benchmark is: (IPv6, TCP). All IPv4 TCP
    /// (one data callout holds every context), or with
    /// `WFPMON_NATIVE_BENCH_MIXED=1` spread over the four data callouts.
    fn unload_flow_kind(i: u64) -> (bool, bool) {
        if std::env::var_os("WFPMON_NATIVE_BENCH_MIXED").is_some_and(|v| v == "1") {
            (i % 2 == 1, (i / 2).is_multiple_of(2))
        } else {
            (false, true)
        }
    }

    /// The flows of an unload benchmark ([`unload_flow_kind`]), established
    /// through `target` at the flow-established callout of their family.
    fn unload_flows(w: &World, n: u64, target: Target) -> Vec<HostFlow> {
        let established =
            [w.callout(4), w.callout(5)].map(|c| c.expect("flow-established callout"));
        (0..n)
            .map(|i| {
                let (v6, tcp) = unload_flow_kind(i);
                let f = w.open_flow(v6, tcp, false, i);
                w.establish_with(
                    &established[usize::from(v6)],
                    &f,
                    FilterKind::Inspection,
                    target,
                )
                .expect("flow-established classify");
                f
            })
            .collect()
    }

    /// The order of the driver's removal passes: one per data callout, in
    /// unregistration order, each in listing order (bucket by bucket,
    /// newest first), read from a listing pass of `w`.
    fn removal_order(w: &World) -> Vec<u64> {
        let (entries, _, _) = w.list_all_flows(256).unwrap_or_else(|e| panic!("{e}"));
        let callout_of = |e: &wfpmon_core::protocol::FlowEntry| {
            AddressFamily::from_af(e.address_family).map(|af| data_callout_for(af, e.ip_protocol))
        };
        unregistration_order()
            .flat_map(|c| {
                entries
                    .iter()
                    .filter(move |e| callout_of(e) == Some(c))
                    .map(|e| e.flow_id)
            })
            .collect()
    }

    pub struct Row {
        what: String,
        value: f64,
        baseline: f64,
        unit: &'static str,
        note: &'static str,
        /// The driver's own code, by time accounting: the CPU time spent
        /// in code called as the driver, less the models it called, minus
        /// the same for the stand-in (same unit), where measured.
        own: Option<f64>,
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
            own: None,
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
        let w = boot(0);
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
        let w = boot(0);
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
    /// association) with `live` flows already tracked, beside the stand-in
    /// making the same kernel and engine calls ([`standin`]) and an empty
    /// classifyFn, all through the same engine path with the same `live`
    /// driver flows in the host's tables. Trials (nine) alternate between
    /// the three; the best of each is kept.
    fn flow_established(rows: &mut Vec<Row>, live: u64) {
        let n = 10_000 * scale();
        let w = boot(live + n);
        let _live = established(&w, live, false);
        let stand_in = standin::install(&w);
        let callout = w.callout(4).expect("flow-established callout");
        let trial = |target: Target| {
            let flows: Vec<HostFlow> = (0..n).map(|i| w.open_flow(false, true, false, i)).collect();
            let m = Measure::start();
            for f in &flows {
                w.establish_with(&callout, f, FilterKind::Inspection, target);
            }
            let m = m.stop();
            for f in &flows {
                w.end_flow(f);
            }
            m
        };
        let targets = [Target::Empty, Target::StandIn, Target::Driver];
        let mut best = [Best::default(); 3];
        for _ in 0..SETUP_TRIALS {
            for (b, target) in best.iter_mut().zip(targets) {
                b.add(trial(target));
            }
        }
        let [empty, model, driver] = best;
        let per_flow = |d: Duration| ns_per(d, n);
        eprintln!(
            "    (empty classifyFn through the same engine path: {:.1} ns per flow; code called as the driver: driver {:.1} ns, stand-in {:.1} ns per flow; interruptions up to {:.1} ms per trial)",
            per_flow(empty.cpu),
            per_flow(driver.driver_side),
            per_flow(model.driver_side),
            driver.interrupted.max(model.interrupted).as_secs_f64() * 1e3,
        );
        row(
            rows,
            format!("flow established, {live} live flows"),
            per_flow(driver.cpu),
            per_flow(model.cpu),
            "ns",
            "per flow; baseline: the stand-in's kernel and engine calls",
        );
        if let Some(r) = rows.last_mut() {
            r.own = Some(per_flow(driver.driver_side) - per_flow(model.driver_side));
        }
        stand_in
            .uninstall(&w)
            .unwrap_or_else(|n| panic!("{n} stand-in contexts left"));
        w.unload();
        finish(&w);
    }

    /// One timed section: the thread's CPU time, and how its time split
    /// between host, code called as the driver, and models.
    #[derive(Clone, Copy)]
    struct Measure {
        cpu: Duration,
        split: TimeSplit,
    }

    impl Measure {
        fn start() -> Self {
            set_time_accounting(true);
            Self {
                split: time_split(),
                cpu: thread_cpu_time(),
            }
        }

        fn stop(self) -> Self {
            let cpu = thread_cpu_time().saturating_sub(self.cpu);
            let split = time_split().since(self.split);
            set_time_accounting(false);
            Self { cpu, split }
        }

        /// Time spent in code called as the driver (interruptions apart).
        fn driver_side(self) -> Duration {
            Duration::from_secs_f64(self.split.driver as f64 * ns_per_tick() / 1e9)
        }

        /// Time stamp counter time counted as interruptions.
        fn interrupted(self) -> Duration {
            Duration::from_secs_f64(self.split.interrupted as f64 * ns_per_tick() / 1e9)
        }
    }

    /// The best (least) of several trials' CPU time and driver-side time,
    /// each taken separately.
    #[derive(Clone, Copy)]
    struct Best {
        cpu: Duration,
        driver_side: Duration,
        /// The most any trial had counted as interruptions.
        interrupted: Duration,
    }

    impl Default for Best {
        fn default() -> Self {
            Self {
                cpu: Duration::MAX,
                driver_side: Duration::MAX,
                interrupted: Duration::ZERO,
            }
        }
    }

    impl Best {
        fn add(&mut self, m: Measure) {
            self.cpu = self.cpu.min(m.cpu);
            self.driver_side = self.driver_side.min(m.driver_side());
            self.interrupted = self.interrupted.max(m.interrupted());
        }
    }

    /// Nanoseconds per time stamp counter tick, measured once against the
    /// monotonic clock over 200 ms.
    fn ns_per_tick() -> f64 {
        static RATE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
        *RATE.get_or_init(|| {
            let total = |s: TimeSplit| s.host + s.driver + s.models + s.interrupted;
            set_time_accounting(true);
            let (s0, t0) = (time_split(), Instant::now());
            std::thread::sleep(Duration::from_millis(200));
            let (s1, t1) = (time_split(), Instant::now());
            set_time_accounting(false);
            (t1 - t0).as_secs_f64() * 1e9 / total(s1.since(s0)).max(1) as f64
        })
    }

    /// `DriverUnload` with `live` flows (the removal passes), beside the
    /// stand-in removing as many flows in the same order through the same
    /// engine, pool and lock models (a world of its own with the same flow
    /// handles; the order, pass by pass, is read from a listing pass of the
    /// driver's first world, untimed). Five trials of each; the best of
    /// each quantity is kept.
    fn unload(rows: &mut Vec<Row>, live: u64) {
        let mut order: Vec<u64> = Vec::new();
        let mut time_driver = |n: u64| {
            let w = boot(n);
            let _flows = unload_flows(&w, n, Target::Driver);
            if order.is_empty() && n > 0 {
                order = removal_order(&w);
            }
            let m = Measure::start();
            w.unload();
            let m = m.stop();
            finish(&w);
            m
        };
        let mut driver = Best::default();
        let mut model = Best::default();
        let mut empty = Best::default();
        for _ in 0..TRIALS {
            driver.add(time_driver(live));
            empty.add(time_driver(0));
        }
        for _ in 0..TRIALS {
            model.add(time_stand_in(live, &order));
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        eprintln!(
            "    (DriverUnload with no flows: {:.1} us; code called as the driver: driver {:.1} us, stand-in {:.1} us; interruptions up to {:.1} ms per trial)",
            us(empty.cpu),
            us(driver.driver_side),
            us(model.driver_side),
            driver.interrupted.max(model.interrupted).as_secs_f64() * 1e3,
        );
        let mixed = if unload_flow_kind(1).0 {
            " (four data callouts)"
        } else {
            ""
        };
        row(
            rows,
            format!("DriverUnload, {live} live flows{mixed}"),
            us(driver.cpu),
            us(model.cpu),
            "us",
            "baseline: the stand-in removing as many flows, same order",
        );
        if let Some(r) = rows.last_mut() {
            r.own = Some(us(driver.driver_side) - us(model.driver_side));
        }
    }

    /// The stand-in's removal of `live` flows in `order` (their handles).
    fn time_stand_in(live: u64, order: &[u64]) -> Measure {
        let w = boot(live);
        let stand_in = standin::install(&w);
        let flows = unload_flows(&w, live, Target::StandIn);
        let m = Measure::start();
        let removed = stand_in.remove_all(&w, order);
        let m = m.stop();
        assert_eq!(
            removed as u64, live,
            "the stand-in removes every flow (same handles as the driver's world)"
        );
        stand_in
            .uninstall(&w)
            .unwrap_or_else(|n| panic!("{n} stand-in contexts left"));
        drop(flows);
        w.unload();
        finish(&w);
        m
    }

    /// The longest time the registry lock is held while the flows IOCTL
    /// lists `live` flows, beside the longest hold during the last 1000
    /// flow-established classifies that built them (one insert each).
    fn list_lock(rows: &mut Vec<Row>, live: u64) {
        let w = boot(0);
        // The walk-free statistics query, before any flow exists: the
        // baseline of the same query at `live` flows below.
        let stats_empty = stats_query_time(&w);
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
        let stats_full = stats_query_time(&w);
        row(
            rows,
            format!("QUERY_STATS (walk-free) with {total} flows"),
            stats_full.as_secs_f64() * 1e6,
            stats_empty.as_secs_f64() * 1e6,
            "us",
            "baseline: the same query with no flow; target <= 50 us",
        );
        w.kernel.lock_max_ns.store(0, Ordering::SeqCst);
        start_sampling(&w);
        let t = Instant::now();
        let stats = w.query_stats_live().unwrap_or_else(|e| panic!("{e}"));
        let walk = t.elapsed();
        let stats_holds = stop_sampling(&w);
        assert_eq!(stats.flows_active, total, "QUERY_STATS counts every flow");
        eprintln!(
            "    (QUERY_STATS with STATS_LIVE_TRAFFIC, the explicit walk: {:.1} ms)",
            walk.as_secs_f64() * 1e3
        );
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

    /// The time of one walk-free `QUERY_STATS` (the IOCTL round trip
    /// through the host's I/O model included): the best of the trials'
    /// means over 1000 queries. Checks that it took no lock.
    fn stats_query_time(w: &World) -> Duration {
        const QUERIES: u32 = 1000;
        let locks = w.kernel.lock_acquisitions.load(Ordering::SeqCst);
        let d = best(|| {
            let t = Instant::now();
            for _ in 0..QUERIES {
                let stats = w.query_stats().unwrap_or_else(|e| panic!("{e}"));
                std::hint::black_box(stats);
            }
            t.elapsed() / QUERIES
        });
        assert_eq!(
            w.kernel.lock_acquisitions.load(Ordering::SeqCst),
            locks,
            "the walk-free statistics query takes no lock"
        );
        d
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
        println!(
            "| measure | wfpmon | baseline (same path, no driver work) | difference | ratio | driver's own code | unit |"
        );
        println!("|---|---:|---:|---:|---:|---:|---|");
        for r in &rows {
            let ratio = if r.baseline > 0.0 {
                format!("{:.1}x", r.value / r.baseline)
            } else {
                "-".into()
            };
            let own = r.own.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
            println!(
                "| {} | {:.1} | {:.1} | {:.1} | {ratio} | {own} | {} ({}) |",
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
    /// The flow set-up and unload goals are given three ways: the whole
    /// host path (driver plus the host's models), the host-model baseline
    /// alone (the stand-in), and the driver's share (the difference).
    fn goals(rows: &[Row]) {
        let find = |needle: &str| {
            rows.iter()
                .find(|r| r.what.contains(needle))
                .map(|r| r.value)
        };
        let pair = |a: &str, b: &str| Some((find(a)?, find(b)?));
        println!();
        println!(
            "| goal | measured (driver + host models) | host-model baseline | driver's share (difference) | driver's own code (time accounting) | target |"
        );
        println!("|---|---:|---:|---:|---:|---|");
        if let Some((one, same)) = pair("1 thread", "same flow") {
            println!(
                "| 2 threads on one flow vs 1 thread, ns/packet | {:.2}x | - | - | - | <= 1.5x |",
                same / one
            );
        }
        let ratios = |first: &Row, last: &Row| {
            (
                last.value / first.value,
                last.baseline / first.baseline,
                (last.value - last.baseline) / (first.value - first.baseline),
            )
        };
        // "2.00x (200 / 100 ns)", or "-" when not measured.
        let own = |first: &Row, last: &Row, scale: f64, unit: &str| match (first.own, last.own) {
            (Some(a), Some(b)) if a > 0.0 => {
                format!("{:.2}x ({:.1} / {:.1} {unit})", b / a, b / scale, a / scale)
            }
            _ => "-".into(),
        };
        let setup: Vec<&Row> = rows
            .iter()
            .filter(|r| r.what.starts_with("flow established"))
            .collect();
        if let [first, .., last] = setup.as_slice() {
            let (whole, model, share) = ratios(first, last);
            println!(
                "| flow set-up, {} vs {} | {whole:.2}x ({:.0} / {:.0} ns) | {model:.2}x ({:.0} / {:.0} ns) | {share:.2}x ({:.0} / {:.0} ns) | {} | <= 1.2x |",
                last.what,
                first.what,
                last.value,
                first.value,
                last.baseline,
                first.baseline,
                last.value - last.baseline,
                first.value - first.baseline,
                own(first, last, 1.0, "ns"),
            );
        }
        let unload: Vec<&Row> = rows
            .iter()
            .filter(|r| r.what.starts_with("DriverUnload"))
            .collect();
        if let [first, .., last] = unload.as_slice() {
            let (whole, model, share) = ratios(first, last);
            let ms = |us: f64| us / 1e3;
            // Linear, with the goal's 5% allowance: 10.5x for 10x the flows.
            let flows = |r: &Row| {
                r.what
                    .split_whitespace()
                    .find_map(|w| w.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            let more = flows(last) / flows(first);
            let target = format!("<= {:.1}x for {more:.0}x the flows", 1.05 * more);
            println!(
                "| {} vs {} | {whole:.2}x ({:.0} / {:.1} ms) | {model:.2}x ({:.0} / {:.1} ms) | {share:.2}x ({:.0} / {:.1} ms) | {} | {target} |",
                last.what,
                first.what,
                ms(last.value),
                ms(first.value),
                ms(last.baseline),
                ms(first.baseline),
                ms(last.value - last.baseline),
                ms(first.value - first.baseline),
                own(first, last, 1e3, "ms"),
            );
        }
        for r in rows.iter().filter(|r| r.what.contains("lock hold")) {
            println!("| {} | {:.1} us | - | - | - | <= 25 us |", r.what, r.value);
        }
        for r in rows.iter().filter(|r| r.what.starts_with("QUERY_STATS")) {
            println!(
                "| {} | {:.1} us | {:.1} us (no flow) | - | - | <= 50 us |",
                r.what, r.value, r.baseline
            );
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
