//! CSV: a header once, then one row per flow, process or event (with
//! `--watch`, per item and refresh, each row carrying its refresh's time).
//! The columns are the JSON documents' keys; numbers are exact (bytes,
//! bytes per second), times UTC (RFC 3339) as in JSON, lists (services,
//! flags) joined with `;`, an absent value an empty field.

use crate::events::EventDoc;
use crate::flows::FlowRow;
use crate::procs::ProcRow;

/// The flow columns shared by `flows` and `events`, after their own.
const FLOW: [&str; 21] = [
    "flow_handle",
    "pid",
    "process",
    "services",
    "path",
    "protocol",
    "ip_protocol",
    "family",
    "direction",
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "remote_host",
    "icmp_type",
    "icmp_code",
    "age_ms",
    "bytes_in",
    "bytes_out",
    "packets_in",
    "packets_out",
];

fn text<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(String::new, |v| v.to_string())
}

fn flow_values(f: &FlowRow) -> Vec<String> {
    vec![
        f.flow_handle.clone(),
        f.pid.to_string(),
        f.process.clone(),
        f.services.join(";"),
        text(f.path.as_ref()),
        f.protocol.clone(),
        f.ip_protocol.to_string(),
        f.family.to_owned(),
        f.direction.to_owned(),
        f.local_address.clone(),
        text(f.local_port),
        f.remote_address.clone(),
        text(f.remote_port),
        text(f.remote_host.as_ref()),
        text(f.icmp_type),
        text(f.icmp_code),
        f.age_ms.to_string(),
        f.bytes_in.to_string(),
        f.bytes_out.to_string(),
        f.packets_in.to_string(),
        f.packets_out.to_string(),
    ]
}

/// Rows of one kind: the header comes with the first call (even one
/// without rows, so that an empty result still names its columns).
#[derive(Debug, Default)]
pub struct Csv {
    header_done: bool,
}

impl Csv {
    fn write(&mut self, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        // Writing into memory cannot fail.
        if !self.header_done {
            self.header_done = true;
            let _ = w.write_record(header);
        }
        for row in rows {
            let _ = w.write_record(&row);
        }
        let bytes = w.into_inner().unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }

    /// The flows of a refresh taken at `timestamp`.
    pub fn flows<'a>(
        &mut self,
        timestamp: &str,
        flows: impl IntoIterator<Item = &'a FlowRow>,
    ) -> String {
        let mut header = vec!["timestamp"];
        header.extend(FLOW);
        header.extend(["rate_in", "rate_out"]);
        let rows = flows.into_iter().map(|f| {
            let mut row = vec![timestamp.to_owned()];
            row.extend(flow_values(f));
            row.extend([text(f.rate_in), text(f.rate_out)]);
            row
        });
        self.write(&header, rows)
    }

    /// Events, each at its own time.
    pub fn events<'a>(&mut self, events: impl IntoIterator<Item = &'a EventDoc>) -> String {
        let mut header = vec!["timestamp", "seq", "event", "flags"];
        header.extend(FLOW);
        let rows = events.into_iter().map(|d| {
            let mut row = vec![
                d.timestamp.clone(),
                d.seq.to_string(),
                d.event.to_owned(),
                d.flags.join(";"),
            ];
            row.extend(flow_values(&d.flow));
            row
        });
        self.write(&header, rows)
    }

    /// The processes of a refresh taken at `timestamp`.
    pub fn processes<'a>(
        &mut self,
        timestamp: &str,
        procs: impl IntoIterator<Item = &'a ProcRow>,
    ) -> String {
        let header = [
            "timestamp",
            "key",
            "pid",
            "process",
            "services",
            "path",
            "path_truncated",
            "active_flows",
            "flows_total",
            "bytes_in",
            "bytes_out",
            "packets_in",
            "packets_out",
            "first_seen",
            "last_seen",
            "rate_in",
            "rate_out",
        ];
        let rows = procs.into_iter().map(|p| {
            vec![
                timestamp.to_owned(),
                p.key.clone(),
                text(p.pid),
                p.process.clone(),
                p.services.join(";"),
                text(p.path.as_ref()),
                p.path_truncated.to_string(),
                p.active_flows.to_string(),
                p.flows_total.to_string(),
                p.bytes_in.to_string(),
                p.bytes_out.to_string(),
                p.packets_in.to_string(),
                p.packets_out.to_string(),
                p.first_seen.clone(),
                p.last_seen.clone(),
                text(p.rate_in),
                text(p.rate_out),
            ]
        });
        self.write(&header, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::tests::entries;

    /// Parses `text` back with the csv crate's reader: (header, rows).
    fn parse(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let header = r.headers().unwrap().iter().map(str::to_owned).collect();
        let rows = r
            .records()
            .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
            .collect();
        (header, rows)
    }

    #[test]
    fn flows_have_one_header_and_exact_fields() {
        let mut rows: Vec<FlowRow> = entries()
            .iter()
            .map(|e| FlowRow::new(e, "a.exe".into(), None))
            .collect();
        rows[0].services = vec!["Dnscache".into(), "LanmanWorkstation".into()];
        rows[0].process = r#"odd, "quoted" name.exe"#.into();
        rows[0].remote_host = Some("edge.example.net".into());
        rows[0].path = Some(r"C:\a b\a.exe".into());
        rows[0].rate_in = Some(1536.5);
        let mut csv = Csv::default();
        let first = csv.flows("2026-01-01T00:00:00.000Z", &rows);
        let second = csv.flows("2026-01-01T00:00:01.000Z", &rows[..1]);
        assert!(!second.starts_with("timestamp"), "one header: {second}");
        let (header, parsed) = parse(&(first + &second));
        assert_eq!(header.len(), 24);
        assert_eq!(&header[..3], ["timestamp", "flow_handle", "pid"]);
        assert_eq!(parsed.len(), 4);
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let r = &parsed[0];
        assert_eq!(
            r[col("process")],
            r#"odd, "quoted" name.exe"#,
            "quoting round-trips"
        );
        assert_eq!(r[col("services")], "Dnscache;LanmanWorkstation");
        assert_eq!(r[col("remote_host")], "edge.example.net");
        assert_eq!(r[col("path")], r"C:\a b\a.exe");
        assert_eq!(
            (r[col("rate_in")].as_str(), r[col("rate_out")].as_str()),
            ("1536.5", "")
        );
        assert_eq!(
            (r[col("bytes_in")].as_str(), r[col("local_port")].as_str()),
            ("100", "50000")
        );
        let icmp = &parsed[2];
        assert_eq!(
            (
                icmp[col("icmp_type")].as_str(),
                icmp[col("local_port")].as_str()
            ),
            ("8", ""),
            "absent: an empty field"
        );
        assert_eq!(parsed[3][col("timestamp")], "2026-01-01T00:00:01.000Z");
        assert!(parsed.iter().all(|r| r.len() == header.len()));

        let mut empty = Csv::default();
        let (header, rows) = parse(&empty.flows("t", &[]));
        assert_eq!(
            (header.len(), rows.len()),
            (24, 0),
            "an empty list names its columns"
        );
    }
}
