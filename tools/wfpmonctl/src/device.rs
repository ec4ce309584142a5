//! Requests to the driver's control device.
//!
//! They go through a [`ControlDevice`] (`DeviceIoControl` on Windows, a
//! simulated driver in the tests). The only module that knows the IOCTLs:
//! a paged flow list changes only here.

use wfpmon_core::protocol::{
    self, DecodeError, FlowEntry, IOCTL_WFPMON_LIST_FLOWS as LIST_FLOWS,
    IOCTL_WFPMON_QUERY_STATS as QUERY_STATS, IOCTL_WFPMON_SET_COUNTING as SET_COUNTING,
    ListFlowsRequest, PROTOCOL_VERSION, QueryStatsRequest, SetCountingRequest, Stats,
};

use crate::error::{Error, Kind, Step, SystemCode};

/// How a `DeviceIoControl` call failed. (Protocol 3 has no partial
/// answers: the flow list is paged, so `ERROR_MORE_DATA` is a failure too.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoctlError(pub(crate) SystemCode);

impl IoctlError {
    /// The call failed with this Win32 error code (`GetLastError`).
    #[must_use]
    pub const fn win32(code: u32) -> Self {
        Self(SystemCode::Win32(code))
    }
}

/// A synchronous `DeviceIoControl` on the control device.
pub trait ControlDevice {
    /// Sends `code` with `input`; returns the bytes written to `output`.
    ///
    /// # Errors
    /// The Win32 error code the call failed with.
    fn ioctl(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError>;
}

/// Sends a request; the bytes received.
fn call<D: ControlDevice>(
    device: &mut D,
    code: u32,
    input: &[u8],
    output: &mut [u8],
) -> Result<usize, Error> {
    let name = match code {
        QUERY_STATS => "IOCTL_WFPMON_QUERY_STATS",
        LIST_FLOWS => "IOCTL_WFPMON_LIST_FLOWS",
        _ => "IOCTL_WFPMON_SET_COUNTING",
    };
    match device.ioctl(code, input, output) {
        Ok(n) => Ok(n.min(output.len())),
        Err(IoctlError(c)) => {
            let what = format!("DeviceIoControl({name})");
            Err(Error::system(Step::DeviceControl, c, &what))
        }
    }
}

fn protocol_error(e: DecodeError) -> Error {
    let detail = match e {
        DecodeError::Version(v) => format!("control-protocol version {v}, not {PROTOCOL_VERSION}"),
        DecodeError::Truncated | DecodeError::Size => "a malformed response".to_owned(),
    };
    let message =
        format!("the driver sent {detail}: driver and wfpmonctl come from different builds");
    Error::new(Kind::ProtocolMismatch, message)
}

/// Reads the driver-wide statistics.
pub fn query_stats<D: ControlDevice>(device: &mut D) -> Result<Stats, Error> {
    let mut out = [0u8; Stats::SIZE];
    let request = QueryStatsRequest::new().to_bytes();
    let n = call(device, QUERY_STATS, &request, &mut out)?;
    Stats::decode(&out[..n]).map_err(protocol_error)
}

/// Turns traffic counting on or off.
pub fn set_counting<D: ControlDevice>(device: &mut D, enable: bool) -> Result<(), Error> {
    let request = SetCountingRequest::new(enable).to_bytes();
    call(device, SET_COUNTING, &request, &mut []).map(drop)
}

/// A snapshot of the flow table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowList {
    /// Active flows when the snapshot was taken.
    pub total: u32,
    /// The entries returned (fewer than `total` only if flows kept
    /// appearing faster than the buffer grew).
    pub entries: Vec<FlowEntry>,
}

