//! Processes as the driver records them: names and paths by process key,
//! the `procs` view (schema `wfpmon.procs/2`, documented in the README), and
//! the driver's clock on the wall clock.
//!
//! The driver interns processes by id and image path at flow establishment
//! (`FWPS_METADATA_FIELD_PROCESS_PATH`, the engine's device form such as
//! `\device\harddiskvolume3\windows\system32\svchost.exe`) and gives each a
//! key that names that one process for the driver's lifetime, so what is
//! learnt about a key never goes stale.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use wfpmon_core::process::{PROCESS_ID_MISSING, PROCESS_PATH_MISSING, PROCESS_PATH_TRUNCATED};
use wfpmon_core::protocol::ProcessEntry;

use crate::cli::{ProcSort, ProcsArgs};
use crate::device::ProcessList;
use crate::flows::{Totals, process_name, rates};
use crate::render::timestamp;

/// The wall-clock time of interrupt time `t`, given the driver's `now` on
/// the same clock and the wall clock `wall` read when the answer came.
///
/// The driver's times are `KeQueryInterruptTime` (100 ns units since boot;
/// the count is biased to include time spent asleep, unlike
/// `KeQueryUnbiasedInterruptTime`, and not affected by changes of the
/// system time), so `now - t` is the real time elapsed since `t`. In user
/// mode `QueryInterruptTime` reads the same count (`QueryUnbiasedInterruptTime`
/// would not, after a sleep); the response's `now` makes a local reading
/// unnecessary. The error is the time between the driver's reading and
/// `wall` (the request's way back). Never before 1970 (which no time
/// formatter takes), never after `wall`.
pub fn wall_time(t: u64, now: u64, wall: SystemTime) -> SystemTime {
    let ago = Duration::from_nanos(now.saturating_sub(t).saturating_mul(100));
    let epoch = SystemTime::UNIX_EPOCH;
    wall.checked_sub(ago).map_or(epoch, |t| t.max(epoch))
}

/// Seconds from `earlier` to `later` (interrupt times).
#[allow(clippy::cast_precision_loss)] // 100 ns ticks: 52 bits are 14 years
pub fn seconds(earlier: u64, later: u64) -> f64 {
    later.saturating_sub(earlier) as f64 / 1e7
}

/// `path` with its volume device replaced by the drive letter that
/// `QueryDosDeviceW` maps to it (`drives`: `("C:", "\Device\HarddiskVolume3")`
/// pairs), or `\device\mup\` (network files) by `\\`; unchanged otherwise.
/// Device names are compared without regard to ASCII case (the engine
/// gives them in lower case).
pub fn dos_path(path: &str, drives: &[(String, String)]) -> String {
    let after = |prefix: &str| {
        let head = path.get(..prefix.len())?;
        let rest = &path[prefix.len()..];
        (head.eq_ignore_ascii_case(prefix) && rest.starts_with('\\')).then_some(rest)
    };
    for (drive, device) in drives {
        if let Some(rest) = after(device) {
            return format!("{drive}{rest}");
        }
    }
    after(r"\device\mup").map_or_else(|| path.to_owned(), |rest| format!(r"\{rest}"))
}

/// A process as shown: image name, and its path when the engine gave one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proc {
    pub name: String,
    /// Drive-letter form where possible; a truncated path (its end only)
    /// starts with `…`.
    pub path: Option<String>,
    pub truncated: bool,
}

impl Proc {
    /// A process known by its name only.
    pub fn named(name: String) -> Self {
        Self {
            name,
            ..Self::default()
        }
    }

    /// The process of a driver entry. Without a path, the name `resolve`
    /// finds for its id (`System`, `Idle`, `?`, see [`process_name`]).
    pub fn of(
        e: &ProcessEntry,
        drives: &[(String, String)],
        resolve: &mut impl FnMut(u64) -> Option<String>,
    ) -> Self {
        let truncated = e.flags & PROCESS_PATH_TRUNCATED != 0;
        let raw = (e.flags & PROCESS_PATH_MISSING == 0 && e.path_units > 0)
            .then(|| String::from_utf16_lossy(e.path()));
        let name = match &raw {
            Some(p) => p.rsplit('\\').next().unwrap_or(p).to_owned(),
            None if e.flags & PROCESS_ID_MISSING != 0 => "?".to_owned(),
            None => process_name(u64::from(e.process_id), resolve),
        };
        let path = raw.map(|p| {
            if truncated {
                format!("…{p}")
            } else {
                dos_path(&p, drives)
            }
        });
        Self {
            name,
            path,
            truncated,
        }
    }
}

