//! The control protocol: the request validator against every kind of bad
//! input (property-tested with random bytes), and encode/decode round trips.

use proptest::prelude::*;
use wfpmon_core::protocol::{
    self, FlowEntry, FlowListHeader, IOCTL_WFPMON_LIST_FLOWS, IOCTL_WFPMON_QUERY_STATS,
    IOCTL_WFPMON_SET_COUNTING, ListFlowsRequest, PROTOCOL_VERSION, QueryStatsRequest, Request,
    RequestError, SetCountingRequest, Stats, parse_request,
};
use wfpmon_core::status::*;

const CODES: [u32; 3] = [
    IOCTL_WFPMON_QUERY_STATS,
    IOCTL_WFPMON_LIST_FLOWS,
    IOCTL_WFPMON_SET_COUNTING,
];

#[test]
fn ioctl_codes_are_buffered_with_the_documented_access() {
    // CTL_CODE(0x8F4D, 0x900, METHOD_BUFFERED, FILE_READ_ACCESS)
    assert_eq!(IOCTL_WFPMON_QUERY_STATS, 0x8F4D_6400);
    assert_eq!(IOCTL_WFPMON_LIST_FLOWS, 0x8F4D_6404);
    // CTL_CODE(0x8F4D, 0x902, METHOD_BUFFERED, FILE_READ_ACCESS | FILE_WRITE_ACCESS)
    assert_eq!(IOCTL_WFPMON_SET_COUNTING, 0x8F4D_E408);
    for code in CODES {
        assert_eq!(code & 3, protocol::METHOD_BUFFERED);
        // DEVICE_TYPE_FROM_CTL_CODE: the vendor range ("Defining I/O
        // Control Codes"), never a Microsoft type such as FILE_DEVICE_NETWORK.
        assert!((0x8000..=0xFFFF).contains(&(code >> 16)), "{code:#x}");
    }
}

#[test]
fn valid_requests_parse() {
    assert_eq!(
        parse_request(
            IOCTL_WFPMON_QUERY_STATS,
            &QueryStatsRequest::new().to_bytes(),
            Stats::SIZE
        ),
        Ok(Request::QueryStats)
    );
    let out = FlowListHeader::SIZE + 3 * FlowEntry::SIZE + 5;
    assert_eq!(
        parse_request(
            IOCTL_WFPMON_LIST_FLOWS,
            &ListFlowsRequest::new(0).to_bytes(),
            out
        ),
        Ok(Request::ListFlows { capacity: 3 })
    );
    assert_eq!(
        parse_request(
            IOCTL_WFPMON_LIST_FLOWS,
            &ListFlowsRequest::new(2).to_bytes(),
            out
        ),
        Ok(Request::ListFlows { capacity: 2 })
    );
    assert_eq!(
        parse_request(
            IOCTL_WFPMON_SET_COUNTING,
            &SetCountingRequest::new(false).to_bytes(),
            0
        ),
        Ok(Request::SetCounting { enable: false })
    );
}