/// Lists every active flow, page by page.
///
/// Each call returns at most [`protocol::MAX_FLOWS_PER_CALL`] flows after
/// the cursor of the previous answer, so a million flows need no huge
/// buffer (about 4 000 calls of 24 KiB). Within one listing pass the driver
/// lists a flow present throughout exactly once, and one that comes or goes
/// meanwhile at most once.
pub fn list_flows<D: ControlDevice>(device: &mut D) -> Result<FlowList, Error> {
    let size = protocol::flow_list_size(protocol::MAX_FLOWS_PER_CALL)
        .ok_or_else(|| Error::new(Kind::Other, "flow list batch too large"))?;
    let mut out = vec![0u8; size];
    let mut list = FlowList::default();
    let mut cursor = (0, 0);
    loop {
        let request = ListFlowsRequest::resume(0, cursor.0, cursor.1).to_bytes();
        let n = call(device, LIST_FLOWS, &request, &mut out)?;
        let (header, entries) = protocol::decode_flow_list(&out[..n]).map_err(protocol_error)?;
        list.total = header.total_flows;
        list.entries.extend(entries);
        if header.flags & protocol::FLOW_LIST_MORE == 0 {
            return Ok(list);
        }
        let next = (header.next_bucket, header.next_seq);
        if header.returned == 0 && next == cursor {
            // No progress: the driver would be asked the same forever.
            return Err(protocol_error(DecodeError::Size));
        }
        cursor = next;
    }
}

#[cfg(test)]
pub mod sim {
    //! A simulated driver: validates every request with the driver's own
    //! `parse_request` and answers as the protocol specifies.

    use super::*;
    use wfpmon_core::protocol::{FlowListHeader, Header, Request, parse_request};

    #[derive(Debug, Default)]
    pub struct SimDriver {
        pub flows: Vec<FlowEntry>,
        pub stats: Stats,
        pub counting: Option<bool>,
        /// Flows appearing before each `LIST_FLOWS` call.
        pub growth_per_call: usize,
        pub version: Option<u32>,
        pub list_calls: usize,
    }