/// Processes by key, learnt from the driver's process table; `None`: a key
/// the table did not hold when asked (evicted since), not asked again.
#[derive(Debug, Default)]
pub struct Names {
    known: HashMap<u64, Option<Proc>>,
    /// `QueryDosDeviceW`'s drive letters, read once.
    pub drives: Option<Vec<(String, String)>>,
}

impl Names {
    /// Whether a key of `keys` (0: no process entry) was never asked for.
    pub fn missing(&self, keys: impl IntoIterator<Item = u64>) -> bool {
        keys.into_iter()
            .any(|k| k != 0 && !self.known.contains_key(&k))
    }

    /// Records every process of `list`, and `wanted` keys it lacks as unknown.
    pub fn learn(
        &mut self,
        list: &ProcessList,
        wanted: impl IntoIterator<Item = u64>,
        resolve: &mut impl FnMut(u64) -> Option<String>,
    ) {
        let drives = self.drives.as_deref().unwrap_or_default();
        let procs: Vec<_> = list
            .entries
            .iter()
            .map(|e| (e.key, Some(Proc::of(e, drives, resolve))))
            .collect();
        self.known.extend(procs);
        for key in wanted {
            self.known.entry(key).or_default();
        }
    }

    /// The process of `key`, if the driver's table held it.
    pub fn get(&self, key: u64) -> Option<&Proc> {
        self.known.get(&key).and_then(Option::as_ref)
    }
}

/// Traffic of `e`'s active and ended flows: bytes in, bytes out, packets
/// in, packets out.
fn traffic(e: &ProcessEntry) -> [u64; 4] {
    std::array::from_fn(|i| e.active[i].saturating_add(e.ended[i]))
}

/// Byte counters (in, out) by process key, and the driver's time, of the
/// previous snapshot, for rates.
#[derive(Clone, Debug, Default)]
pub struct Previous {
    pub now: u64,
    pub bytes: HashMap<u64, (u64, u64)>,
}

impl Previous {
    pub fn of(list: &ProcessList) -> Self {
        let bytes = list.entries.iter().map(|e| {
            let t = traffic(e);
            (e.key, (t[0], t[1]))
        });
        Self {
            now: list.header.now,
            bytes: bytes.collect(),
        }
    }
}

/// One process as shown; traffic is its active plus its ended flows'.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcRow {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub process: String,
    /// The services the process hosts, sorted.
    pub services: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub path_truncated: bool,
    pub active_flows: u32,
    pub flows_total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_in: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_out: Option<f64>,
}

impl ProcRow {
    /// The row of `e` (`proc` its name and path) at the driver's time `now`
    /// (wall clock `wall`), with rates from `previous` (a process absent
    /// from it: its bytes over its age, or the interval if that is longer).
    pub fn new(
        e: &ProcessEntry,
        proc: Proc,
        (now, wall): (u64, SystemTime),
        previous: Option<&Previous>,
    ) -> Self {
        let [bytes_in, bytes_out, packets_in, packets_out] = traffic(e);
        let (rate_in, rate_out) = previous.map_or((None, None), |p| {
            let before = p.bytes.get(&e.key).copied();
            let age = seconds(e.first_seen, now);
            rates((bytes_in, bytes_out), before, seconds(p.now, now), age)
        });
        let at = |t| timestamp(wall_time(t, now, wall));
        Self {
            key: format!("{:#018x}", e.key),
            pid: (e.flags & PROCESS_ID_MISSING == 0).then_some(e.process_id),
            process: proc.name,
            services: Vec::new(),
            path: proc.path,
            path_truncated: proc.truncated,
            active_flows: e.active_flows,
            flows_total: e.flows_total,
            bytes_in,
            bytes_out,
            packets_in,
            packets_out,
            first_seen: at(e.first_seen),
            last_seen: at(e.last_seen),
            rate_in,
            rate_out,
        }
    }

    fn rate(&self) -> f64 {
        self.rate_in.unwrap_or(0.0) + self.rate_out.unwrap_or(0.0)
    }
}

/// The `wfpmon.procs/2` document.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcsDoc {
    pub schema: &'static str,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<f64>,
    pub capacity: u32,
    pub evictions: u64,
    pub unattributed_flows: u64,
    pub listed: usize,
    pub matched: usize,
    pub totals: Totals,
    pub processes: Vec<ProcRow>,
}

