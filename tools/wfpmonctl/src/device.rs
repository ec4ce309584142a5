//! Requests to the driver's control device.
//!
//! They are written against the [`ControlDevice`] trait: the `windows` module implements it with
//! `DeviceIoControl`, the tests with a simulated driver built on
//! `wfpmon_core::protocol` (the same validator the driver runs).

use wfpmon_core::protocol::{
    self, DecodeError, FlowEntry, FlowListHeader, ListFlowsRequest, QueryStatsRequest,
    SetCountingRequest, Stats,
};

use crate::exit::{Error, Kind, Step, SystemCode};

/// How a `DeviceIoControl` call ended when it did not fully succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoctlError {
    /// `ERROR_MORE_DATA` (the driver completed with the *warning*
    /// `STATUS_BUFFER_OVERFLOW`): the call returned `FALSE`, yet the I/O
    /// manager copied this many bytes of valid, partial output.
    MoreData(usize),
    /// Any other failure.
    Failed(SystemCode),
}

/// A synchronous `DeviceIoControl` on the control device.
pub trait ControlDevice {
    /// Sends `code` with `input`, receiving into `output`; returns the number
    /// of bytes written to `output`.
    ///
    /// # Errors
    /// [`IoctlError`].
    fn ioctl(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError>;
}

/// Entries the first `LIST_FLOWS` call makes room for.
pub const INITIAL_FLOW_CAPACITY: usize = 128;
/// Extra entries added to the driver's `required_size` when retrying, for
/// flows established between two calls.
pub const FLOW_SLACK: usize = 32;
/// Calls made before settling for a partial list.
pub const MAX_LIST_ATTEMPTS: usize = 4;
/// Largest response buffer allocated (64 MiB ≈ 700 000 flows).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A flow list as returned by the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowList {
    /// Active flows at the time of the snapshot.
    pub total_flows: u32,
    /// The entries returned.
    pub entries: Vec<FlowEntry>,
}

impl FlowList {
    /// Whether fewer entries than active flows were returned (because of
    /// `--max`, or because flows kept appearing faster than the buffer grew).
    #[must_use]
    pub const fn truncated(&self) -> bool {
        self.entries.len() < self.total_flows as usize
    }
}

fn protocol_error(what: &str, e: DecodeError) -> Error {
    let detail = match e {
        DecodeError::Truncated => "the response is shorter than its structure".to_owned(),
        DecodeError::Version(v) => format!(
            "the driver speaks control-protocol version {v}, this wfpmonctl speaks version {}",
            protocol::PROTOCOL_VERSION
        ),
        DecodeError::Size => {
            "the response's sizes do not match this tool's structure layout".to_owned()
        }
    };
    Error::new(
        Kind::ProtocolMismatch,
        format!("{what}: {detail}; driver and wfpmonctl come from different builds"),
    )
}

fn ioctl_error(name: &str, e: IoctlError) -> Error {
    match e {
        IoctlError::Failed(code) => Error::system(
            Step::DeviceControl,
            code,
            &format!("DeviceIoControl({name})"),
        ),
        IoctlError::MoreData(_) => Error::new(
            Kind::ProtocolMismatch,
            format!(
                "DeviceIoControl({name}): the driver returned more data than the protocol defines"
            ),
        ),
    }
}

/// Reads the driver-wide statistics.
///
/// # Errors
/// The classified `DeviceIoControl` failure, or [`Kind::ProtocolMismatch`]
/// when the response does not decode.
pub fn query_stats<D: ControlDevice>(device: &mut D) -> Result<Stats, Error> {
    let request = QueryStatsRequest::new().to_bytes();
    let mut out = [0u8; Stats::SIZE];
    let n = device
        .ioctl(protocol::IOCTL_WFPMON_QUERY_STATS, &request, &mut out)
        .map_err(|e| ioctl_error("IOCTL_WFPMON_QUERY_STATS", e))?;
    Stats::decode(&out[..n.min(out.len())])
        .map_err(|e| protocol_error("IOCTL_WFPMON_QUERY_STATS", e))
}

/// Turns traffic counting on or off.
///
/// # Errors
/// The classified `DeviceIoControl` failure.
pub fn set_counting<D: ControlDevice>(device: &mut D, enable: bool) -> Result<(), Error> {
    let request = SetCountingRequest::new(enable).to_bytes();
    device
        .ioctl(protocol::IOCTL_WFPMON_SET_COUNTING, &request, &mut [])
        .map(|_| ())
        .map_err(|e| ioctl_error("IOCTL_WFPMON_SET_COUNTING", e))
}

