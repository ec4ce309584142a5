//! IPFIX messages (RFC 7011): the two data templates (IPv4, IPv6), the
//! encoder that packs records into messages no larger than the MTU, and a
//! decoder (used by the tests and the test-side TCP collector).
//!
//! Hand-written: the IPFIX crates on crates.io are collectors' parsers
//! (`netflow_parser`, `ipfixrw`'s readers) that bring no exporter with
//! templates, MTU packing and the RFC's sequence numbering; the encoding
//! itself is a few big-endian fields.
//!
//! Each record is a biflow (RFC 5103): the source is the flow's initiator
//! (the local endpoint of an outbound flow, the remote one of an inbound
//! flow), `octetDeltaCount`/`packetDeltaCount` count the initiator's
//! traffic and the reverse elements (the same numbers under PEN 29305) the
//! responder's. nfdump 1.7 shows them as "in" and "out" bytes and packets of
//! one flow line (checked against Debian's nfcapd; see the README).

use std::collections::HashMap;

/// IPFIX version number in the message header.
pub const VERSION: u16 = 10;
/// Size of the message header.
pub const HEADER_LEN: usize = 16;
/// Set id of template sets.
pub const TEMPLATE_SET_ID: u16 = 2;
/// Set id of options template sets.
pub const OPTIONS_TEMPLATE_SET_ID: u16 = 3;
/// Template id of the IPv4 data template.
pub const TEMPLATE_V4: u16 = 256;
/// Template id of the IPv6 data template.
pub const TEMPLATE_V6: u16 = 257;
/// "Variable length" in a field specifier.
pub const VARIABLE: u16 = 0xFFFF;
/// The reverse-element PEN of RFC 5103 (IANA's "reverse information
/// element private enterprise number").
pub const REVERSE_PEN: u32 = 29305;
/// Private Enterprise Number reserved for documentation (RFC 5612); the
/// default of [`Templates::new`]'s `pen` (configurable).
pub const DOCUMENTATION_PEN: u32 = 32473;

/// IANA information element numbers used here.
pub mod ie {
    /// octetDeltaCount (unsigned64).
    pub const OCTET_DELTA_COUNT: u16 = 1;
    /// packetDeltaCount (unsigned64).
    pub const PACKET_DELTA_COUNT: u16 = 2;
    /// protocolIdentifier (unsigned8).
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    /// sourceTransportPort (unsigned16).
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    /// sourceIPv4Address.
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    /// destinationTransportPort.
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    /// destinationIPv4Address.
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    /// sourceIPv6Address.
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    /// destinationIPv6Address.
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    /// flowDirection (0 ingress, 1 egress).
    pub const FLOW_DIRECTION: u16 = 61;
    /// applicationName (string): the process's image file name.
    pub const APPLICATION_NAME: u16 = 96;
    /// flowEndReason (unsigned8).
    pub const FLOW_END_REASON: u16 = 136;
    /// flowId (unsigned64): the filter engine's flow handle.
    pub const FLOW_ID: u16 = 148;
    /// observationDomainId (unsigned32).
    pub const OBSERVATION_DOMAIN_ID: u16 = 149;
    /// flowStartMilliseconds (dateTimeMilliseconds).
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    /// flowEndMilliseconds.
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    /// Enterprise-specific (under the configured PEN): process id (unsigned32).
    pub const PEN_PROCESS_ID: u16 = 1;
    /// Enterprise-specific: the process's full image path (string, UTF-8).
    pub const PEN_PROCESS_PATH: u16 = 2;
}

/// flowEndReason values (IANA "flowEndReason" sub-registry).
///
/// Idle timeout
/// (1) is never sent: the driver has no idle timer — a flow ends when the
/// TCP/IP stack deletes it (the WFP flow-delete callback), and the "ended"
/// event does not say whether the stack deleted it after a FIN/RST or after
/// its own idle timeout (UDP), so every such end is "end of flow detected"
/// (README, "Templates").
pub mod end_reason {
    /// active timeout (the flow goes on; a delta record).
    pub const ACTIVE_TIMEOUT: u8 = 2;
    /// end of flow detected.
    pub const END_OF_FLOW: u8 = 3;
    /// forced end (the exporter or the driver stopped).
    pub const FORCED_END: u8 = 4;
    /// lack of resources (the flow's end was learnt by reconciliation after
    /// the driver's event ring overflowed).
    pub const LACK_OF_RESOURCES: u8 = 5;
}

