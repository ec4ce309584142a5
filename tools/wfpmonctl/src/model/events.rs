//! Flow events as serde documents (schemas `wfpmon.event/2` and
//! `wfpmon.dropped/1`, documented in the README), placed on the wall clock.

use std::time::SystemTime;

use serde::Serialize;
use wfpmon_core::events::{
    EVENT_ENDED, EVENT_ESTABLISHED, EVENT_FLAG_NO_PROCESS, EVENT_FLAG_NOT_TRACKED,
    EVENT_FLAG_UNLOADING, FlowEvent,
};
use wfpmon_core::protocol::FlowEntry;

use crate::flows::FlowRow;
use crate::procs::{Proc, wall_time};
use crate::render::timestamp;

/// Event flags and their names.
const FLAGS: [(u8, &str); 3] = [
    (EVENT_FLAG_UNLOADING, "unloading"),
    (EVENT_FLAG_NO_PROCESS, "no_process"),
    (EVENT_FLAG_NOT_TRACKED, "not_tracked"),
];

/// One flow event (`wfpmon.event/2`): the flow's fields as `flows` shows
/// them (names and path included), its counters at the event (final when
/// it ended), and `age_ms` the time from establishment to the event (0 when
/// established; the flow's duration when it ended).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventDoc {
    pub schema: &'static str,
    pub timestamp: String,
    /// When the event happened (`timestamp`), for the local-time text.
    #[serde(skip)]
    pub time: SystemTime,
    pub seq: u64,
    pub event: &'static str,
    pub flags: Vec<&'static str>,
    #[serde(flatten)]
    pub flow: FlowRow,
}

impl EventDoc {
    /// The document of `e`, which happened at interrupt time `e.time`, of
    /// the process `proc`, read with the driver's `now` at wall time `wall`.
    pub fn new(e: &FlowEvent, proc: Proc, now: u64, wall: SystemTime) -> Self {
        let entry = FlowEntry {
            flow_id: e.flow_id,
            process_id: u64::from(e.process_id),
            age_ms: e.duration / 10_000,
            bytes_inbound: e.bytes_inbound,
            bytes_outbound: e.bytes_outbound,
            packets_inbound: e.packets_inbound,
            packets_outbound: e.packets_outbound,
            local_address: e.local_address,
            remote_address: e.remote_address,
            local_port: e.local_port,
            remote_port: e.remote_port,
            address_family: e.address_family,
            ip_protocol: e.ip_protocol,
            direction: e.direction,
            process_key: e.process_key,
        };
        let event = match e.kind {
            EVENT_ESTABLISHED => "established",
            EVENT_ENDED => "ended",
            _ => "unknown",
        };
        let time = wall_time(e.time, now, wall);
        let mut flow = FlowRow::new(&entry, proc.name, None);
        flow.path = proc.path;
        Self {
            schema: "wfpmon.event/2",
            timestamp: timestamp(time),
            time,
            seq: e.seq,
            event,
            flags: FLAGS
                .iter()
                .filter(|(bit, _)| e.flags & bit != 0)
                .map(|(_, name)| *name)
                .collect(),
            flow,
        }
    }
}

/// Events the driver's ring overwrote before this reader got them
/// (`wfpmon.dropped/1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DroppedDoc {
    pub schema: &'static str,
    pub timestamp: String,
    #[serde(skip)]
    pub time: SystemTime,
    pub dropped: u64,
    /// Sequence number of the next event shown.
    pub next_seq: u64,
}

impl DroppedDoc {
    pub fn new(dropped: u64, next_seq: u64, wall: SystemTime) -> Self {
        Self {
            schema: "wfpmon.dropped/1",
            timestamp: timestamp(wall),
            time: wall,
            dropped,
            next_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sim::event;
    use std::time::Duration;

    #[test]
    fn documents_follow_the_event() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut e = event(1 << 32 | 2);
        e.flags = EVENT_FLAG_UNLOADING | EVENT_FLAG_NOT_TRACKED;
        e.seq = 41;
        let proc = Proc {
            name: "app.exe".into(),
            path: Some(r"C:\app.exe".into()),
            truncated: false,
        };
        // 5 s after boot, read at 7 s.
        let d = EventDoc::new(&e, proc, 70_000_000, wall);
        assert_eq!(
            (d.event, d.seq, d.timestamp.as_str()),
            ("ended", 41, "1970-01-01T00:01:38.000Z")
        );
        assert_eq!(d.flags, ["unloading", "not_tracked"]);
        assert_eq!(
            (d.flow.age_ms, d.flow.pid, d.flow.bytes_in),
            (1234, 102, 3 << 20)
        );
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            (
                v["schema"].as_str(),
                v["path"].as_str(),
                v["process"].as_str()
            ),
            (Some("wfpmon.event/2"), Some(r"C:\app.exe"), Some("app.exe"))
        );
        assert!(
            v.get("rate_in").is_none() && v.get("flow").is_none(),
            "the flow's fields are flattened"
        );

        e.kind = EVENT_ESTABLISHED;
        e.ip_protocol = 1;
        (e.local_port, e.remote_port) = (8, 0);
        let v = serde_json::to_value(EventDoc::new(&e, Proc::default(), 70_000_000, wall)).unwrap();
        assert_eq!(
            (
                v["event"].as_str(),
                v["icmp_type"].as_u64(),
                v.get("local_port"),
                v.get("path")
            ),
            (Some("established"), Some(8), None, None)
        );
        e.kind = 9;
        assert_eq!(EventDoc::new(&e, Proc::default(), 0, wall).event, "unknown");
        let v = serde_json::to_value(DroppedDoc::new(3, 7, wall)).unwrap();
        assert_eq!(
            (
                v["schema"].as_str(),
                v["dropped"].as_u64(),
                v["next_seq"].as_u64()
            ),
            (Some("wfpmon.dropped/1"), Some(3), Some(7))
        );
    }
}