#[test]
fn each_malformation_gets_its_precise_status() {
    let stats = QueryStatsRequest::new().to_bytes();
    let cases: Vec<(u32, Vec<u8>, usize, i32)> = vec![
        (
            0x0012_6410,
            stats.to_vec(),
            4096,
            STATUS_INVALID_DEVICE_REQUEST,
        ),
        (
            IOCTL_WFPMON_QUERY_STATS,
            vec![],
            4096,
            STATUS_INVALID_BUFFER_SIZE,
        ),
        (
            IOCTL_WFPMON_QUERY_STATS,
            vec![1],
            4096,
            STATUS_INVALID_BUFFER_SIZE,
        ),
        (
            IOCTL_WFPMON_QUERY_STATS,
            stats[..7].to_vec(),
            4096,
            STATUS_INVALID_BUFFER_SIZE,
        ),
        (
            IOCTL_WFPMON_QUERY_STATS,
            [&stats[..], &[0]].concat(),
            4096,
            STATUS_INVALID_BUFFER_SIZE,
        ),
        (
            IOCTL_WFPMON_QUERY_STATS,
            stats.to_vec(),
            Stats::SIZE - 1,
            STATUS_BUFFER_TOO_SMALL,
        ),
        (
            IOCTL_WFPMON_QUERY_STATS,
            stats.to_vec(),
            0,
            STATUS_BUFFER_TOO_SMALL,
        ),
    ];
    for (code, input, out, status) in cases {
        let err = parse_request(code, &input, out).unwrap_err();
        assert_eq!(err.ntstatus(), status, "{code:#x} {input:?} {out}: {err:?}");
    }
    // A request of the previous protocol version (1) is refused.
    let mut v = QueryStatsRequest::new().to_bytes();
    v[0] = 1;
    assert_eq!(
        parse_request(IOCTL_WFPMON_QUERY_STATS, &v, 4096),
        Err(RequestError::Version(1))
    );
    let mut v = QueryStatsRequest::new().to_bytes();
    v[4] = 9;
    assert_eq!(
        parse_request(IOCTL_WFPMON_QUERY_STATS, &v, 4096),
        Err(RequestError::HeaderSize(9))
    );
    let mut v = SetCountingRequest::new(true).to_bytes();
    v[8] = 2;
    assert_eq!(
        parse_request(IOCTL_WFPMON_SET_COUNTING, &v, 0).map_err(RequestError::ntstatus),
        Err(STATUS_INVALID_PARAMETER)
    );
    let mut v = ListFlowsRequest::new(1).to_bytes();
    v[12] = 1;
    assert_eq!(
        parse_request(IOCTL_WFPMON_LIST_FLOWS, &v, 4096),
        Err(RequestError::InvalidField)
    );
    let v = ListFlowsRequest::new(u32::MAX).to_bytes();
    assert_eq!(
        parse_request(IOCTL_WFPMON_LIST_FLOWS, &v, 4096).map_err(RequestError::ntstatus),
        Err(STATUS_INTEGER_OVERFLOW)
    );
    let v = ListFlowsRequest::new(0).to_bytes();
    assert_eq!(
        parse_request(IOCTL_WFPMON_LIST_FLOWS, &v, FlowListHeader::SIZE - 1),
        Err(RequestError::OutputTooSmall {
            required: FlowListHeader::SIZE
        })
    );
}

#[test]
fn huge_output_buffers_never_promise_more_than_the_size_field_holds() {
    let v = ListFlowsRequest::new(0).to_bytes();
    let Ok(Request::ListFlows { capacity }) =
        parse_request(IOCTL_WFPMON_LIST_FLOWS, &v, usize::MAX)
    else {
        panic!("huge output buffer refused");
    };
    assert!(protocol::flow_list_size(capacity).is_some());
    assert!(protocol::flow_list_size(capacity + 1).is_none());
}

#[test]
fn stats_round_trip_and_reject_other_versions() {
    let s = Stats {
        counting_enabled: 1,
        flows_active: 3,
        flows_tracked: 10,
        flows_deleted: 7,
        allocation_failures: 1,
        association_failures: 2,
        bytes_inbound: 1000,
        bytes_outbound: 2000,
        packets_inbound: 4,
        packets_outbound: 5,
        ..Stats::default()
    };
    let mut buf = [0u8; Stats::SIZE];
    assert_eq!(s.encode(&mut buf), Stats::SIZE);
    let d = Stats::decode(&buf).unwrap();
    assert_eq!(d.header.version, PROTOCOL_VERSION);
    assert_eq!(
        Stats {
            header: d.header,
            ..s
        },
        d
    );
    buf[0] = 7;
    assert_eq!(Stats::decode(&buf), Err(protocol::DecodeError::Version(7)));
    assert_eq!(
        Stats::decode(&buf[..10]).map(|_| ()),
        Err(protocol::DecodeError::Version(7))
    );
}

