//! Requests to the driver's control device.
//!
//! They go through a [`ControlDevice`] (`DeviceIoControl` on Windows, a
//! simulated driver in the tests). The only module that knows the IOCTLs:
//! a paged flow list changes only here.

use wfpmon_core::protocol::{
    self, DecodeError, FlowEntry, FlowListHeader, IOCTL_WFPMON_LIST_FLOWS as LIST_FLOWS,
    IOCTL_WFPMON_QUERY_STATS as QUERY_STATS, IOCTL_WFPMON_SET_COUNTING as SET_COUNTING,
    ListFlowsRequest, PROTOCOL_VERSION, QueryStatsRequest, SetCountingRequest, Stats,
};

use crate::error::{Error, Kind, Step, SystemCode};

/// How a `DeviceIoControl` call ended when it did not fully succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoctlError {
    /// `ERROR_MORE_DATA` (the driver's `STATUS_BUFFER_OVERFLOW`): this many
    /// bytes of valid, partial output were copied.
    MoreData(usize),
    Failed(SystemCode),
}

/// A synchronous `DeviceIoControl` on the control device.
pub trait ControlDevice {
    /// Sends `code` with `input`; returns the bytes written to `output`.
    fn ioctl(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError>;
}

/// Entries the first `LIST_FLOWS` call makes room for.
const INITIAL_CAPACITY: usize = 256;
/// Extra entries on a retry, for flows established between two calls.
const SLACK: usize = 64;
/// Calls made before settling for a partial list.
const MAX_ATTEMPTS: usize = 4;

/// Sends a request; the bytes received and whether they are partial.
fn call<D: ControlDevice>(
    device: &mut D,
    code: u32,
    input: &[u8],
    output: &mut [u8],
) -> Result<(usize, bool), Error> {
    let name = match code {
        QUERY_STATS => "IOCTL_WFPMON_QUERY_STATS",
        LIST_FLOWS => "IOCTL_WFPMON_LIST_FLOWS",
        _ => "IOCTL_WFPMON_SET_COUNTING",
    };
    let response = match device.ioctl(code, input, output) {
        Ok(n) => Ok((n, false)),
        Err(IoctlError::MoreData(n)) => Ok((n, true)),
        Err(IoctlError::Failed(c)) => {
            let what = format!("DeviceIoControl({name})");
            Err(Error::system(Step::DeviceControl, c, &what))
        }
    };
    response.map(|(n, partial)| (n.min(output.len()), partial))
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
    let (n, _) = call(device, QUERY_STATS, &request, &mut out)?;
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

/// Lists every active flow.
///
/// When the driver answers `ERROR_MORE_DATA` with the size that would hold
/// them all, the buffer grows to that size (plus slack) and the call is
/// repeated, at most four times in all.
pub fn list_flows<D: ControlDevice>(device: &mut D) -> Result<FlowList, Error> {
    let request = ListFlowsRequest::new(0).to_bytes();
    let mut capacity = INITIAL_CAPACITY;
    for attempt in 1.. {
        let size = protocol::flow_list_size(capacity)
            .ok_or_else(|| Error::new(Kind::Other, "too many flows to list"))?;
        let mut out = vec![0u8; size];
        let (n, overflow) = call(device, LIST_FLOWS, &request, &mut out)?;
        let (header, entries) = protocol::decode_flow_list(&out[..n]).map_err(protocol_error)?;
        let list = FlowList {
            total: header.total_flows,
            entries: entries.collect(),
        };
        let needed = usize::try_from(header.required_size)
            .ok()
            .and_then(|r| r.checked_sub(FlowListHeader::SIZE))
            .map_or(0, |body| body.div_ceil(FlowEntry::SIZE));
        if !overflow || attempt == MAX_ATTEMPTS || needed <= capacity {
            return Ok(list);
        }
        capacity = needed + SLACK;
    }
    unreachable!("the loop returns by its last attempt")
}

#[cfg(test)]
pub mod sim {
    //! A simulated driver: validates every request with the driver's own
    //! `parse_request` and answers as the protocol specifies.

    use super::*;
    use wfpmon_core::protocol::{Header, Request, parse_request};

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
                .map_err(|_| IoctlError::Failed(SystemCode::Win32(87)))?;
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
                Request::ListFlows { capacity } => {
                    self.list_calls += 1;
                    for _ in 0..self.growth_per_call {
                        self.flows.push(flow(self.flows.len() as u64));
                    }
                    let returned = capacity.min(self.flows.len());
                    let size = |n| protocol::flow_list_size(n).unwrap();
                    let header = FlowListHeader {
                        header: Header {
                            version: protocol::PROTOCOL_VERSION,
                            size: u32::try_from(size(returned)).unwrap(),
                        },
                        total_flows: u32::try_from(self.flows.len()).unwrap(),
                        returned: u32::try_from(returned).unwrap(),
                        entry_size: u32::try_from(FlowEntry::SIZE).unwrap(),
                        reserved: 0,
                        required_size: size(self.flows.len()) as u64,
                    };
                    let mut at = header.encode(out);
                    for f in &self.flows[..returned] {
                        at += f.encode(&mut out[at..]);
                    }
                    if returned < self.flows.len() {
                        Err(IoctlError::MoreData(at))
                    } else {
                        Ok(at)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sim::{SimDriver, flow};
    use super::*;

    fn driver(n: u64) -> SimDriver {
        SimDriver {
            flows: (0..n).map(flow).collect(),
            ..SimDriver::default()
        }
    }

    #[test]
    fn small_and_empty_lists_take_one_call() {
        for n in [0, 5] {
            let mut d = driver(n);
            let list = list_flows(&mut d).unwrap();
            assert_eq!(list.entries, d.flows);
            assert_eq!(u64::from(list.total), n);
            assert_eq!(d.list_calls, 1);
        }
    }

    #[test]
    fn overflow_grows_the_buffer_once() {
        let mut d = driver(INITIAL_CAPACITY as u64 * 3 + 7);
        d.growth_per_call = 5;
        let list = list_flows(&mut d).unwrap();
        assert_eq!(list.entries, d.flows);
        assert_eq!(d.list_calls, 2);
    }

    #[test]
    fn runaway_growth_ends_with_a_partial_list() {
        let mut d = driver(INITIAL_CAPACITY as u64 + 1);
        d.growth_per_call = 10 * SLACK;
        let list = list_flows(&mut d).unwrap();
        assert_eq!(d.list_calls, MAX_ATTEMPTS);
        assert!(list.entries.len() < list.total as usize);
        assert_eq!(list.entries, d.flows[..list.entries.len()]);
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
                Err(IoctlError::Failed(SystemCode::Win32(self.0)))
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
