//! The configuration file (TOML) and its validation.
//!
//! Every key is documented in README.md ("Configuration"). Unknown keys,
//! wrong types, out-of-range values and a collector name that does not
//! resolve are errors with their own exit codes ([`ExitCode`]), never a
//! silent default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Process exit codes of `wfpmon-export` (also listed by `--help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Any other failure at run time.
    Failure = 1,
    /// Command-line usage error.
    Usage = 2,
    /// The configuration file cannot be read.
    ConfigUnreadable = 3,
    /// The configuration is invalid (syntax, unknown key, bad value).
    ConfigInvalid = 4,
    /// The collector's name does not resolve.
    CollectorUnresolved = 5,
    /// Installing, removing or starting the service failed.
    Service = 6,
    /// The metrics port cannot be bound.
    MetricsBind = 7,
    /// `check-config`: a TCP collector does not accept a connection.
    CollectorUnreachable = 8,
}

/// Every exit code and its meaning.
pub const EXIT_CODES: [(ExitCode, &str); 8] = [
    (ExitCode::Failure, "any other failure"),
    (ExitCode::Usage, "usage error"),
    (ExitCode::ConfigUnreadable, "configuration file unreadable"),
    (
        ExitCode::ConfigInvalid,
        "configuration invalid (syntax, unknown key, bad value)",
    ),
    (
        ExitCode::CollectorUnresolved,
        "collector name does not resolve",
    ),
    (
        ExitCode::Service,
        "service installation / removal / start failed",
    ),
    (ExitCode::MetricsBind, "metrics address cannot be bound"),
    (
        ExitCode::CollectorUnreachable,
        "check-config: the TCP collector does not accept a connection",
    ),
];

/// How long `check-config` waits for a TCP collector to accept.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What [`probe_collector`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The TCP collector accepted a connection (closed again at once).
    Accepted,
    /// Not probed, and why.
    NotProbed(&'static str),
}

/// Why a UDP collector is not probed (README, "Exit codes").
pub const UDP_NOT_PROBED: &str = "UDP collector not probed: UDP has no handshake, a collector \
    that is up sends nothing back, and an ICMP \"port unreachable\" answer is neither \
    guaranteed (filtered, rate-limited, remote hosts) nor reported the same way on every \
    system";

/// `check-config`'s probe of the collector: for TCP a connection within
/// `timeout` (then closed); UDP is not probed ([`UDP_NOT_PROBED`]).
///
/// The running exporter never calls this: it keeps running and
/// reconnecting while the collector is away.
///
/// # Errors
/// [`ExitCode::CollectorUnreachable`], naming the collector, its address and
/// the system's error.
pub fn probe_collector(c: &Collector, timeout: Duration) -> Result<Probe, Error> {
    match c.transport {
        Transport::Udp => Ok(Probe::NotProbed(UDP_NOT_PROBED)),
        Transport::Tcp => std::net::TcpStream::connect_timeout(&c.address, timeout)
            .map(|_| Probe::Accepted)
            .map_err(|e| {
                Error::new(
                    ExitCode::CollectorUnreachable,
                    format!(
                        "collector.address {} ({}, tcp): no connection within {} s: {e}",
                        c.name,
                        c.address,
                        timeout.as_secs()
                    ),
                )
            }),
    }
}

/// A failure with its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Exit code.
    pub code: ExitCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl Error {
    /// An error with `code`.
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// IPFIX transport.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP (RFC 7011 §10.3), the default.
    #[default]
    Udp,
    /// TCP (RFC 7011 §10.4), with reconnection and a bounded queue.
    Tcp,
}

/// `[collector]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollector {
    address: String,
    #[serde(default)]
    transport: Transport,
    mtu: Option<u32>,
    template_refresh_seconds: Option<u32>,
    template_refresh_messages: Option<u32>,
    queue_messages: Option<u32>,
    reconnect_max_seconds: Option<u32>,
}

/// `[export]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    observation_domain_id: Option<u32>,
    active_timeout_seconds: Option<u32>,
    scan_interval_seconds: Option<u32>,
    enterprise_number: Option<u32>,
}

/// `[metrics]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    directory: Option<PathBuf>,
    file_name: Option<String>,
    listen: Option<String>,
    top_programs: Option<u32>,
    interval_seconds: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    collector: Option<RawCollector>,
    #[serde(default)]
    export: RawExport,
    #[serde(default)]
    metrics: RawMetrics,
}