/// One field specifier of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    /// Information element id (without the enterprise bit).
    pub id: u16,
    /// Length in octets, or [`VARIABLE`].
    pub len: u16,
    /// Private Enterprise Number (enterprise-specific elements).
    pub pen: Option<u32>,
}

const fn iana(id: u16, len: u16) -> Field {
    Field { id, len, pen: None }
}

/// One data record to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The engine's flow handle.
    pub flow_id: u64,
    /// IPv6?
    pub v6: bool,
    /// Source address: the initiator's (IPv4 in the first 4 bytes).
    pub source: [u8; 16],
    /// Destination address.
    pub destination: [u8; 16],
    /// Source port.
    pub source_port: u16,
    /// Destination port.
    pub destination_port: u16,
    /// IP protocol.
    pub protocol: u8,
    /// `flowDirection`: 0 ingress (established inbound), 1 egress.
    pub direction: u8,
    /// Payload bytes the initiator sent in this delta.
    pub octets: u64,
    /// Packets the initiator sent in this delta.
    pub packets: u64,
    /// Payload bytes the responder sent (reverse octetDeltaCount).
    pub reverse_octets: u64,
    /// Packets the responder sent (reverse packetDeltaCount).
    pub reverse_packets: u64,
    /// Start of the interval (Unix ms).
    pub start_ms: u64,
    /// End of the interval (Unix ms).
    pub end_ms: u64,
    /// [`end_reason`].
    pub end_reason: u8,
    /// Process id (0: unknown).
    pub pid: u32,
    /// Image file name ("" unknown).
    pub app_name: String,
    /// Full image path ("" unknown).
    pub app_path: String,
}

/// The templates of one exporter.
#[derive(Clone, Debug)]
pub struct Templates {
    v4: Vec<Field>,
    v6: Vec<Field>,
}

impl Templates {
    /// The IPv4 and IPv6 templates, with the process elements under `pen`.
    #[must_use]
    pub fn new(pen: u32) -> Self {
        let make = |src: u16, dst: u16, alen: u16| {
            vec![
                iana(ie::FLOW_START_MILLISECONDS, 8),
                iana(ie::FLOW_END_MILLISECONDS, 8),
                iana(ie::OCTET_DELTA_COUNT, 8),
                iana(ie::PACKET_DELTA_COUNT, 8),
                Field {
                    id: ie::OCTET_DELTA_COUNT,
                    len: 8,
                    pen: Some(REVERSE_PEN),
                },
                Field {
                    id: ie::PACKET_DELTA_COUNT,
                    len: 8,
                    pen: Some(REVERSE_PEN),
                },
                iana(ie::FLOW_ID, 8),
                iana(src, alen),
                iana(dst, alen),
                iana(ie::SOURCE_TRANSPORT_PORT, 2),
                iana(ie::DESTINATION_TRANSPORT_PORT, 2),
                iana(ie::OBSERVATION_DOMAIN_ID, 4),
                Field {
                    id: ie::PEN_PROCESS_ID,
                    len: 4,
                    pen: Some(pen),
                },
                iana(ie::PROTOCOL_IDENTIFIER, 1),
                iana(ie::FLOW_DIRECTION, 1),
                iana(ie::FLOW_END_REASON, 1),
                iana(ie::APPLICATION_NAME, VARIABLE),
                Field {
                    id: ie::PEN_PROCESS_PATH,
                    len: VARIABLE,
                    pen: Some(pen),
                },
            ]
        };
        Self {
            v4: make(ie::SOURCE_IPV4_ADDRESS, ie::DESTINATION_IPV4_ADDRESS, 4),
            v6: make(ie::SOURCE_IPV6_ADDRESS, ie::DESTINATION_IPV6_ADDRESS, 16),
        }
    }

    /// The fields of template `id` ([`TEMPLATE_V4`] or [`TEMPLATE_V6`]).
    #[must_use]
    pub fn fields(&self, id: u16) -> &[Field] {
        if id == TEMPLATE_V6 {
            &self.v6
        } else {
            &self.v4
        }
    }

    /// The template set carrying both templates.
    #[must_use]
    pub fn template_set(&self) -> Vec<u8> {
        let mut set = vec![0, 0, 0, 0];
        for (id, fields) in [(TEMPLATE_V4, &self.v4), (TEMPLATE_V6, &self.v6)] {
            put16(&mut set, id);
            put16(&mut set, u16::try_from(fields.len()).unwrap_or(u16::MAX));
            for f in fields {
                if let Some(pen) = f.pen {
                    put16(&mut set, f.id | 0x8000);
                    put16(&mut set, f.len);
                    put32(&mut set, pen);
                } else {
                    put16(&mut set, f.id);
                    put16(&mut set, f.len);
                }
            }
        }
        finish_set(&mut set, TEMPLATE_SET_ID);
        set
    }
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_be_bytes());
}
fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_be_bytes());
}

