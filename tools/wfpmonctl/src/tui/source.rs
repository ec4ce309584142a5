//! Where the live view's samples come from: the driver, through the same
//! device client as the other commands (`crate::device`: paged flow list,
//! process table with busy retries, event reads), and process names from
//! the driver's process table (as `flows` and `events` name them).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use wfpmon_core::protocol::MAX_EVENTS_PER_CALL;

use super::model::Sample;
use crate::device::{self, ControlDevice};
use crate::error::Error;
use crate::flows::process_name;
use crate::procs::{self, Proc, wall_time};

/// Event batches read per refresh at most (4096 events): a burst larger
/// than that is read over the next refreshes, or lost to the driver's ring
/// and counted.
pub const EVENT_BATCHES_PER_REFRESH: usize = 16;

/// Samples of the driver, and names of its programs.
pub trait Source {
    /// Reads the driver at wall time `wall`, monotonic time `mono`.
    ///
    /// # Errors
    /// A failed request or an answer that breaks the protocol.
    fn sample(&mut self, wall: SystemTime, mono: Duration) -> Result<Sample, Error>;

    /// The program of process key `key` (0: none) and process id `pid`.
    fn name(&mut self, key: u64, pid: u64) -> Proc;
}

/// A [`Source`] over a [`ControlDevice`].
pub struct DeviceSource<'d, D, P> {
    device: &'d mut D,
    /// Names a process by id when the driver's table does not.
    process_name: P,
    /// Drive letters for paths (`QueryDosDeviceW`).
    drives: Vec<(String, String)>,
    names: procs::Names,
    by_pid: HashMap<u64, String>,
    /// Next event to read (0: the oldest the driver holds).
    cursor: u64,
    pause: fn(Duration),
}

impl<'d, D: ControlDevice, P: FnMut(u64) -> Option<String>> DeviceSource<'d, D, P> {
    /// Reads `device`; `pause` waits before asking a busy driver again.
    pub fn new(
        device: &'d mut D,
        process_name: P,
        drives: Vec<(String, String)>,
        pause: fn(Duration),
    ) -> Self {
        Self {
            device,
            process_name,
            drives,
            names: procs::Names::default(),
            by_pid: HashMap::new(),
            cursor: 0,
            pause,
        }
    }
}

impl<D: ControlDevice, P: FnMut(u64) -> Option<String>> Source for DeviceSource<'_, D, P> {
    fn sample(&mut self, wall: SystemTime, mono: Duration) -> Result<Sample, Error> {
        let list = device::list_flows(self.device)?;
        let mut sample = Sample {
            wall: Some(wall),
            mono,
            active: list.total,
            flows: list.entries,
            ..Sample::default()
        };
        for _ in 0..EVENT_BATCHES_PER_REFRESH {
            let (header, batch) = device::read_events(self.device, self.cursor, false)?;
            // The first read from 0 starts at the oldest event held: a gap
            // before it is history, not a loss.
            if self.cursor != 0 {
                sample.dropped += header.dropped;
            }
            let full = batch.len() >= MAX_EVENTS_PER_CALL;
            sample.events.extend(
                batch
                    .into_iter()
                    .map(|e| (e, wall_time(e.time, header.now, wall))),
            );
            self.cursor = header.next;
            if !full {
                break;
            }
        }
        // Names of processes not seen before, from the driver's table (one
        // pass for all of them).
        let keys = sample
            .flows
            .iter()
            .map(|e| e.process_key)
            .chain(sample.events.iter().map(|(e, _)| e.process_key));
        if self.names.missing(keys.clone()) {
            if self.names.drives.is_none() {
                self.names.drives = Some(std::mem::take(&mut self.drives));
            }
            let pause = self.pause;
            let table = device::list_processes(self.device, &mut |d| pause(d))?;
            let keys: Vec<u64> = keys.collect();
            self.names.learn(&table, keys, &mut self.process_name);
        }
        Ok(sample)
    }

    fn name(&mut self, key: u64, pid: u64) -> Proc {
        if let Some(p) = self.names.get(key) {
            return p.clone();
        }
        let resolve = &mut self.process_name;
        let name = self
            .by_pid
            .entry(pid)
            .or_insert_with(|| process_name(pid, resolve))
            .clone();
        Proc {
            name,
            ..Proc::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sim::{SimDriver, event, flow, process};

    #[test]
    fn samples_flows_events_and_names_through_the_device_client() {
        let mut d = SimDriver {
            flows: (1..=3).map(flow).collect(),
            processes: vec![process(1)],
            now: 70_000_000,
            ..SimDriver::default()
        };
        d.flows[0].process_key = 1 << 32 | 1;
        d.events = (0..300)
            .map(|i| {
                let mut e = event(1 << 32 | 1);
                e.seq = i;
                e
            })
            .collect();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut asked = Vec::new();
        let mut source = DeviceSource::new(
            &mut d,
            |pid| {
                asked.push(pid);
                Some(format!("user{pid}.exe"))
            },
            Vec::new(),
            |_| {},
        );
        let s = source.sample(wall, Duration::from_secs(1)).unwrap();
        assert_eq!(
            (s.active, s.flows.len(), s.events.len(), s.dropped),
            (3, 3, 300, 0)
        );
        // The events' time: 5 s after boot, read at 7 s.
        assert_eq!(s.events[0].1, wall - Duration::from_secs(2));
        assert_eq!(source.name(1 << 32 | 1, 101).name, "app1.exe");
        assert_eq!(source.name(0, 102).name, "user102.exe");
        assert_eq!(source.name(0, 102).name, "user102.exe");
        assert_eq!(source.name(0, 4).name, "System");
        let s = source.sample(wall, Duration::from_secs(2)).unwrap();
        assert!(s.events.is_empty());
        drop(source);
        assert_eq!(asked, [102], "asked once per pid");
        assert_eq!(d.reads, [(0, false), (256, false), (300, false)]);
        assert_eq!(d.process_calls, [0], "the table is read once for a new key");
    }
}