fn entry(i: u8) -> FlowEntry {
    FlowEntry {
        flow_id: u64::from(i) * 11,
        process_id: 4,
        age_ms: 99,
        bytes_inbound: 1,
        bytes_outbound: 2,
        packets_inbound: 3,
        packets_outbound: 4,
        local_address: [i; 16],
        remote_address: [i ^ 0xff; 16],
        local_port: 80,
        remote_port: 40000,
        address_family: 23,
        ip_protocol: 6,
        direction: 1,
    }
}

#[test]
fn flow_list_round_trips() {
    let entries: Vec<_> = (0..3).map(entry).collect();
    let size = protocol::flow_list_size(entries.len()).unwrap();
    let mut buf = vec![0u8; size];
    let header = FlowListHeader {
        header: protocol::Header {
            version: PROTOCOL_VERSION,
            size: u32::try_from(size).unwrap(),
        },
        total_flows: 5,
        returned: 3,
        entry_size: u32::try_from(FlowEntry::SIZE).unwrap(),
        reserved: 0,
        required_size: protocol::flow_list_size(5).unwrap() as u64,
    };
    header.encode(&mut buf);
    for (i, e) in entries.iter().enumerate() {
        e.encode(&mut buf[FlowListHeader::SIZE + i * FlowEntry::SIZE..]);
    }
    let (h, it) = protocol::decode_flow_list(&buf).unwrap();
    assert_eq!(h, header);
    assert_eq!(it.collect::<Vec<_>>(), entries);
    assert!(protocol::decode_flow_list(&buf[..size - 1]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Random codes, inputs and output lengths: the parser never panics, and
    /// whatever it accepts is exactly a well-formed request that fits.
    #[test]
    fn parser_accepts_only_well_formed_requests(
        code_pick in 0usize..4,
        raw_code in any::<u32>(),
        input in prop::collection::vec(any::<u8>(), 0..40),
        output_len in prop_oneof![0usize..512, Just(usize::MAX), any::<usize>()],
    ) {
        let code = if code_pick < 3 { CODES[code_pick] } else { raw_code };
        match parse_request(code, &input, output_len) {
            Ok(Request::QueryStats) => {
                prop_assert_eq!(&input[..], &QueryStatsRequest::new().to_bytes()[..]);
                prop_assert!(output_len >= Stats::SIZE);
            }
            Ok(Request::ListFlows { capacity }) => {
                prop_assert_eq!(input.len(), ListFlowsRequest::SIZE);
                let max = u32::from_le_bytes(input[8..12].try_into().unwrap());
                prop_assert_eq!(&input[..], &ListFlowsRequest::new(max).to_bytes()[..]);
                prop_assert!(FlowListHeader::SIZE + capacity * FlowEntry::SIZE <= output_len);
                prop_assert!(max == 0 || capacity <= max as usize);
            }
            Ok(Request::SetCounting { enable }) => {
                prop_assert_eq!(&input[..], &SetCountingRequest::new(enable).to_bytes()[..]);
            }
            Err(e) => {
                prop_assert!(e.ntstatus() < 0, "an error must be an NTSTATUS error code");
            }
        }
    }

    /// Well-formed requests with a random header mutation are refused.
    #[test]
    fn corrupted_headers_are_refused(which in 0usize..3, byte in 0usize..8, value in any::<u8>()) {
        let mut req = match which {
            0 => QueryStatsRequest::new().to_bytes().to_vec(),
            1 => ListFlowsRequest::new(0).to_bytes().to_vec(),
            _ => SetCountingRequest::new(true).to_bytes().to_vec(),
        };
        prop_assume!(req[byte] != value);
        req[byte] = value;
        prop_assert!(parse_request(CODES[which], &req, 4096).is_err());
    }

    /// Decoders never panic on arbitrary bytes.
    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = Stats::decode(&bytes);
        let _ = FlowListHeader::decode(&bytes);
        if let Ok((h, it)) = protocol::decode_flow_list(&bytes) {
            prop_assert_eq!(it.count(), h.returned as usize);
        }
    }
}