    pub fn flow(i: u64) -> FlowEntry {
        let mut local = [0; 16];
        local[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut remote = [0; 16];
        remote[..4].copy_from_slice(&[192, 0, 2, 7]);
        FlowEntry {
            flow_id: 0x1000 + i,
            process_id: 100 + i,
            age_ms: 1000 * i,
            bytes_inbound: 100 * i,
            bytes_outbound: 10 * i,
            packets_inbound: i,
            packets_outbound: i / 2,
            local_address: local,
            remote_address: remote,
            local_port: 50000,
            remote_port: 443,
            address_family: 2,
            ip_protocol: 6,
            direction: 0,
        }
    }

    impl ControlDevice for SimDriver {
        fn ioctl(&mut self, code: u32, input: &[u8], out: &mut [u8]) -> Result<usize, IoctlError> {
            let request = parse_request(code, input, out.len())
                .map_err(|_| IoctlError(SystemCode::Win32(87)))?;
            match request {
                Request::QueryStats => {
                    let n = self.stats.encode(out);
                    if let Some(v) = self.version {
                        out[..4].copy_from_slice(&v.to_le_bytes());
                    }
                    Ok(n)
                }
                Request::SetCounting { enable } => {
                    self.counting = Some(enable);
                    Ok(0)
                }
                Request::ListFlows {
                    capacity,
                    cursor_bucket,
                    ..
                } => {
                    // Pages by index (the cursor's bucket field); flows
                    // appear at the end between calls.
                    self.list_calls += 1;
                    for _ in 0..self.growth_per_call {
                        self.flows.push(flow(self.flows.len() as u64));
                    }
                    let start = (cursor_bucket as usize).min(self.flows.len());
                    let returned = capacity.min(self.flows.len() - start);
                    let end = start + returned;
                    let more = end < self.flows.len();
                    let header = FlowListHeader {
                        header: Header {
                            version: protocol::PROTOCOL_VERSION,
                            size: u32::try_from(protocol::flow_list_size(returned).unwrap())
                                .unwrap(),
                        },
                        total_flows: u32::try_from(self.flows.len()).unwrap(),
                        returned: u32::try_from(returned).unwrap(),
                        entry_size: u32::try_from(FlowEntry::SIZE).unwrap(),
                        flags: if more { protocol::FLOW_LIST_MORE } else { 0 },
                        next_bucket: if more { u32::try_from(end).unwrap() } else { 0 },
                        next_seq: 0,
                    };
                    let mut at = header.encode(out);
                    for f in &self.flows[start..end] {
                        at += f.encode(&mut out[at..]);
                    }
                    Ok(at)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sim::{SimDriver, flow};
    use super::*;
    use wfpmon_core::protocol::FlowListHeader;

    fn driver(n: u64) -> SimDriver {
        SimDriver {
            flows: (0..n).map(flow).collect(),
            ..SimDriver::default()
        }
    }

    #[test]
    fn small_and_empty_lists_take_one_call() {
        for n in [0, 5, 256] {
            let mut d = driver(n);
            let list = list_flows(&mut d).unwrap();
            assert_eq!(list.entries, d.flows);
            assert_eq!(u64::from(list.total), n);
            assert_eq!(d.list_calls, 1);
        }
    }

    #[test]
    fn long_lists_are_paged_in_bounded_batches() {
        let mut d = driver(256 * 3 + 7);
        let list = list_flows(&mut d).unwrap();
        assert_eq!(list.entries, d.flows);
        assert_eq!(d.list_calls, 4);
    }

    #[test]
    fn flows_appearing_between_batches_are_picked_up() {
        let mut d = driver(600);
        d.growth_per_call = 5;
        let list = list_flows(&mut d).unwrap();
        assert_eq!(list.entries, d.flows);
        assert_eq!(list.total as usize, d.flows.len());
    }

    #[test]
    fn a_driver_that_makes_no_progress_is_a_protocol_error() {
        struct Stuck;
        impl ControlDevice for Stuck {
            fn ioctl(&mut self, _: u32, _: &[u8], out: &mut [u8]) -> Result<usize, IoctlError> {
                let header = FlowListHeader {
                    header: wfpmon_core::protocol::Header {
                        version: PROTOCOL_VERSION,
                        size: u32::try_from(FlowListHeader::SIZE).unwrap(),
                    },
                    total_flows: 3,
                    returned: 0,
                    entry_size: u32::try_from(FlowEntry::SIZE).unwrap(),
                    flags: protocol::FLOW_LIST_MORE,
                    next_bucket: 0,
                    next_seq: 0,
                };
                Ok(header.encode(out))
            }
        }
        assert_eq!(list_flows(&mut Stuck).unwrap_err().exit_code(), 7);
    }

    #[test]
    fn stats_counting_and_version_mismatch() {
        let mut d = SimDriver::default();
        d.stats.flows_active = 42;
        assert_eq!(query_stats(&mut d).unwrap().flows_active, 42);
        set_counting(&mut d, false).unwrap();
        assert_eq!(d.counting, Some(false));
        // A driver of the previous protocol version, and of a later one.
        for version in [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1] {
            d.version = Some(version);
            let err = query_stats(&mut d).unwrap_err();
            assert_eq!(err.exit_code(), 7);
            let expected = format!("control-protocol version {version}, not {PROTOCOL_VERSION}");
            assert!(err.message.contains(&expected), "{}", err.message);
        }
    }

    #[test]
    fn refused_requests_are_a_protocol_mismatch() {
        struct Refusing(u32);
        impl ControlDevice for Refusing {
            fn ioctl(&mut self, _: u32, _: &[u8], _: &mut [u8]) -> Result<usize, IoctlError> {
                Err(IoctlError(SystemCode::Win32(self.0)))
            }
        }
        assert_eq!(list_flows(&mut Refusing(1306)).unwrap_err().exit_code(), 7);
        assert_eq!(
            set_counting(&mut Refusing(5), true)
                .unwrap_err()
                .exit_code(),
            3
        );
    }
}