/// Lists active flows; `max_entries` 0 means all of them.
///
/// The driver fills as many entries as the output buffer holds; when more
/// flows exist it completes with `STATUS_BUFFER_OVERFLOW` — `ERROR_MORE_DATA`
/// here, with the partial data delivered — and puts the size that would hold
/// every flow in `required_size`. The list then grows the buffer to that
/// size (plus slack for new flows) and asks again, at most
/// [`MAX_LIST_ATTEMPTS`] times, after which the partial list is returned
/// ([`FlowList::truncated`] says so). With a `max_entries` limit the buffer
/// is sized for that many entries and an overflow is the expected answer.
///
/// # Errors
/// The classified `DeviceIoControl` failure, or [`Kind::ProtocolMismatch`]
/// when a response does not decode or contradicts itself.
pub fn list_flows<D: ControlDevice>(device: &mut D, max_entries: u32) -> Result<FlowList, Error> {
    const NAME: &str = "IOCTL_WFPMON_LIST_FLOWS";
    let request = ListFlowsRequest::new(max_entries).to_bytes();
    let limit = if max_entries == 0 {
        usize::MAX
    } else {
        max_entries as usize
    };
    let mut capacity = INITIAL_FLOW_CAPACITY.min(limit);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let size = protocol::flow_list_size(capacity)
            .filter(|&s| s <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| {
                Error::new(
                    Kind::Other,
                    format!("{NAME}: a list of {capacity} flows is too large"),
                )
            })?;
        let mut out = vec![0u8; size];
        let (len, overflow) =
            match device.ioctl(protocol::IOCTL_WFPMON_LIST_FLOWS, &request, &mut out) {
                Ok(n) => (n, false),
                Err(IoctlError::MoreData(n)) => (n, true),
                Err(e) => return Err(ioctl_error(NAME, e)),
            };
        let bytes = &out[..len.min(out.len())];
        let (header, entries) =
            protocol::decode_flow_list(bytes).map_err(|e| protocol_error(NAME, e))?;
        let entries: Vec<FlowEntry> = entries.collect();
        if entries.len() != header.returned as usize || entries.len() > capacity {
            return Err(protocol_error(NAME, DecodeError::Size));
        }
        let list = FlowList {
            total_flows: header.total_flows,
            entries,
        };
        if !overflow || list.entries.len() >= limit || attempt >= MAX_LIST_ATTEMPTS {
            return Ok(list);
        }
        let needed =
            required_entries(&header).ok_or_else(|| protocol_error(NAME, DecodeError::Size))?;
        let next = needed.saturating_add(FLOW_SLACK).min(limit);
        if next <= capacity {
            // The driver says it overflowed yet asks for no more room than
            // it had: take what it gave rather than loop.
            return Ok(list);
        }
        capacity = next;
    }
}

/// Entries that `header.required_size` bytes hold.
fn required_entries(header: &FlowListHeader) -> Option<usize> {
    let required = usize::try_from(header.required_size).ok()?;
    let body = required.checked_sub(FlowListHeader::SIZE)?;
    Some(body.div_ceil(FlowEntry::SIZE))
}

#[cfg(test)]
pub(crate) mod sim {
    //! A simulated driver: validates every request with the driver's own
    //! `parse_request` and answers exactly as the protocol specifies.

    use super::*;
    use crate::exit::code;
    use wfpmon_core::protocol::{Header, Request, RequestError, parse_request};

    #[derive(Debug)]
    pub struct SimDriver {
        pub flows: Vec<FlowEntry>,
        pub stats: Stats,
        pub counting: bool,
        /// Flows appearing before each `LIST_FLOWS` call.
        pub growth_per_call: usize,
        /// Answer with this protocol version.
        pub version: u32,
        pub list_calls: usize,
        pub buffer_sizes: Vec<usize>,
    }

    impl Default for SimDriver {
        fn default() -> Self {
            Self {
                flows: Vec::new(),
                stats: Stats::default(),
                counting: true,
                growth_per_call: 0,
                version: protocol::PROTOCOL_VERSION,
                list_calls: 0,
                buffer_sizes: Vec::new(),
            }
        }
    }