fn finish_set(set: &mut [u8], id: u16) {
    set[0..2].copy_from_slice(&id.to_be_bytes());
    let len = u16::try_from(set.len()).unwrap_or(u16::MAX);
    set[2..4].copy_from_slice(&len.to_be_bytes());
}

/// A string field, RFC 7011 §7 variable-length encoding, cut at `max`
/// bytes (on a character boundary).
fn put_string(v: &mut Vec<u8>, s: &str, max: usize) {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &s.as_bytes()[..end];
    if bytes.len() < 255 {
        v.push(u8::try_from(bytes.len()).unwrap_or(0));
    } else {
        v.push(255);
        put16(v, u16::try_from(bytes.len()).unwrap_or(u16::MAX));
    }
    v.extend_from_slice(bytes);
}

/// Longest string field written (image paths are at most 260 UTF-16
/// units in the driver; UTF-8 can triple that).
pub const MAX_STRING: usize = 1024;

/// Encodes `r` as a data record of `fields`.
fn put_record(v: &mut Vec<u8>, fields: &[Field], r: &Record, domain: u32) {
    for f in fields {
        if f.pen == Some(REVERSE_PEN) {
            put64(
                v,
                if f.id == ie::OCTET_DELTA_COUNT {
                    r.reverse_octets
                } else {
                    r.reverse_packets
                },
            );
            continue;
        }
        match (f.pen.is_some(), f.id) {
            (false, ie::FLOW_START_MILLISECONDS) => put64(v, r.start_ms),
            (false, ie::FLOW_END_MILLISECONDS) => put64(v, r.end_ms),
            (false, ie::OCTET_DELTA_COUNT) => put64(v, r.octets),
            (false, ie::PACKET_DELTA_COUNT) => put64(v, r.packets),
            (false, ie::FLOW_ID) => put64(v, r.flow_id),
            (false, ie::SOURCE_IPV4_ADDRESS) => v.extend_from_slice(&r.source[..4]),
            (false, ie::DESTINATION_IPV4_ADDRESS) => v.extend_from_slice(&r.destination[..4]),
            (false, ie::SOURCE_IPV6_ADDRESS) => v.extend_from_slice(&r.source),
            (false, ie::DESTINATION_IPV6_ADDRESS) => v.extend_from_slice(&r.destination),
            (false, ie::SOURCE_TRANSPORT_PORT) => put16(v, r.source_port),
            (false, ie::DESTINATION_TRANSPORT_PORT) => put16(v, r.destination_port),
            (false, ie::OBSERVATION_DOMAIN_ID) => put32(v, domain),
            (false, ie::PROTOCOL_IDENTIFIER) => v.push(r.protocol),
            (false, ie::FLOW_DIRECTION) => v.push(r.direction),
            (false, ie::FLOW_END_REASON) => v.push(r.end_reason),
            (false, ie::APPLICATION_NAME) => put_string(v, &r.app_name, MAX_STRING),
            (true, ie::PEN_PROCESS_ID) => put32(v, r.pid),
            (true, ie::PEN_PROCESS_PATH) => put_string(v, &r.app_path, MAX_STRING),
            // Every field of `Templates` is handled above.
            _ => v.resize(v.len() + usize::from(f.len), 0),
        }
    }
}

/// Upper bound of a record's encoded size.
fn record_bound(r: &Record) -> usize {
    8 * 7
        + 32
        + 4
        + 4
        + 4
        + 3
        + 2 * 3
        + r.app_name.len().min(MAX_STRING)
        + r.app_path.len().min(MAX_STRING)
}

/// When templates are sent again over UDP (RFC 7011 §8.4): after
/// `interval_ms` of export time, or after `messages` messages, whichever
/// comes first (0 disables that bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refresh {
    /// Milliseconds between template sends.
    pub interval_ms: u64,
    /// Messages between template sends.
    pub messages: u64,
}

/// One encoded message and the data records in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The message.
    pub bytes: Vec<u8>,
    /// Data records it carries.
    pub records: u32,
    /// It carries the templates (UDP: if it is lost, the next message must
    /// carry them again, or the collector cannot read the data that follows).
    pub templates: bool,
}

