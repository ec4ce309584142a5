//! The `/` filter of the live view: words that must all match.
//!
//! | word | matches a connection whose |
//! | --- | --- |
//! | `10.0.0.0/8`, `2001:db8::/32` | local or remote address is in the network |
//! | `192.0.2.7`, `::1` | local or remote address is this one |
//! | `:443`, `port:443` | local or remote port is 443 |
//! | `pid:1234` | process id is 1234 |
//! | `proto:udp` | protocol is udp (tcp, udp, icmp, icmpv6 or a number) |
//! | `443` (a bare number) | port or process id is 443 |
//! | anything else | program name, its path, its services or the remote host name contains the word (case-insensitive) |

use std::net::IpAddr;

use ipnet::IpNet;

use crate::flows::protocol_number;

/// One word of a filter.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Net(IpNet),
    Address(IpAddr),
    Port(u16),
    Pid(u64),
    PortOrPid(u64),
    Protocol(u8),
    /// Lower-case text.
    Text(String),
}

/// A parsed filter: every term must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// What the user typed.
    pub text: String,
    terms: Vec<Term>,
}

/// What a filter is matched against.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub pid: u64,
    pub protocol: u8,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// Ports (none for ICMP).
    pub ports: Option<(u16, u16)>,
    /// Lower-case program name, path and services.
    pub program: &'a str,
    /// Lower-case remote host name, when known.
    pub host: Option<&'a str>,
}

fn bad_cidr(word: &str, why: &str) -> String {
    format!("bad CIDR '{word}': {why} (write ADDRESS/PREFIX, e.g. 10.0.0.0/8 or 2001:db8::/32)")
}

fn term(word: &str) -> Result<Term, String> {
    if let Some((address, prefix)) = word.split_once('/') {
        let address: IpAddr = address
            .parse()
            .map_err(|_| bad_cidr(word, &format!("'{address}' is not an IP address")))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let length: u8 = prefix
            .parse()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| bad_cidr(word, &format!("the prefix length must be 0 to {max}")))?;
        let net = IpNet::new(address, length).map_err(|e| bad_cidr(word, &e.to_string()))?;
        return Ok(Term::Net(net.trunc()));
    }
    if let Ok(address) = word.parse::<IpAddr>() {
        return Ok(Term::Address(address));
    }
    let port = |text: &str| {
        text.parse::<u16>()
            .map_err(|_| format!("bad port '{text}' in '{word}': expected 0 to 65535"))
    };
    if let Some(p) = word
        .strip_prefix(':')
        .or_else(|| word.strip_prefix("port:"))
    {
        return port(p).map(Term::Port);
    }
    if let Some(p) = word.strip_prefix("pid:") {
        return p
            .parse()
            .map(Term::Pid)
            .map_err(|_| format!("bad process id '{p}' in '{word}'"));
    }
    if let Some(p) = word.strip_prefix("proto:") {
        return protocol_number(p)
            .map(Term::Protocol)
            .map_err(|e| format!("bad protocol '{p}': {e}"));
    }
    if let Ok(n) = word.parse::<u64>() {
        return Ok(Term::PortOrPid(n));
    }
    Ok(Term::Text(word.to_lowercase()))
}

impl Filter {
    /// Parses `text` (empty: no filter).
    ///
    /// # Errors
    /// A message naming the word that is wrong and what is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let terms = text
            .split_whitespace()
            .map(term)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: text.trim().to_owned(),
            terms,
        })
    }

    /// Whether no word was given.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether every word matches `s`.
    #[must_use]
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Net(net) => net.contains(&s.local) || net.contains(&s.remote),
            Term::Address(a) => *a == s.local || *a == s.remote,
            Term::Port(p) => s.ports.is_some_and(|(l, r)| l == *p || r == *p),
            Term::Pid(p) => s.pid == *p,
            Term::PortOrPid(n) => {
                s.pid == *n
                    || s.ports
                        .is_some_and(|(l, r)| u64::from(l) == *n || u64::from(r) == *n)
            }
            Term::Protocol(p) => s.protocol == *p,
            Term::Text(text) => {
                s.program.contains(text.as_str()) || s.host.is_some_and(|h| h.contains(text))
            }
        })
    }

    /// Whether the words that concern programs alone (names, pids) match a
    /// program: a program is shown when it or one of its connections does.
    #[must_use]
    pub fn matches_program(&self, pid: u64, program: &str) -> bool {
        !self.terms.is_empty()
            && self.terms.iter().all(|t| match t {
                Term::Pid(p) => pid == *p,
                Term::Text(text) => program.contains(text.as_str()),
                _ => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject<'a>(program: &'a str, host: Option<&'a str>) -> Subject<'a> {
        Subject {
            pid: 4321,
            protocol: 6,
            local: "10.1.2.3".parse().unwrap(),
            remote: "2001:db8::7".parse().unwrap(),
            ports: Some((50000, 443)),
            program,
            host,
        }
    }

    fn matches(filter: &str, s: &Subject<'_>) -> bool {
        Filter::parse(filter).unwrap().matches(s)
    }

    #[test]
    fn every_kind_of_word() {
        let s = subject(
            r"svchost.exe c:\windows\svchost.exe dnscache",
            Some("dns.example"),
        );
        for yes in [
            "",
            "10.0.0.0/8",
            "2001:db8::/32",
            "10.1.2.3",
            "2001:db8::7",
            ":443",
            "port:50000",
            "443",
            "4321",
            "pid:4321",
            "proto:tcp",
            "SVCHOST",
            "dnscache",
            "example",
            "svc 10.0.0.0/8 :443",
            "10.1.2.3/32",
        ] {
            assert!(matches(yes, &s), "{yes:?}");
        }
        for no in [
            "192.168.0.0/16",
            "2001:db9::/32",
            "10.1.2.4",
            ":80",
            "pid:443",
            "80",
            "proto:udp",
            "chrome",
            "svc chrome",
        ] {
            assert!(!matches(no, &s), "{no:?}");
        }
        let icmp = Subject {
            ports: None,
            ..subject("ping.exe", None)
        };
        assert!(!matches(":8", &icmp) && !matches("example", &icmp));
        assert!(matches("4321", &icmp), "the pid still matches");
    }

    #[test]
    fn bad_words_are_explained() {
        for (word, message) in [
            (
                "10.0.0.0/33",
                "bad CIDR '10.0.0.0/33': the prefix length must be 0 to 32",
            ),
            ("::/129", "the prefix length must be 0 to 128"),
            (
                "10.0.0/8",
                "bad CIDR '10.0.0/8': '10.0.0' is not an IP address",
            ),
            ("a/b", "'a' is not an IP address"),
            ("10.0.0.0/x", "the prefix length"),
            (
                ":99999",
                "bad port '99999' in ':99999': expected 0 to 65535",
            ),
            ("port:http", "bad port 'http'"),
            ("pid:me", "bad process id 'me'"),
            ("proto:ftp", "bad protocol 'ftp'"),
        ] {
            let err = Filter::parse(&format!("chrome {word}")).unwrap_err();
            assert!(err.contains(message), "{word}: {err}");
        }
    }

    #[test]
    fn program_words() {
        let f = Filter::parse("svc pid:4").unwrap();
        assert!(f.matches_program(4, "svchost.exe"));
        assert!(!f.matches_program(5, "svchost.exe"));
        assert!(!Filter::parse(":443").unwrap().matches_program(4, "svc"));
        assert!(!Filter::default().matches_program(4, "svc"));
    }
}