    pub fn flow(i: u64) -> FlowEntry {
        FlowEntry {
            flow_id: 0x1000 + i,
            process_id: 4 + i,
            age_ms: 1000 * i,
            bytes_inbound: 100 * i,
            bytes_outbound: 10 * i,
            packets_inbound: i,
            packets_outbound: i / 2,
            local_address: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_address: [192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            local_port: 50000,
            remote_port: 443,
            address_family: 2,
            ip_protocol: 6,
            direction: 0,
        }
    }

    /// The Win32 error the I/O manager reports for a failed request.
    fn win32_of(e: RequestError) -> u32 {
        match e {
            RequestError::UnknownCode(_) => code::ERROR_INVALID_FUNCTION,
            RequestError::InputSize { .. } => code::ERROR_INVALID_USER_BUFFER,
            RequestError::Version(_) => code::ERROR_REVISION_MISMATCH,
            RequestError::HeaderSize(_) | RequestError::InvalidField => {
                code::ERROR_INVALID_PARAMETER
            }
            RequestError::OutputTooSmall { .. } => code::ERROR_INSUFFICIENT_BUFFER,
            RequestError::CountOverflow => code::ERROR_ARITHMETIC_OVERFLOW,
        }
    }

    impl ControlDevice for SimDriver {
        fn ioctl(
            &mut self,
            code: u32,
            input: &[u8],
            output: &mut [u8],
        ) -> Result<usize, IoctlError> {
            let request = parse_request(code, input, output.len())
                .map_err(|e| IoctlError::Failed(SystemCode::Win32(win32_of(e))))?;
            match request {
                Request::QueryStats => {
                    let n = self.stats.encode(output);
                    output[..4].copy_from_slice(&self.version.to_le_bytes());
                    Ok(n)
                }
                Request::SetCounting { enable } => {
                    self.counting = enable;
                    Ok(0)
                }
                Request::ListFlows { capacity } => {
                    self.list_calls += 1;
                    self.buffer_sizes.push(output.len());
                    for _ in 0..self.growth_per_call {
                        let next = self.flows.len() as u64;
                        self.flows.push(flow(next));
                    }
                    let returned = capacity.min(self.flows.len());
                    let header = FlowListHeader {
                        header: Header {
                            version: self.version,
                            size: u32::try_from(protocol::flow_list_size(returned).unwrap())
                                .unwrap(),
                        },
                        total_flows: u32::try_from(self.flows.len()).unwrap(),
                        returned: u32::try_from(returned).unwrap(),
                        entry_size: u32::try_from(FlowEntry::SIZE).unwrap(),
                        reserved: 0,
                        required_size: protocol::flow_list_size(self.flows.len()).unwrap() as u64,
                    };
                    let mut at = header.encode(output);
                    for f in &self.flows[..returned] {
                        at += f.encode(&mut output[at..]);
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
    use crate::exit::code;

    fn driver_with(n: u64) -> SimDriver {
        SimDriver {
            flows: (0..n).map(flow).collect(),
            ..SimDriver::default()
        }
    }

    #[test]
    fn small_list_in_one_call() {
        let mut d = driver_with(5);
        let list = list_flows(&mut d, 0).unwrap();
        assert_eq!(list.entries, d.flows);
        assert_eq!(list.total_flows, 5);
        assert!(!list.truncated());
        assert_eq!(d.list_calls, 1);
    }

    #[test]
    fn empty_list() {
        let mut d = driver_with(0);
        let list = list_flows(&mut d, 0).unwrap();
        assert!(list.entries.is_empty());
        assert!(!list.truncated());
    }

    #[test]
    fn overflow_grows_the_buffer_from_required_size() {
        let n = INITIAL_FLOW_CAPACITY as u64 * 3 + 7;
        let mut d = driver_with(n);
        let list = list_flows(&mut d, 0).unwrap();
        assert_eq!(list.entries.len() as u64, n);
        assert_eq!(list.entries, d.flows);
        assert!(!list.truncated());
        assert_eq!(
            d.list_calls, 2,
            "one partial answer, then one right-sized call"
        );
        assert_eq!(
            d.buffer_sizes[0],
            protocol::flow_list_size(INITIAL_FLOW_CAPACITY).unwrap()
        );
        assert_eq!(
            d.buffer_sizes[1],
            protocol::flow_list_size(usize::try_from(n).unwrap() + FLOW_SLACK).unwrap()
        );
    }

    #[test]
    fn flows_appearing_between_calls_are_absorbed_by_the_slack() {
        let mut d = driver_with(INITIAL_FLOW_CAPACITY as u64 + 1);
        d.growth_per_call = 5;
        let list = list_flows(&mut d, 0).unwrap();
        assert!(!list.truncated());
        assert_eq!(list.entries.len(), d.flows.len());
        assert_eq!(d.list_calls, 2);
    }

    #[test]
    fn runaway_growth_ends_with_a_partial_list() {
        let mut d = driver_with(INITIAL_FLOW_CAPACITY as u64 + 1);
        d.growth_per_call = 10 * FLOW_SLACK;
        let list = list_flows(&mut d, 0).unwrap();
        assert_eq!(d.list_calls, MAX_LIST_ATTEMPTS);
        assert!(list.truncated());
        assert_eq!(list.total_flows as usize, d.flows.len());
        assert_eq!(list.entries, d.flows[..list.entries.len()]);
    }

    #[test]
    fn max_entries_limits_the_list_without_retrying() {
        let mut d = driver_with(50);
        let list = list_flows(&mut d, 10).unwrap();
        assert_eq!(list.entries, d.flows[..10]);
        assert_eq!(list.total_flows, 50);
        assert!(list.truncated());
        assert_eq!(d.list_calls, 1);
        assert_eq!(d.buffer_sizes[0], protocol::flow_list_size(10).unwrap());

        let mut d = driver_with(3);
        let list = list_flows(&mut d, 10).unwrap();
        assert_eq!(list.entries.len(), 3);
        assert!(!list.truncated());
    }

    #[test]
    fn max_entries_above_initial_capacity_grows_up_to_the_limit() {
        let mut d = driver_with(1000);
        let list = list_flows(&mut d, 300).unwrap();
        assert_eq!(list.entries.len(), 300);
        assert_eq!(d.list_calls, 2);
        assert_eq!(d.buffer_sizes[1], protocol::flow_list_size(300).unwrap());
    }

    #[test]
    fn version_mismatch_is_a_protocol_error() {
        // A driver speaking the previous protocol version.
        let old = protocol::PROTOCOL_VERSION - 1;
        let mut d = driver_with(2);
        d.version = old;
        let err = list_flows(&mut d, 0).unwrap_err();
        assert_eq!(err.kind, Kind::ProtocolMismatch);
        assert_eq!(err.exit_code(), 7);
        assert!(
            err.message.contains(&format!("version {old}")),
            "{}",
            err.message
        );
        let err = query_stats(&mut d).unwrap_err();
        assert_eq!(err.exit_code(), 7);
    }

    #[test]
    fn driver_rejecting_the_request_is_a_protocol_error() {
        struct OldDriver;
        impl ControlDevice for OldDriver {
            fn ioctl(&mut self, _: u32, _: &[u8], _: &mut [u8]) -> Result<usize, IoctlError> {
                Err(IoctlError::Failed(SystemCode::Win32(
                    code::ERROR_REVISION_MISMATCH,
                )))
            }
        }
        assert_eq!(query_stats(&mut OldDriver).unwrap_err().exit_code(), 7);
        assert_eq!(list_flows(&mut OldDriver, 0).unwrap_err().exit_code(), 7);
        assert_eq!(
            set_counting(&mut OldDriver, true).unwrap_err().exit_code(),
            7
        );
    }

    #[test]
    fn garbage_response_is_a_protocol_error() {
        struct Liar;
        impl ControlDevice for Liar {
            fn ioctl(&mut self, _: u32, _: &[u8], out: &mut [u8]) -> Result<usize, IoctlError> {
                out.fill(0xAB);
                Ok(out.len())
            }
        }
        assert_eq!(
            query_stats(&mut Liar).unwrap_err().kind,
            Kind::ProtocolMismatch
        );
        assert_eq!(
            list_flows(&mut Liar, 0).unwrap_err().kind,
            Kind::ProtocolMismatch
        );
    }

    #[test]
    fn overflow_without_more_room_requested_does_not_loop() {
        // Claims overflow but required_size equals what it returned.
        struct Stuck;
        impl ControlDevice for Stuck {
            fn ioctl(&mut self, _: u32, _: &[u8], out: &mut [u8]) -> Result<usize, IoctlError> {
                let h = FlowListHeader {
                    header: protocol::Header {
                        version: protocol::PROTOCOL_VERSION,
                        size: 32,
                    },
                    total_flows: 1,
                    returned: 0,
                    entry_size: 96,
                    reserved: 0,
                    required_size: 32,
                };
                Err(IoctlError::MoreData(h.encode(out)))
            }
        }
        let list = list_flows(&mut Stuck, 0).unwrap();
        assert!(list.truncated());
    }

    #[test]
    fn access_denied_opening_is_not_elevated() {
        struct Denied;
        impl ControlDevice for Denied {
            fn ioctl(&mut self, _: u32, _: &[u8], _: &mut [u8]) -> Result<usize, IoctlError> {
                Err(IoctlError::Failed(SystemCode::Win32(
                    code::ERROR_ACCESS_DENIED,
                )))
            }
        }
        assert_eq!(set_counting(&mut Denied, false).unwrap_err().exit_code(), 3);
    }

    #[test]
    fn stats_and_counting_round_trip() {
        let mut d = SimDriver::default();
        d.stats.flows_active = 3;
        d.stats.bytes_inbound = u64::MAX;
        d.stats.counting_enabled = 1;
        let s = query_stats(&mut d).unwrap();
        assert_eq!(s.flows_active, 3);
        assert_eq!(s.bytes_inbound, u64::MAX);
        set_counting(&mut d, false).unwrap();
        assert!(!d.counting);
        set_counting(&mut d, true).unwrap();
        assert!(d.counting);
    }
}