/// Packs records into messages.
#[derive(Debug)]
pub struct Encoder {
    templates: Templates,
    template_set: Vec<u8>,
    domain: u32,
    mtu: usize,
    refresh: Refresh,
    /// Data records sent so far (mod 2^32): the next header's sequence number.
    sequence: u32,
    last_templates_ms: Option<u64>,
    messages_since_templates: u64,
    /// Messages made.
    pub messages: u64,
    /// Records encoded.
    pub records: u64,
}

impl Encoder {
    /// An encoder for observation domain `domain`, messages of at most `mtu`
    /// bytes (at least 512).
    #[must_use]
    pub fn new(templates: Templates, domain: u32, mtu: usize, refresh: Refresh) -> Self {
        let template_set = templates.template_set();
        Self {
            templates,
            template_set,
            domain,
            mtu: mtu.max(512),
            refresh,
            sequence: 0,
            last_templates_ms: None,
            messages_since_templates: 0,
            messages: 0,
            records: 0,
        }
    }

    /// The sequence number the next message will carry.
    #[must_use]
    pub const fn sequence(&self) -> u32 {
        self.sequence
    }

    /// A message with the templates only (sent when a TCP connection opens),
    /// with the current sequence number.
    #[must_use]
    pub fn template_message(&self, now_ms: u64) -> Vec<u8> {
        let mut m = self.header(now_ms);
        m.extend_from_slice(&self.template_set);
        finish_message(&mut m);
        m
    }

    fn header(&self, now_ms: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.mtu);
        put16(&mut m, VERSION);
        put16(&mut m, 0);
        put32(&mut m, u32::try_from(now_ms / 1000).unwrap_or(u32::MAX));
        put32(&mut m, self.sequence);
        put32(&mut m, self.domain);
        m
    }

    /// The templates sent last did not reach the collector: the next
    /// message carries them.
    pub const fn templates_lost(&mut self) {
        self.last_templates_ms = None;
    }

    const fn templates_due(&self, now_ms: u64) -> bool {
        let Some(last) = self.last_templates_ms else {
            return true;
        };
        (self.refresh.interval_ms > 0 && now_ms.saturating_sub(last) >= self.refresh.interval_ms)
            || (self.refresh.messages > 0 && self.messages_since_templates >= self.refresh.messages)
    }

    /// Encodes `records` into messages appended to `out`; with
    /// `with_templates` (UDP), the templates go first whenever the refresh
    /// schedule says so. Every message is at most the MTU (a record larger
    /// than a message cannot be: strings are cut at [`MAX_STRING`] and the
    /// MTU is at least 512... so a huge path is cut further to fit).
    pub fn encode(
        &mut self,
        records: &[Record],
        now_ms: u64,
        with_templates: bool,
        out: &mut Vec<Encoded>,
    ) {
        let mut i = 0;
        while i < records.len() {
            let mut m = self.header(now_ms);
            let templates = with_templates && self.templates_due(now_ms);
            if templates {
                m.extend_from_slice(&self.template_set);
                self.last_templates_ms = Some(now_ms);
                self.messages_since_templates = 0;
            }
            let mut count = 0u32;
            let mut set_start: Option<(usize, u16)> = None;
            while i < records.len() {
                let r = &records[i];
                let id = if r.v6 { TEMPLATE_V6 } else { TEMPLATE_V4 };
                let opening = set_start.is_none_or(|(_, t)| t != id);
                let need = record_bound(r) + if opening { 4 } else { 0 };
                if m.len() + need > self.mtu {
                    if count > 0 {
                        break;
                    }
                    // A single record too large for an empty message: its
                    // strings are cut to what fits.
                    let room = self.mtu.saturating_sub(
                        m.len()
                            + 4
                            + record_bound(&Record {
                                app_name: String::new(),
                                app_path: String::new(),
                                ..r.clone()
                            }),
                    );
                    let mut cut = r.clone();
                    cut.app_name = truncate(&r.app_name, room / 2);
                    cut.app_path = truncate(&r.app_path, room / 2);
                    if let Some((start, t)) = set_start.take() {
                        finish_set(&mut m[start..], t);
                    }
                    let start = m.len();
                    m.extend_from_slice(&[0; 4]);
                    put_record(&mut m, self.templates.fields(id), &cut, self.domain);
                    finish_set(&mut m[start..], id);
                    count = 1;
                    i += 1;
                    break;
                }
                if opening {
                    if let Some((start, t)) = set_start.take() {
                        finish_set(&mut m[start..], t);
                    }
                    set_start = Some((m.len(), id));
                    m.extend_from_slice(&[0; 4]);
                }
                put_record(&mut m, self.templates.fields(id), r, self.domain);
                count += 1;
                i += 1;
            }
            if let Some((start, t)) = set_start.take() {
                finish_set(&mut m[start..], t);
            }
            finish_message(&mut m);
            self.sequence = self.sequence.wrapping_add(count);
            self.records += u64::from(count);
            self.messages += 1;
            self.messages_since_templates += 1;
            out.push(Encoded {
                bytes: m,
                records: count,
                templates,
            });
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn finish_message(m: &mut [u8]) {
    let len = u16::try_from(m.len()).unwrap_or(u16::MAX);
    m[2..4].copy_from_slice(&len.to_be_bytes());
}

// ------------------------------------------------------------------ decoder

/// A decoded field value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An unsigned integer field (1, 2, 4 or 8 octets).
    Unsigned(u64),
    /// Any other field (addresses, strings).
    Bytes(Vec<u8>),
}

/// A decoded data record: (PEN or 0, element id) to value.
pub type Fields = HashMap<(u32, u16), Value>;

/// A decoded message.
#[derive(Clone, Debug, Default)]
pub struct Message {
    /// Export time (s).
    pub export_time: u32,
    /// Sequence number.
    pub sequence: u32,
    /// Observation domain.
    pub domain: u32,
    /// Templates the message defined.
    pub templates: Vec<u16>,
    /// Data records (template id, fields).
    pub records: Vec<(u16, Fields)>,
}

/// Why a message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header or its declared length.
    Truncated,
    /// Not version 10.
    Version(u16),
    /// A set or field overruns its container.
    Malformed(&'static str),
}

/// A collector's template store (per observation domain).
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    templates: HashMap<(u32, u16), Vec<Field>>,
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |a, b| (a << 8) | u64::from(*b))
}