impl ProcsDoc {
    /// Filters, totals, sorts and cuts `all` as `args` say.
    pub fn new(
        args: &ProcsArgs,
        timestamp: String,
        list: &ProcessList,
        all: Vec<ProcRow>,
        interval: Option<f64>,
    ) -> Self {
        let listed = all.len();
        let name = args.process.as_deref().map(str::to_lowercase);
        let mut rows: Vec<ProcRow> = all
            .into_iter()
            .filter(|r| args.pid.is_none_or(|p| r.pid.map(u64::from) == Some(p)))
            .filter(|r| {
                name.as_ref()
                    .is_none_or(|n| r.process.to_lowercase().contains(n))
            })
            .collect();
        let sum = |field: fn(&ProcRow) -> u64| rows.iter().map(field).sum();
        let rate = |field: fn(&ProcRow) -> Option<f64>| {
            interval.map(|_| rows.iter().filter_map(field).sum())
        };
        let totals = Totals {
            bytes_in: sum(|r| r.bytes_in),
            bytes_out: sum(|r| r.bytes_out),
            packets_in: sum(|r| r.packets_in),
            packets_out: sum(|r| r.packets_out),
            rate_in: rate(|r| r.rate_in),
            rate_out: rate(|r| r.rate_out),
        };
        let bytes = |r: &ProcRow| r.bytes_in + r.bytes_out;
        match args.sort {
            ProcSort::Bytes => rows.sort_by_key(|r| std::cmp::Reverse(bytes(r))),
            ProcSort::Rate => {
                rows.sort_by(|a, b| b.rate().total_cmp(&a.rate()).then(bytes(b).cmp(&bytes(a))));
            }
            ProcSort::Flows => {
                rows.sort_by_key(|r| {
                    (
                        std::cmp::Reverse(r.active_flows),
                        std::cmp::Reverse(bytes(r)),
                    )
                });
            }
            ProcSort::Pid => rows.sort_by_key(|r| r.pid),
            ProcSort::Proc => rows.sort_by_cached_key(|r| (r.process.to_lowercase(), r.pid)),
        }
        let matched = rows.len();
        rows.truncate(args.top.unwrap_or(usize::MAX));
        Self {
            schema: "wfpmon.procs/2",
            timestamp,
            interval_s: interval,
            capacity: list.header.capacity,
            evictions: list.header.evictions,
            unattributed_flows: list.header.unattributed_flows,
            listed,
            matched,
            totals,
            processes: rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sim::process;

    fn drives() -> Vec<(String, String)> {
        vec![
            ("C:".into(), r"\Device\HarddiskVolume3".into()),
            ("D:".into(), r"\Device\HarddiskVolume30".into()),
        ]
    }

    #[test]
    fn driver_times_on_the_wall_clock() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // 60 s before the driver's `now`, in 100 ns units.
        assert_eq!(
            wall_time(400_000_000, 1_000_000_000, wall),
            wall - Duration::from_mins(1)
        );
        assert_eq!(wall_time(7, 7, wall), wall);
        assert_eq!(wall_time(9, 7, wall), wall, "never after the reading");
        assert_eq!(
            wall_time(0, u64::MAX, SystemTime::UNIX_EPOCH),
            SystemTime::UNIX_EPOCH
        );
        assert!((seconds(10_000_000, 35_000_000) - 2.5).abs() < 1e-12);
        assert!(seconds(5, 4).abs() < f64::EPSILON);
    }

    #[test]
    fn device_paths_in_drive_letter_form() {
        let d = drives();
        let case = |p: &str| dos_path(p, &d);
        assert_eq!(
            case(r"\device\harddiskvolume3\windows\system32\svchost.exe"),
            r"C:\windows\system32\svchost.exe"
        );
        assert_eq!(
            case(r"\DEVICE\HARDDISKVOLUME30\x.exe"),
            r"D:\x.exe",
            "a whole component, any case"
        );
        assert_eq!(
            case(r"\device\harddiskvolume4\x.exe"),
            r"\device\harddiskvolume4\x.exe"
        );
        assert_eq!(
            case(r"\device\harddiskvolume3"),
            r"\device\harddiskvolume3",
            "no file below it"
        );
        assert_eq!(
            case(r"\device\mup\server\share\tool.exe"),
            r"\\server\share\tool.exe"
        );
        assert_eq!(case("System"), "System");
        assert_eq!(case(r"\dévice\x"), r"\dévice\x");
        assert_eq!(
            dos_path(r"\device\harddiskvolume3\a.exe", &[]),
            r"\device\harddiskvolume3\a.exe"
        );
    }

    #[test]
    fn process_names_and_paths_from_entries() {
        let mut none = |_| None;
        let p = Proc::of(&process(3), &drives(), &mut none);
        assert_eq!(
            (p.name.as_str(), p.path.as_deref(), p.truncated),
            ("app3.exe", Some(r"C:\apps\app3.exe"), false)
        );

        let mut cut = process(3);
        cut.flags = PROCESS_PATH_TRUNCATED;
        let p = Proc::of(&cut, &drives(), &mut none);
        assert_eq!(
            (p.name.as_str(), p.path.as_deref(), p.truncated),
            (
                "app3.exe",
                Some(r"…\device\harddiskvolume3\apps\app3.exe"),
                true
            ),
            "the end, unconverted"
        );

        let mut pathless = process(3);
        pathless.flags = PROCESS_PATH_MISSING;
        let p = Proc::of(&pathless, &drives(), &mut |pid| {
            Some(format!("pid{pid}.exe"))
        });
        assert_eq!((p.name.as_str(), p.path), ("pid103.exe", None));
        pathless.process_id = 4;
        assert_eq!(Proc::of(&pathless, &drives(), &mut none).name, "System");
        pathless.flags |= PROCESS_ID_MISSING;
        pathless.process_id = 0;
        assert_eq!(
            Proc::of(&pathless, &drives(), &mut none).name,
            "?",
            "no id: nothing to resolve"
        );
    }

    #[test]
    fn names_are_learnt_once_per_key() {
        let mut names = Names::default();
        assert!(!names.missing([0, 0]), "key 0: no entry to learn");
        assert!(names.missing([0, 1 << 32 | 1]));
        let list = ProcessList {
            entries: vec![process(1)],
            ..ProcessList::default()
        };
        names.learn(&list, [1 << 32 | 1, 1 << 32 | 9], &mut |_| None);
        assert!(
            !names.missing([1 << 32 | 1, 1 << 32 | 9]),
            "an absent key is not asked again"
        );
        assert_eq!(
            names.get(1 << 32 | 1).map(|p| p.name.as_str()),
            Some("app1.exe")
        );
        assert_eq!(names.get(1 << 32 | 9), None);
    }

    #[test]
    fn rows_sum_active_and_ended_traffic_and_rate_new_processes_over_their_age() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let e = process(2);
        let row = ProcRow::new(&e, Proc::default(), (60_000_000, wall), None);
        assert_eq!(
            (row.bytes_in, row.bytes_out, row.packets_in, row.packets_out),
            (1002, 100, 11, 6)
        );
        assert_eq!(
            (row.first_seen.as_str(), row.pid),
            ("1970-01-01T00:01:35.000Z", Some(102))
        );
        assert_eq!(row.rate_in, None);
        // Absent from a snapshot 1 s earlier, first seen 5 s ago: its bytes
        // over 5 s. Present: the difference over the interval.
        let mut before = Previous {
            now: 50_000_000,
            ..Previous::default()
        };
        let row = ProcRow::new(&e, Proc::default(), (60_000_000, wall), Some(&before));
        assert_eq!(
            (row.rate_in, row.rate_out),
            (Some(1002.0 / 5.0), Some(20.0))
        );
        before.bytes.insert(e.key, (2, 100));
        let row = ProcRow::new(&e, Proc::default(), (60_000_000, wall), Some(&before));
        assert_eq!((row.rate_in, row.rate_out), (Some(1000.0), Some(0.0)));
        let mut anonymous = e;
        anonymous.flags = PROCESS_ID_MISSING;
        let v = serde_json::to_value(ProcRow::new(
            &anonymous,
            Proc::default(),
            (60_000_000, wall),
            None,
        ))
        .unwrap();
        assert!(
            v.get("pid").is_none() && v.get("path").is_none() && v["key"] == "0x0000000100000002"
        );
    }