/// The IPFIX side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collector {
    /// As written (host:port).
    pub name: String,
    /// Resolved address.
    pub address: SocketAddr,
    /// Transport.
    pub transport: Transport,
    /// Largest IPFIX message (bytes of IPFIX payload; default 1400).
    pub mtu: usize,
    /// UDP: templates again after this long (default 60 s; 0 off).
    pub template_refresh: Duration,
    /// UDP: templates again after this many messages (default 100; 0 off).
    pub template_refresh_messages: u64,
    /// TCP: messages queued while the collector is away (default 4096).
    pub queue_messages: usize,
    /// TCP: longest pause between reconnection attempts (default 30 s).
    pub reconnect_max: Duration,
}

/// The whole configuration, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `None`: metrics only.
    pub collector: Option<Collector>,
    /// Observation domain (default 1).
    pub observation_domain_id: u32,
    /// Active timeout (default 60 s).
    pub active_timeout: Duration,
    /// Listing passes (default every 10 s).
    pub scan_interval: Duration,
    /// PEN of the process elements (default 32473, documentation).
    pub enterprise_number: u32,
    /// Directory for the `.prom` file (`None`: none written).
    pub metrics_directory: Option<PathBuf>,
    /// Its file name (default `wfpmon.prom`).
    pub metrics_file_name: String,
    /// Address to serve `/metrics` on (`None`: not served).
    pub metrics_listen: Option<SocketAddr>,
    /// Programs with their own label (default 20), then `other`.
    pub top_programs: usize,
    /// Metrics refresh (default 15 s).
    pub metrics_interval: Duration,
}

fn secs(v: Option<u32>, default: u32, key: &str, min: u32) -> Result<Duration, Error> {
    let v = v.unwrap_or(default);
    if v < min {
        return Err(invalid(format!("{key} must be at least {min} (got {v})")));
    }
    Ok(Duration::from_secs(u64::from(v)))
}

fn invalid(message: String) -> Error {
    Error::new(ExitCode::ConfigInvalid, message)
}

/// Parses and validates configuration text; `resolve` turns "host:port"
/// into addresses (DNS on the real system; a table in the tests).
///
/// # Errors
/// [`ExitCode::ConfigInvalid`] or [`ExitCode::CollectorUnresolved`], with a
/// message naming the key.
pub fn parse(
    text: &str,
    resolve: &dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
) -> Result<Config, Error> {
    let raw: RawConfig = toml::from_str(text)
        .map_err(|e| invalid(format!("configuration: {}", e.to_string().trim_end())))?;
    let collector = match raw.collector {
        None => None,
        Some(c) => Some(collector(&c, resolve)?),
    };
    let e = raw.export;
    let m = raw.metrics;
    let metrics_listen = match m.listen {
        None => None,
        // A bare port means loopback (127.0.0.1:PORT).
        Some(s) if s.trim().parse::<u16>().is_ok() => {
            let port = s.trim().parse::<u16>().unwrap_or(0);
            if port == 0 {
                return Err(invalid("metrics.listen: port 0 is not a port".into()));
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
        }
        Some(s) => Some(
            s.parse::<SocketAddr>()
                .map_err(|_| invalid(format!("metrics.listen: \"{s}\" is not an IP address and port (e.g. 127.0.0.1:9653)")))
                .and_then(|a| {
                    if a.port() == 0 {
                        Err(invalid("metrics.listen: port 0 is not a port".into()))
                    } else {
                        Ok(a)
                    }
                })?,
        ),
    };
    let file_name = m.file_name.unwrap_or_else(|| "wfpmon.prom".into());
    let is_prom = Path::new(&file_name)
        .extension()
        .is_some_and(|x| x == "prom");
    if !is_prom || file_name.contains(['/', '\\']) {
        return Err(invalid(format!(
            "metrics.file_name: \"{file_name}\" must be a plain file name ending in .prom (windows_exporter reads *.prom)"
        )));
    }
    let config = Config {
        collector,
        observation_domain_id: e.observation_domain_id.unwrap_or(1),
        active_timeout: secs(
            e.active_timeout_seconds,
            60,
            "export.active_timeout_seconds",
            1,
        )?,
        scan_interval: secs(
            e.scan_interval_seconds,
            10,
            "export.scan_interval_seconds",
            1,
        )?,
        enterprise_number: match e
            .enterprise_number
            .unwrap_or(crate::ipfix::DOCUMENTATION_PEN)
        {
            0 => {
                return Err(invalid(
                    "export.enterprise_number: 0 is IANA's own, not an enterprise".into(),
                ));
            }
            crate::ipfix::REVERSE_PEN => {
                return Err(invalid(
                    "export.enterprise_number: 29305 is RFC 5103's reverse-element number".into(),
                ));
            }
            n => n,
        },
        metrics_directory: m.directory,
        metrics_file_name: file_name,
        metrics_listen,
        top_programs: usize::try_from(m.top_programs.unwrap_or(20)).unwrap_or(20),
        metrics_interval: secs(m.interval_seconds, 15, "metrics.interval_seconds", 1)?,
    };
    if config.collector.is_none()
        && config.metrics_directory.is_none()
        && config.metrics_listen.is_none()
    {
        return Err(invalid(
            "nothing to do: give [collector] address, metrics.directory or metrics.listen".into(),
        ));
    }
    Ok(config)
}

fn collector(
    c: &RawCollector,
    resolve: &dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
) -> Result<Collector, Error> {
    let name = c.address.trim().to_owned();
    let Some((host, port)) = name.rsplit_once(':') else {
        return Err(invalid(format!(
            "collector.address: \"{name}\" has no port (host:port, e.g. collector.example:4739)"
        )));
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
        invalid(format!(
            "collector.address: \"{port}\" is not a port (1-65535)"
        ))
    })?;
    if host.is_empty() {
        return Err(invalid("collector.address: no host".into()));
    }
    let address = resolve(&name)
        .ok()
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| {
            Error::new(
                ExitCode::CollectorUnresolved,
                format!("collector.address: \"{host}\" does not resolve"),
            )
        })?;
    let address = SocketAddr::new(address.ip(), port);
    let mtu = c.mtu.unwrap_or(1400);
    if !(512..=65_507).contains(&mtu) {
        return Err(invalid(format!(
            "collector.mtu: {mtu} is outside 512..=65507"
        )));
    }
    let queue = c.queue_messages.unwrap_or(4096);
    if queue == 0 {
        return Err(invalid(
            "collector.queue_messages must be at least 1".into(),
        ));
    }
    Ok(Collector {
        name,
        address,
        transport: c.transport,
        mtu: usize::try_from(mtu).unwrap_or(1400),
        template_refresh: Duration::from_secs(u64::from(c.template_refresh_seconds.unwrap_or(60))),
        template_refresh_messages: u64::from(c.template_refresh_messages.unwrap_or(100)),
        queue_messages: usize::try_from(queue).unwrap_or(4096),
        reconnect_max: secs(
            c.reconnect_max_seconds,
            30,
            "collector.reconnect_max_seconds",
            1,
        )?,
    })
}