impl Decoder {
    /// Decodes one message; data sets whose template is unknown are skipped.
    ///
    /// # Errors
    /// [`DecodeError`] for a malformed message.
    pub fn decode(&mut self, msg: &[u8]) -> Result<Message, DecodeError> {
        if msg.len() < HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        let version = u16::try_from(be(&msg[0..2])).unwrap_or(0);
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let len = usize::try_from(be(&msg[2..4])).unwrap_or(0);
        if len < HEADER_LEN || len > msg.len() {
            return Err(DecodeError::Truncated);
        }
        let to32 = |b: &[u8]| u32::try_from(be(b)).unwrap_or(0);
        let mut out = Message {
            export_time: to32(&msg[4..8]),
            sequence: to32(&msg[8..12]),
            domain: to32(&msg[12..16]),
            ..Message::default()
        };
        let mut at = HEADER_LEN;
        while at < len {
            if at + 4 > len {
                return Err(DecodeError::Malformed("set header"));
            }
            let id = u16::try_from(be(&msg[at..at + 2])).unwrap_or(0);
            let set_len = usize::try_from(be(&msg[at + 2..at + 4])).unwrap_or(0);
            if set_len < 4 || at + set_len > len {
                return Err(DecodeError::Malformed("set length"));
            }
            let body = &msg[at + 4..at + set_len];
            match id {
                TEMPLATE_SET_ID => {
                    self.templates_of(body, out.domain, &mut out.templates, false)?;
                }
                OPTIONS_TEMPLATE_SET_ID => {
                    self.templates_of(body, out.domain, &mut out.templates, true)?;
                }
                256.. => {
                    if let Some(fields) = self.templates.get(&(out.domain, id)) {
                        decode_records(body, fields, id, &mut out.records)?;
                    }
                }
                _ => {}
            }
            at += set_len;
        }
        Ok(out)
    }