    #[test]
    fn documents_filter_sort_and_cut() {
        let list = ProcessList {
            entries: (1..=4).map(process).collect(),
            ..ProcessList::default()
        };
        let rows = |sort, top, process: Option<&str>| {
            let all = list
                .entries
                .iter()
                .map(|e| {
                    let mut r = ProcRow::new(
                        e,
                        Proc::of(e, &[], &mut |_| None),
                        (0, SystemTime::UNIX_EPOCH),
                        None,
                    );
                    r.active_flows = 10 - e.process_id % 10;
                    r
                })
                .collect();
            let args = ProcsArgs {
                sort,
                top,
                process: process.map(str::to_owned),
                ..ProcsArgs::default()
            };
            let doc = ProcsDoc::new(&args, "t".into(), &list, all, None);
            (
                doc.matched,
                doc.processes
                    .iter()
                    .map(|p| p.pid.unwrap())
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            rows(ProcSort::Bytes, None, None),
            (4, vec![104, 103, 102, 101])
        );
        assert_eq!(rows(ProcSort::Flows, Some(2), None), (4, vec![101, 102]));
        assert_eq!(rows(ProcSort::Pid, None, Some("APP3")), (1, vec![103]));
        assert_eq!(rows(ProcSort::Proc, Some(1), None), (4, vec![101]));
    }
}