/// The system resolver.
///
/// # Errors
/// The resolver's error.
pub fn system_resolve(name: &str) -> std::io::Result<Vec<SocketAddr>> {
    name.to_socket_addrs().map(Iterator::collect)
}

/// Reads and parses the file at `path`.
///
/// # Errors
/// [`ExitCode::ConfigUnreadable`], or those of [`parse`].
pub fn load(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ExitCode::ConfigUnreadable,
            format!("{}: {e}", path.display()),
        )
    })?;
    parse(&text, &system_resolve)
        .map_err(|e| Error::new(e.code, format!("{}: {}", path.display(), e.message)))
}

/// `metrics.listen = "9653"`: a bare port is served on loopback.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9653);

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_collector(address: SocketAddr) -> Collector {
        let text = format!("[collector]\naddress = \"{address}\"\ntransport = \"tcp\"\n");
        parse(&text, &|_| Ok(vec![address]))
            .expect("configuration")
            .collector
            .expect("a collector")
    }

    /// `check-config`'s probe: a listening TCP port is accepted; a closed
    /// one is exit code 8 with the address and the system's error.
    #[test]
    fn the_probe_tells_a_listening_tcp_collector_from_a_closed_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = listener.local_addr().expect("address");
        assert_eq!(
            probe_collector(&tcp_collector(open), PROBE_TIMEOUT),
            Ok(Probe::Accepted)
        );
        drop(listener);
        // The port just closed: nothing listens there now (another program
        // could take it in between; then this test fails, not passes).
        let e = probe_collector(&tcp_collector(open), PROBE_TIMEOUT).expect_err("closed port");
        assert_eq!(e.code, ExitCode::CollectorUnreachable);
        assert_eq!(e.code as u8, 8);
        assert!(
            e.message.contains(&open.to_string()) && e.message.contains("refused"),
            "{}",
            e.message
        );
        // UDP: not probed, and said so.
        let mut udp = tcp_collector(open);
        udp.transport = Transport::Udp;
        assert_eq!(
            probe_collector(&udp, PROBE_TIMEOUT),
            Ok(Probe::NotProbed(UDP_NOT_PROBED))
        );
    }

    fn resolve(name: &str) -> std::io::Result<Vec<SocketAddr>> {
        match name.rsplit_once(':').map(|(h, _)| h) {
            Some("collector.test") => Ok(vec!["192.0.2.7:1".parse().unwrap()]),
            Some(h) => h
                .parse::<IpAddr>()
                .map(|ip| vec![SocketAddr::new(ip, 1)])
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")),
            None => Err(std::io::Error::other("no port")),
        }
    }

    fn err(text: &str) -> Error {
        parse(text, &resolve).unwrap_err()
    }

    #[test]
    fn a_full_configuration() {
        let c = parse(
            r#"
[collector]
address = "collector.test:4739"
transport = "tcp"
mtu = 9000
queue_messages = 10

[export]
observation_domain_id = 42
active_timeout_seconds = 30

[metrics]
directory = 'C:\Program Files\windows_exporter\textfile_inputs'
listen = "127.0.0.1:9653"
top_programs = 5
"#,
            &resolve,
        )
        .unwrap();
        let col = c.collector.as_ref().unwrap();
        assert_eq!(col.address, "192.0.2.7:4739".parse().unwrap());
        assert_eq!(
            (col.transport, col.mtu, col.queue_messages),
            (Transport::Tcp, 9000, 10)
        );
        assert_eq!(c.observation_domain_id, 42);
        assert_eq!(c.active_timeout, Duration::from_secs(30));
        assert_eq!(c.metrics_listen, Some(DEFAULT_METRICS_LISTEN));
        assert_eq!(c.top_programs, 5);
        assert_eq!(c.metrics_file_name, "wfpmon.prom");
    }

    #[test]
    fn defaults() {
        let c = parse("[collector]\naddress = \"127.0.0.1:4739\"\n", &resolve).unwrap();
        let col = c.collector.unwrap();
        assert_eq!((col.transport, col.mtu), (Transport::Udp, 1400));
        assert_eq!(c.active_timeout, Duration::from_mins(1));
        assert_eq!(c.enterprise_number, 32473);
        assert_eq!(c.metrics_listen, None);
        // A bare port is served on loopback only.
        let c = parse("[metrics]\nlisten = \"9653\"\n", &resolve).unwrap();
        assert_eq!(c.metrics_listen, Some(DEFAULT_METRICS_LISTEN));
    }

    #[test]
    fn bad_configurations_are_clear_errors_with_their_codes() {
        let cases: &[(&str, ExitCode, &str)] = &[
            (
                "[collector]\naddress = \"127.0.0.1:4739\"\ncolour = 1\n",
                ExitCode::ConfigInvalid,
                "unknown field `colour`",
            ),
            (
                "[collectr]\naddress = \"x:1\"\n",
                ExitCode::ConfigInvalid,
                "unknown field `collectr`",
            ),
            (
                "[collector]\naddress = \"nowhere.invalid:4739\"\n",
                ExitCode::CollectorUnresolved,
                "does not resolve",
            ),
            (
                "[collector]\naddress = \"127.0.0.1:70000\"\n",
                ExitCode::ConfigInvalid,
                "not a port",
            ),
            (
                "[collector]\naddress = \"127.0.0.1:0\"\n",
                ExitCode::ConfigInvalid,
                "not a port",
            ),
            (
                "[collector]\naddress = \"127.0.0.1\"\n",
                ExitCode::ConfigInvalid,
                "has no port",
            ),
            (
                "[collector]\naddress = \"127.0.0.1:1\"\ntransport = \"sctp\"\n",
                ExitCode::ConfigInvalid,
                "unknown variant `sctp`",
            ),
            (
                "[collector]\naddress = \"127.0.0.1:1\"\nmtu = 100\n",
                ExitCode::ConfigInvalid,
                "collector.mtu",
            ),
            (
                "[metrics]\nlisten = \"localhost\"\n",
                ExitCode::ConfigInvalid,
                "metrics.listen",
            ),
            (
                "[metrics]\ndirectory = \"/x\"\nfile_name = \"a.txt\"\n",
                ExitCode::ConfigInvalid,
                ".prom",
            ),
            (
                "[export]\nactive_timeout_seconds = 0\n[metrics]\ndirectory = \"/x\"\n",
                ExitCode::ConfigInvalid,
                "at least 1",
            ),
            ("", ExitCode::ConfigInvalid, "nothing to do"),
            ("[collector\n", ExitCode::ConfigInvalid, "configuration:"),
            (
                "[collector]\naddress = 5\n",
                ExitCode::ConfigInvalid,
                "invalid type",
            ),
        ];
        for (text, code, needle) in cases {
            let e = err(text);
            assert_eq!(e.code, *code, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e} lacks {needle:?}");
        }
    }

    #[test]
    fn an_unreadable_file_has_its_own_code() {
        let e = load(Path::new("/nonexistent/wfpmon-export.toml")).unwrap_err();
        assert_eq!(e.code, ExitCode::ConfigUnreadable);
    }
}