    fn templates_of(
        &mut self,
        body: &[u8],
        domain: u32,
        ids: &mut Vec<u16>,
        options: bool,
    ) -> Result<(), DecodeError> {
        let mut at = 0;
        let bad = DecodeError::Malformed("template");
        // Padding: fewer than 4 bytes left cannot be a template header.
        while at + 4 <= body.len() {
            let id = u16::try_from(be(&body[at..at + 2])).unwrap_or(0);
            let count = usize::try_from(be(&body[at + 2..at + 4])).unwrap_or(0);
            at += if options { 6 } else { 4 };
            let mut fields = Vec::with_capacity(count);
            for _ in 0..count {
                let spec = body.get(at..at + 4).ok_or_else(|| bad.clone())?;
                let raw = u16::try_from(be(&spec[0..2])).unwrap_or(0);
                let len = u16::try_from(be(&spec[2..4])).unwrap_or(0);
                at += 4;
                let pen = if raw & 0x8000 != 0 {
                    let p = body.get(at..at + 4).ok_or_else(|| bad.clone())?;
                    at += 4;
                    Some(u32::try_from(be(p)).unwrap_or(0))
                } else {
                    None
                };
                fields.push(Field {
                    id: raw & 0x7FFF,
                    len,
                    pen,
                });
            }
            if id < 256 {
                return Err(bad);
            }
            self.templates.insert((domain, id), fields);
            ids.push(id);
        }
        Ok(())
    }
}

fn decode_records(
    body: &[u8],
    fields: &[Field],
    id: u16,
    out: &mut Vec<(u16, Fields)>,
) -> Result<(), DecodeError> {
    let min: usize = fields
        .iter()
        .map(|f| {
            if f.len == VARIABLE {
                1
            } else {
                usize::from(f.len)
            }
        })
        .sum();
    let mut at = 0;
    while min > 0 && at + min <= body.len() {
        let mut record = Fields::new();
        for f in fields {
            let len = if f.len == VARIABLE {
                let first = usize::from(*body.get(at).ok_or(DecodeError::Malformed("varlen"))?);
                at += 1;
                if first == 255 {
                    let l = body
                        .get(at..at + 2)
                        .ok_or(DecodeError::Malformed("varlen"))?;
                    at += 2;
                    usize::try_from(be(l)).unwrap_or(0)
                } else {
                    first
                }
            } else {
                usize::from(f.len)
            };
            let bytes = body
                .get(at..at + len)
                .ok_or(DecodeError::Malformed("field"))?;
            at += len;
            let is_number = f.len != VARIABLE && matches!(len, 1 | 2 | 4 | 8) && !is_address(f);
            let value = if is_number {
                Value::Unsigned(be(bytes))
            } else {
                Value::Bytes(bytes.to_vec())
            };
            record.insert((f.pen.unwrap_or(0), f.id), value);
        }
        out.push((id, record));
    }
    Ok(())
}

const fn is_address(f: &Field) -> bool {
    f.pen.is_none()
        && matches!(
            f.id,
            ie::SOURCE_IPV4_ADDRESS
                | ie::DESTINATION_IPV4_ADDRESS
                | ie::SOURCE_IPV6_ADDRESS
                | ie::DESTINATION_IPV6_ADDRESS
        )
}

