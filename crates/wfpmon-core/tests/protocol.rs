//! The control protocol: the request validator against every kind of bad
//! input (property-tested with random bytes), and encode/decode round trips.

use proptest::prelude::*;
use wfpmon_core::protocol::{
    self, EventsHeader, FlowEntry, FlowListHeader, IOCTL_WFPMON_LIST_FLOWS,
    IOCTL_WFPMON_LIST_PROCESSES, IOCTL_WFPMON_QUERY_STATS, IOCTL_WFPMON_READ_EVENTS,
    IOCTL_WFPMON_SET_COUNTING, ListFlowsRequest, ListProcessesRequest, PROTOCOL_VERSION,
    ProcessEntry, ProcessListHeader, QueryStatsRequest, ReadEventsRequest, Request, RequestError,
    SetCountingRequest, Stats, parse_request,
};
use wfpmon_core::status::*;

const CODES: [u32; 5] = [
    IOCTL_WFPMON_QUERY_STATS,
    IOCTL_WFPMON_LIST_FLOWS,
    IOCTL_WFPMON_SET_COUNTING,
    IOCTL_WFPMON_READ_EVENTS,
    IOCTL_WFPMON_LIST_PROCESSES,
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
        Ok(Request::QueryStats {
            live_traffic: false
        })
    );
    assert_eq!(
        parse_request(
            IOCTL_WFPMON_QUERY_STATS,
            &QueryStatsRequest::with_live_traffic().to_bytes(),
            Stats::SIZE
        ),
        Ok(Request::QueryStats { live_traffic: true })
    );
    let out = FlowListHeader::SIZE + 3 * FlowEntry::SIZE + 5;
    assert_eq!(
        parse_request(
            IOCTL_WFPMON_LIST_FLOWS,
            &ListFlowsRequest::new(0).to_bytes(),
            out
        ),
        Ok(Request::ListFlows {
            capacity: 3,
            cursor_bucket: 0,
            cursor_seq: 0
        })
    );
    assert_eq!(
        parse_request(
            IOCTL_WFPMON_LIST_FLOWS,
            &ListFlowsRequest::new(2).to_bytes(),
            out
        ),
        Ok(Request::ListFlows {
            capacity: 2,
            cursor_bucket: 0,
            cursor_seq: 0
        })
    );
    // A cursor is carried through; one outside the registry is refused.
    assert_eq!(
        parse_request(
            IOCTL_WFPMON_LIST_FLOWS,
            &ListFlowsRequest::resume(2, 17, 99).to_bytes(),
            out
        ),
        Ok(Request::ListFlows {
            capacity: 2,
            cursor_bucket: 17,
            cursor_seq: 99
        })
    );
    assert_eq!(
        parse_request(
            IOCTL_WFPMON_LIST_FLOWS,
            &ListFlowsRequest::resume(2, protocol::LIST_BUCKETS, 0).to_bytes(),
            out
        ),
        Err(RequestError::InvalidField)
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

/// Protocol 5's statistics request: protocol 4's header-only request, an
/// unknown flag and a reserved field that is not zero are refused.
#[test]
fn statistics_requests_of_another_shape_are_refused() {
    let stats = QueryStatsRequest::new().to_bytes();
    let cases: [(Vec<u8>, i32); 3] = [
        (stats[..8].to_vec(), STATUS_INVALID_BUFFER_SIZE),
        (
            [&stats[..8], &2u32.to_le_bytes()[..], &[0; 4]].concat(),
            STATUS_INVALID_PARAMETER,
        ),
        (
            [
                &stats[..8],
                &1u32.to_le_bytes()[..],
                &1u32.to_le_bytes()[..],
            ]
            .concat(),
            STATUS_INVALID_PARAMETER,
        ),
    ];
    for (input, status) in cases {
        let err = parse_request(IOCTL_WFPMON_QUERY_STATS, &input, 4096).unwrap_err();
        assert_eq!(err.ntstatus(), status, "{input:?}: {err:?}");
    }
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
    v[20] = 1; // reserved
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
fn a_batch_is_bounded_whatever_the_buffer() {
    let v = ListFlowsRequest::new(0).to_bytes();
    let Ok(Request::ListFlows { capacity, .. }) =
        parse_request(IOCTL_WFPMON_LIST_FLOWS, &v, usize::MAX)
    else {
        panic!("huge output buffer refused");
    };
    assert_eq!(capacity, protocol::MAX_FLOWS_PER_CALL);
    let v = ListFlowsRequest::new(100_000).to_bytes();
    let Ok(Request::ListFlows { capacity, .. }) =
        parse_request(IOCTL_WFPMON_LIST_FLOWS, &v, 1 << 30)
    else {
        panic!("refused");
    };
    assert_eq!(capacity, protocol::MAX_FLOWS_PER_CALL);
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
        process_key: (7 << 32) | u64::from(i),
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
        flags: protocol::FLOW_LIST_MORE,
        next_bucket: 12,
        next_seq: 345,
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
        code_pick in 0usize..6,
        raw_code in any::<u32>(),
        input in prop::collection::vec(any::<u8>(), 0..40),
        output_len in prop_oneof![0usize..512, Just(usize::MAX), any::<usize>()],
    ) {
        let code = CODES.get(code_pick).copied().unwrap_or(raw_code);
        match parse_request(code, &input, output_len) {
            Ok(Request::QueryStats { live_traffic }) => {
                let expected = if live_traffic { QueryStatsRequest::with_live_traffic() } else { QueryStatsRequest::new() };
                prop_assert_eq!(&input[..], &expected.to_bytes()[..]);
                prop_assert!(output_len >= Stats::SIZE);
            }
            Ok(Request::ListFlows { capacity, cursor_bucket, cursor_seq }) => {
                prop_assert_eq!(input.len(), ListFlowsRequest::SIZE);
                let max = u32::from_le_bytes(input[8..12].try_into().unwrap());
                prop_assert_eq!(&input[..], &ListFlowsRequest::resume(max, cursor_bucket, cursor_seq).to_bytes()[..]);
                prop_assert!(FlowListHeader::SIZE + capacity * FlowEntry::SIZE <= output_len);
                prop_assert!(max == 0 || capacity <= max as usize);
                prop_assert!(capacity <= protocol::MAX_FLOWS_PER_CALL);
                prop_assert!(cursor_bucket < protocol::LIST_BUCKETS);
            }
            Ok(Request::SetCounting { enable }) => {
                prop_assert_eq!(&input[..], &SetCountingRequest::new(enable).to_bytes()[..]);
            }
            Ok(Request::ReadEvents { capacity, cursor, wait }) => {
                let max = u32::from_le_bytes(input[8..12].try_into().unwrap());
                prop_assert_eq!(&input[..], &ReadEventsRequest::new(max, cursor, wait).to_bytes()[..]);
                prop_assert!(capacity >= 1);
                prop_assert!(EventsHeader::SIZE + capacity * wfpmon_core::events::FlowEvent::SIZE <= output_len);
                prop_assert!(max == 0 || capacity <= max as usize);
                prop_assert!(capacity <= protocol::MAX_EVENTS_PER_CALL);
            }
            Ok(Request::ListProcesses { capacity, cursor_slot }) => {
                let max = u32::from_le_bytes(input[8..12].try_into().unwrap());
                prop_assert_eq!(&input[..], &ListProcessesRequest::new(max, cursor_slot).to_bytes()[..]);
                prop_assert!(capacity >= 1);
                prop_assert!(ProcessListHeader::SIZE + capacity * ProcessEntry::SIZE <= output_len);
                prop_assert!(max == 0 || capacity <= max as usize);
                prop_assert!(capacity <= protocol::MAX_PROCESSES_PER_CALL);
                prop_assert!(cursor_slot < protocol::PROCESS_SLOTS);
            }
            Err(e) => {
                prop_assert!(e.ntstatus() < 0, "an error must be an NTSTATUS error code");
            }
        }
    }

    /// Well-formed requests with a random header mutation are refused.
    #[test]
    fn corrupted_headers_are_refused(which in 0usize..5, byte in 0usize..8, value in any::<u8>()) {
        let mut req = match which {
            0 => QueryStatsRequest::new().to_bytes().to_vec(),
            1 => ListFlowsRequest::new(0).to_bytes().to_vec(),
            2 => SetCountingRequest::new(true).to_bytes().to_vec(),
            3 => ReadEventsRequest::new(0, 0, true).to_bytes().to_vec(),
            _ => ListProcessesRequest::new(0, 0).to_bytes().to_vec(),
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
        if let Ok((h, it)) = EventsHeader::decode(&bytes) {
            prop_assert_eq!(it.count(), h.returned as usize);
        }
        if let Ok((h, it)) = ProcessListHeader::decode(&bytes) {
            prop_assert_eq!(it.count(), h.returned as usize);
        }
    }
}

#[test]
fn event_and_process_requests_are_validated_precisely() {
    let ok = ReadEventsRequest::new(0, 5, true).to_bytes();
    let one = EventsHeader::SIZE + wfpmon_core::events::FlowEvent::SIZE;
    assert_eq!(
        parse_request(IOCTL_WFPMON_READ_EVENTS, &ok, one - 1),
        Err(RequestError::OutputTooSmall { required: one })
    );
    assert_eq!(
        parse_request(IOCTL_WFPMON_READ_EVENTS, &ok, 1 << 20),
        Ok(Request::ReadEvents {
            capacity: protocol::MAX_EVENTS_PER_CALL,
            cursor: 5,
            wait: true
        })
    );
    let mut bad_flags = ok;
    bad_flags[12] = 2;
    assert_eq!(
        parse_request(IOCTL_WFPMON_READ_EVENTS, &bad_flags, 4096).map_err(RequestError::ntstatus),
        Err(STATUS_INVALID_PARAMETER)
    );
    let procs = ListProcessesRequest::new(3, protocol::PROCESS_SLOTS).to_bytes();
    assert_eq!(
        parse_request(IOCTL_WFPMON_LIST_PROCESSES, &procs, 1 << 20),
        Err(RequestError::InvalidField)
    );
    let procs = ListProcessesRequest::new(3, 10).to_bytes();
    assert_eq!(
        parse_request(IOCTL_WFPMON_LIST_PROCESSES, &procs, 1 << 20),
        Ok(Request::ListProcesses {
            capacity: 3,
            cursor_slot: 10
        })
    );
    assert_eq!(
        parse_request(IOCTL_WFPMON_LIST_PROCESSES, &procs[..15], 1 << 20)
            .map_err(RequestError::ntstatus),
        Err(STATUS_INVALID_BUFFER_SIZE)
    );
}

#[test]
fn event_and_process_responses_round_trip() {
    use wfpmon_core::events::FlowEvent;
    let events: Vec<FlowEvent> = (0..3u8)
        .map(|i| FlowEvent {
            seq: u64::from(i) + 40,
            kind: 1 + i % 2,
            process_id: 1234,
            process_key: 9 << 32 | 3,
            local_address: [i; 16],
            bytes_inbound: 7,
            established: 99,
            ..FlowEvent::default()
        })
        .collect();
    let size = EventsHeader::SIZE + events.len() * FlowEvent::SIZE;
    let mut buf = vec![0u8; size];
    let header = EventsHeader {
        header: protocol::Header {
            version: PROTOCOL_VERSION,
            size: u32::try_from(size).unwrap(),
        },
        returned: 3,
        event_size: 128,
        next: 43,
        dropped: 17,
        oldest: 40,
        now: 123_456,
    };
    header.encode(&mut buf);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.encode(&mut buf[EventsHeader::SIZE + i * FlowEvent::SIZE..]),
            FlowEvent::SIZE
        );
    }
    let (h, it) = EventsHeader::decode(&buf).unwrap();
    assert_eq!(h, header);
    assert_eq!(it.collect::<Vec<_>>(), events);
    assert!(EventsHeader::decode(&buf[..size - 1]).is_err());

    let mut path = [0u16; wfpmon_core::process::PATH_UNITS];
    for (d, s) in path.iter_mut().zip("\\device\\x\\app.exe".encode_utf16()) {
        *d = s;
    }
    let entry = ProcessEntry {
        key: 5 << 32 | 0x11,
        process_id: 808,
        flags: 4,
        path_units: 17,
        active_flows: 2,
        reserved: 0,
        flows_total: 9,
        first_seen: 1,
        last_seen: 2,
        active: [1, 2, 3, 4],
        ended: [5, 6, 7, 8],
        path,
    };
    let size = ProcessListHeader::SIZE + ProcessEntry::SIZE;
    let mut buf = vec![0u8; size];
    let header = ProcessListHeader {
        header: protocol::Header {
            version: PROTOCOL_VERSION,
            size: u32::try_from(size).unwrap(),
        },
        returned: 1,
        entry_size: u32::try_from(ProcessEntry::SIZE).unwrap(),
        flags: protocol::PROCESS_LIST_MORE,
        next_slot: 18,
        now: 77,
        capacity: 1024,
        reserved: 0,
        evictions: 3,
        unattributed_flows: 4,
    };
    header.encode(&mut buf);
    assert_eq!(
        entry.encode(&mut buf[ProcessListHeader::SIZE..]),
        ProcessEntry::SIZE
    );
    let (h, mut it) = ProcessListHeader::decode(&buf).unwrap();
    assert_eq!(h, header);
    let back = it.next().unwrap();
    assert_eq!(back, entry);
    assert_eq!(
        String::from_utf16_lossy(back.path()),
        "\\device\\x\\app.exe"
    );
    let mut wrong = buf.clone();
    wrong[0] = 3;
    assert_eq!(
        ProcessListHeader::decode(&wrong).map(|_| ()),
        Err(protocol::DecodeError::Version(3))
    );
}