/// The [`Record`] a decoded data record carries (`pen`: the process
/// elements' enterprise number). `None` when a field is missing.
#[must_use]
pub fn record_of(template: u16, f: &Fields, pen: u32) -> Option<Record> {
    let num = |k: (u32, u16)| match f.get(&k) {
        Some(Value::Unsigned(v)) => Some(*v),
        _ => None,
    };
    let bytes = |k: (u32, u16)| match f.get(&k) {
        Some(Value::Bytes(b)) => Some(b.clone()),
        _ => None,
    };
    let v6 = template == TEMPLATE_V6;
    let (s, d) = if v6 {
        (ie::SOURCE_IPV6_ADDRESS, ie::DESTINATION_IPV6_ADDRESS)
    } else {
        (ie::SOURCE_IPV4_ADDRESS, ie::DESTINATION_IPV4_ADDRESS)
    };
    let addr = |b: Vec<u8>| {
        let mut a = [0u8; 16];
        a[..b.len().min(16)].copy_from_slice(&b[..b.len().min(16)]);
        a
    };
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    Some(Record {
        flow_id: num((0, ie::FLOW_ID))?,
        v6,
        source: addr(bytes((0, s))?),
        destination: addr(bytes((0, d))?),
        source_port: u16::try_from(num((0, ie::SOURCE_TRANSPORT_PORT))?).ok()?,
        destination_port: u16::try_from(num((0, ie::DESTINATION_TRANSPORT_PORT))?).ok()?,
        protocol: u8::try_from(num((0, ie::PROTOCOL_IDENTIFIER))?).ok()?,
        direction: u8::try_from(num((0, ie::FLOW_DIRECTION))?).ok()?,
        octets: num((0, ie::OCTET_DELTA_COUNT))?,
        packets: num((0, ie::PACKET_DELTA_COUNT))?,
        reverse_octets: num((REVERSE_PEN, ie::OCTET_DELTA_COUNT))?,
        reverse_packets: num((REVERSE_PEN, ie::PACKET_DELTA_COUNT))?,
        start_ms: num((0, ie::FLOW_START_MILLISECONDS))?,
        end_ms: num((0, ie::FLOW_END_MILLISECONDS))?,
        end_reason: u8::try_from(num((0, ie::FLOW_END_REASON))?).ok()?,
        pid: u32::try_from(num((pen, ie::PEN_PROCESS_ID))?).ok()?,
        app_name: text(bytes((0, ie::APPLICATION_NAME))?),
        app_path: text(bytes((pen, ie::PEN_PROCESS_PATH))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            any::<u64>(),
            any::<bool>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<(u16, u16, u8, bool)>(),
            any::<(u64, u64, u64, u64)>(),
            (0u8..6, any::<u32>(), any::<(u64, u64)>()),
            ("[a-z.]{0,20}", "\\PC{0,300}"),
        )
            .prop_map(
                |(
                    flow_id,
                    v6,
                    mut s,
                    mut d,
                    (sp, dp, proto, sent),
                    (o, p, a, b),
                    (reason, pid, (ro, rp)),
                    (name, path),
                )| {
                    if !v6 {
                        s[4..].fill(0);
                        d[4..].fill(0);
                    }
                    Record {
                        flow_id,
                        v6,
                        source: s,
                        destination: d,
                        source_port: sp,
                        destination_port: dp,
                        protocol: proto,
                        direction: u8::from(sent),
                        octets: o,
                        packets: p,
                        reverse_octets: ro,
                        reverse_packets: rp,
                        start_ms: a.min(b),
                        end_ms: a.max(b),
                        end_reason: reason,
                        pid,
                        app_name: name,
                        app_path: path,
                    }
                },
            )
    }

    #[test]
    fn templates_go_again_after_the_message_carrying_them_was_lost() {
        let refresh = Refresh {
            interval_ms: 60_000,
            messages: 100,
        };
        let mut enc = Encoder::new(Templates::new(DOCUMENTATION_PEN), 1, 1400, refresh);
        let record = Record {
            flow_id: 1,
            v6: false,
            source: [0; 16],
            destination: [0; 16],
            source_port: 1,
            destination_port: 2,
            protocol: 6,
            direction: 1,
            octets: 3,
            packets: 1,
            reverse_octets: 0,
            reverse_packets: 0,
            start_ms: 0,
            end_ms: 1_000,
            end_reason: 3,
            pid: 4,
            app_name: String::new(),
            app_path: String::new(),
        };
        let sent = |enc: &mut Encoder| {
            let mut out = Vec::new();
            enc.encode(std::slice::from_ref(&record), 1_000, true, &mut out);
            out.iter().map(|m| m.templates).collect::<Vec<_>>()
        };
        assert_eq!(sent(&mut enc), [true], "the first message");
        assert_eq!(sent(&mut enc), [false], "not due again yet");
        enc.templates_lost();
        assert_eq!(
            sent(&mut enc),
            [true],
            "again, since the collector never had them"
        );
        assert_eq!(sent(&mut enc), [false]);
    }

    fn roundtrip(records: &[Record], mtu: usize, refresh: Refresh) -> (Vec<Vec<u8>>, Vec<Message>) {
        let mut enc = Encoder::new(Templates::new(DOCUMENTATION_PEN), 77, mtu, refresh);
        let mut out = Vec::new();
        enc.encode(records, 1_700_000_000_123, true, &mut out);
        let mut dec = Decoder::default();
        let msgs: Vec<Message> = out
            .iter()
            .map(|m| dec.decode(&m.bytes).expect("decodes"))
            .collect();
        for (m, d) in out.iter().zip(&msgs) {
            assert_eq!(m.records as usize, d.records.len());
        }
        (out.into_iter().map(|m| m.bytes).collect(), msgs)
    }

    proptest! {
        // 64 cases: each makes up to 120 records with Unicode paths (slow to
        // generate in a debug build); the MTU bound and the sequence rule
        // are exercised by every case.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn records_roundtrip_within_the_mtu_with_rfc_sequence_numbers(
            records in proptest::collection::vec(arb_record(), 0..120),
            mtu in 512usize..9000,
        ) {
            let refresh = Refresh { interval_ms: 0, messages: 0 };
            let (raw, msgs) = roundtrip(&records, mtu, refresh);
            let mut expected_seq = 0u32;
            let mut decoded = Vec::new();
            for (bytes, m) in raw.iter().zip(&msgs) {
                prop_assert!(bytes.len() <= mtu, "{} > {mtu}", bytes.len());
                prop_assert_eq!(usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), bytes.len());
                prop_assert_eq!(m.sequence, expected_seq, "records sent before this message");
                prop_assert_eq!(m.domain, 77);
                prop_assert_eq!(m.export_time, 1_700_000_000);
                expected_seq = expected_seq.wrapping_add(u32::try_from(m.records.len()).unwrap());
                for (t, f) in &m.records {
                    decoded.push(record_of(*t, f, DOCUMENTATION_PEN).expect("every field"));
                }
            }
            // Only the first message carries the templates (no refresh).
            for (i, m) in msgs.iter().enumerate() {
                prop_assert_eq!(!m.templates.is_empty(), i == 0);
            }
            prop_assert_eq!(decoded.len(), records.len());
            for (d, r) in decoded.iter().zip(&records) {
                let short = r.app_path.len() > MAX_STRING || d.app_path != r.app_path;
                if short {
                    // Cut to fit: a prefix on a character boundary.
                    prop_assert!(r.app_path.starts_with(&d.app_path));
                    let mut rr = r.clone();
                    rr.app_path.clone_from(&d.app_path);
                    rr.app_name.clone_from(&d.app_name);
                    prop_assert_eq!(d, &rr);
                } else {
                    prop_assert_eq!(d, r);
                }
            }
        }

        #[test]
        fn templates_are_resent_on_schedule(n in 1usize..400, every in 1u64..10) {
            let r = Record {
                flow_id: 1, v6: false, source: [1; 16], destination: [2; 16], source_port: 1,
                destination_port: 2, protocol: 6, direction: 1, octets: 1,
                packets: 1, reverse_octets: 2, reverse_packets: 3, start_ms: 0, end_ms: 0, end_reason: 3, pid: 0,
                app_name: String::new(), app_path: String::new(),
            };
            let records = vec![r; n];
            let (_, msgs) = roundtrip(&records, 600, Refresh { interval_ms: 0, messages: every });
            for (i, m) in msgs.iter().enumerate() {
                prop_assert_eq!(!m.templates.is_empty(), (i as u64).is_multiple_of(every), "message {}", i);
            }
        }
    }

    #[test]
    fn templates_are_resent_after_the_interval() {
        let mut enc = Encoder::new(
            Templates::new(1),
            1,
            1400,
            Refresh {
                interval_ms: 1000,
                messages: 0,
            },
        );
        let r = Record {
            flow_id: 1,
            v6: true,
            source: [1; 16],
            destination: [2; 16],
            source_port: 1,
            destination_port: 2,
            protocol: 17,
            direction: 0,
            octets: 1,
            packets: 1,
            reverse_octets: 0,
            reverse_packets: 0,
            start_ms: 0,
            end_ms: 0,
            end_reason: 2,
            pid: 9,
            app_name: "a.exe".into(),
            app_path: "\\Device\\a.exe".into(),
        };
        let mut out = Vec::new();
        for t in [0, 500, 999, 1000, 1500, 2001] {
            enc.encode(std::slice::from_ref(&r), t, true, &mut out);
        }
        let mut dec = Decoder::default();
        let with: Vec<bool> = out
            .iter()
            .map(|m| !dec.decode(&m.bytes).unwrap().templates.is_empty())
            .collect();
        assert_eq!(with, [true, false, false, true, false, true]);
        // A template-only message decodes to no records and both templates.
        let t = dec.decode(&enc.template_message(5000)).unwrap();
        assert_eq!(
            (t.templates, t.records.len(), t.sequence),
            (vec![TEMPLATE_V4, TEMPLATE_V6], 0, 6)
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let mut dec = Decoder::default();
        assert_eq!(dec.decode(&[0; 4]).unwrap_err(), DecodeError::Truncated);
        let mut m = vec![0, 9, 0, 16];
        m.extend_from_slice(&[0; 12]);
        assert_eq!(dec.decode(&m).unwrap_err(), DecodeError::Version(9));
        let mut m = vec![0, 10, 0, 24];
        m.extend_from_slice(&[0; 12]);
        m.extend_from_slice(&[0, 2, 0, 200, 0, 0, 0, 0]);
        assert_eq!(
            dec.decode(&m).unwrap_err(),
            DecodeError::Malformed("set length")
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut dec = Decoder::default();
            let _ = dec.decode(&bytes);
        }
    }
}
