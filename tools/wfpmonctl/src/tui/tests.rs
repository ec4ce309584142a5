//! The live view on fixed data: the model (rates, marks, programs,
//! filter), every tab and key drawn on ratatui's `TestBackend` at every
//! width from 60 to 200 columns (content asserted; screens kept as insta
//! snapshots in `src/tui/snapshots`), bad input, and the refresh loop with
//! scripted keys over the simulated driver.

// The rates compared are exact: whole bytes over whole milliseconds that
// divide them.
#![allow(clippy::float_cmp)]

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;
use wfpmon_core::events::{EVENT_ENDED, EVENT_ESTABLISHED, FlowEvent};
use wfpmon_core::protocol::FlowEntry;

use super::keys::{self, Action};
use super::model::{Mark, Model, Row, Sample, Tab};
use super::run::{self, Clock, Input};
use super::source::{DeviceSource, Source};
use super::units::Units;
use super::{Names, view};
use crate::device::sim::{SimDriver, flow, process};
use crate::error::Error;
use crate::procs::Proc;

/// Services and host names of the fixture.
struct FakeNames;

impl Names for FakeNames {
    fn services(&self, pid: u64) -> Option<String> {
        (pid == 880).then(|| "Dnscache, NlaSvc".to_owned())
    }
    fn remote_host(&self, address: IpAddr) -> Option<String> {
        match address.to_string().as_str() {
            "93.184.216.34" => Some("example.com".to_owned()),
            "198.51.100.20" => Some("backup.example.net".to_owned()),
            _ => None,
        }
    }
}

const FIREFOX: u64 = 1 << 32 | 1;
const SVCHOST: u64 = 1 << 32 | 2;
const BACKUP: u64 = 1 << 32 | 3;
const CURL: u64 = 1 << 32 | 4;

fn naming(key: u64, pid: u64) -> Proc {
    let (name, path) = match key {
        FIREFOX => (
            "firefox.exe",
            r"C:\Program Files\Mozilla Firefox\firefox.exe",
        ),
        SVCHOST => ("svchost.exe", r"C:\Windows\System32\svchost.exe"),
        BACKUP => ("backup.exe", r"D:\tools\backup.exe"),
        CURL => ("curl.exe", r"C:\Windows\System32\curl.exe"),
        _ if pid == 4 => ("System", ""),
        _ => ("?", ""),
    };
    Proc {
        name: name.to_owned(),
        path: (!path.is_empty()).then(|| path.to_owned()),
        truncated: false,
    }
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut b = [0; 16];
    b[..4].copy_from_slice(&a);
    b
}

fn v6(text: &str) -> [u8; 16] {
    text.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// A flow: id, process key and pid, protocol, remote, ports, age and
/// bytes (in, out).
#[allow(clippy::too_many_arguments)]
fn entry(
    id: u64,
    (key, pid): (u64, u64),
    protocol: u8,
    remote: [u8; 16],
    v6: bool,
    (local_port, remote_port): (u16, u16),
    age_ms: u64,
    (bytes_in, bytes_out): (u64, u64),
) -> FlowEntry {
    FlowEntry {
        flow_id: id,
        process_id: pid,
        age_ms,
        bytes_inbound: bytes_in,
        bytes_outbound: bytes_out,
        packets_inbound: bytes_in / 1000,
        packets_outbound: bytes_out / 1000,
        local_address: if v6 {
            self::v6("2001:db8::10")
        } else {
            v4([10, 0, 0, 5])
        },
        remote_address: remote,
        local_port,
        remote_port,
        address_family: if v6 { 23 } else { 2 },
        ip_protocol: protocol,
        direction: u8::from(remote_port == 0 && protocol == 6),
        process_key: key,
    }
}

/// The flows at the first sample (t = 10 s) and one second later: every
/// flow moved a known amount in the driver's second; firefox's third flow
/// ended between the samples, curl's flow is new.
fn flows(second: bool) -> Vec<FlowEntry> {
    let t = u64::from(second);
    let age = |a: u64| a + 1000 * t;
    let mut list = vec![
        entry(
            0x11,
            (FIREFOX, 1200),
            6,
            v4([93, 184, 216, 34]),
            false,
            (50001, 443),
            age(60_000),
            (5_000_000 + t * 2_000_000, 40_000 + t * 20_000),
        ),
        entry(
            0x12,
            (FIREFOX, 1200),
            6,
            v4([93, 184, 216, 34]),
            false,
            (50002, 443),
            age(30_000),
            (1_000_000 + t * 500_000, 9_000 + t * 1000),
        ),
        entry(
            0x21,
            (SVCHOST, 880),
            17,
            v6("2001:4860:4860::8888"),
            true,
            (53001, 53),
            age(5_000),
            (300 + t * 300, 100 + t * 100),
        ),
        entry(
            0x22,
            (SVCHOST, 880),
            17,
            v4([192, 0, 2, 53]),
            false,
            (53002, 53),
            age(5_000),
            (200 + t * 200, 80 + t * 80),
        ),
        entry(
            0x31,
            (BACKUP, 3300),
            6,
            v4([198, 51, 100, 20]),
            false,
            (50100, 443),
            age(600_000),
            (80_000 + t * 10_000, 900_000_000 + t * 12_500_000),
        ),
        entry(
            0x41,
            (0, 4),
            1,
            v4([10, 0, 0, 1]),
            false,
            (8, 0),
            age(2_000),
            (64 + t * 64, 64 + t * 64),
        ),
    ];
    if second {
        list.push(entry(
            0x51,
            (CURL, 5000),
            6,
            v4([203, 0, 113, 9]),
            false,
            (50200, 80),
            400,
            (250_000, 2_000),
        ));
    } else {
        list.push(entry(
            0x13,
            (FIREFOX, 1200),
            6,
            v4([93, 184, 216, 35]),
            false,
            (50003, 443),
            9000,
            (70_000, 3_000),
        ));
    }
    list
}

fn wall(seconds: u64) -> SystemTime {
    // 2027-01-15T08:00:00Z
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

/// The fixture's time zone: UTC+1 (Central European Time in January), so
/// that a time shown in UTC cannot pass for the local one.
const fn cet(_: SystemTime) -> i32 {
    3600
}

fn event(seq: u64, kind: u8, key: u64, pid: u32, remote: [u8; 4]) -> (FlowEvent, SystemTime) {
    let mut e = FlowEvent {
        seq,
        kind,
        address_family: 2,
        process_id: pid,
        process_key: key,
        flow_id: 0x100 + seq,
        local_port: 50_000 + u16::try_from(seq).unwrap(),
        remote_port: 443,
        ip_protocol: 6,
        ..FlowEvent::default()
    };
    e.local_address = v4([10, 0, 0, 5]);
    e.remote_address = v4(remote);
    if kind == EVENT_ENDED {
        e.duration = 12_345_678;
        e.bytes_inbound = 70_000;
        e.bytes_outbound = 3_000;
    }
    (e, wall(seq))
}

/// The fixture after its two samples (1 s apart).
fn fixture() -> Model {
    let mut m = Model::new(Duration::from_secs(1), Units::Bytes, false);
    let first = Sample {
        wall: Some(wall(0)),
        mono: Duration::from_secs(10),
        active: 7,
        flows: flows(false),
        events: vec![
            event(0, EVENT_ESTABLISHED, FIREFOX, 1200, [93, 184, 216, 35]),
            event(1, EVENT_ESTABLISHED, BACKUP, 3300, [198, 51, 100, 20]),
        ],
        dropped: 0,
    };
    m.update(first, &mut naming, &FakeNames, &mut cet);
    let second = Sample {
        wall: Some(wall(1)),
        mono: Duration::from_secs(11),
        active: 7,
        flows: flows(true),
        events: vec![
            event(2, EVENT_ENDED, FIREFOX, 1200, [93, 184, 216, 35]),
            event(3, EVENT_ESTABLISHED, CURL, 5000, [203, 0, 113, 9]),
        ],
        dropped: 3,
    };
    m.update(second, &mut naming, &FakeNames, &mut cet);
    m
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn press(m: &mut Model, codes: &[KeyCode]) -> Action {
    let mut last = Action::Redraw;
    for c in codes {
        last = keys::handle(m, key(*c));
    }
    last
}

fn typed(m: &mut Model, text: &str) {
    for c in text.chars() {
        keys::handle(m, key(KeyCode::Char(c)));
    }
}

fn draw(m: &mut Model, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
    t.draw(|f| view::draw(f, m)).unwrap();
    t
}

/// The screen's lines.
fn lines(t: &Terminal<TestBackend>) -> Vec<String> {
    let b = t.backend().buffer();
    (0..b.area.height)
        .map(|y| {
            (0..b.area.width)
                .map(|x| b[(x, y)].symbol())
                .collect::<String>()
                .trim_end()
                .to_owned()
        })
        .collect()
}

fn screen(t: &Terminal<TestBackend>) -> String {
    lines(t).join("\n")
}

/// The line containing `needle` (panics with the screen otherwise).
fn line_with(t: &Terminal<TestBackend>, needle: &str) -> (usize, String) {
    lines(t)
        .into_iter()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not on the screen:\n{}", screen(t)))
}

fn fg_at(t: &Terminal<TestBackend>, row: usize) -> Color {
    t.backend().buffer()[(0, u16::try_from(row).unwrap())].fg
}

// ------------------------------------------------------------------ model

#[test]
fn rates_come_from_each_flows_own_driver_time() {
    let m = fixture();
    let rate = |id| m.conns[&id].rate;
    assert_eq!(rate(0x11), (2_000_000.0, 20_000.0), "moved in its 1000 ms");
    assert_eq!(rate(0x31), (10_000.0, 12_500_000.0));
    // New since the first sample: all its bytes within the 1 s interval.
    assert_eq!(rate(0x51), (250_000.0, 2_000.0));
    // Ended between the samples: kept, marked, no rate.
    let ended = &m.conns[&0x13];
    assert_eq!((m.mark(ended.life), ended.rate), (Mark::Ended, (0.0, 0.0)));
    assert_eq!(m.mark(m.conns[&0x51].life), Mark::New);
    assert_eq!(
        m.mark(m.conns[&0x11].life),
        Mark::None,
        "there at the start"
    );
    let firefox = m
        .programs
        .values()
        .find(|p| p.name == "firefox.exe")
        .unwrap();
    assert_eq!((firefox.conns, firefox.rate), (2, (2_500_000.0, 21_000.0)));
    assert_eq!(
        firefox.bytes.0,
        7_000_000 + 1_500_000 + 70_000,
        "bytes of its listed connections, the ended one included"
    );
    let svchost = m.programs.values().find(|p| p.id.pid == 880).unwrap();
    assert_eq!(svchost.label(), "svchost.exe (Dnscache, NlaSvc)");
    assert_eq!(m.conns[&0x31].host.as_deref(), Some("backup.example.net"));
    assert_eq!((m.events.len(), m.events_dropped), (4, 3));
}

#[test]
fn the_driver_time_of_each_flow_is_used_even_when_samples_are_uneven() {
    // The listing of the second sample read flow 0x11 only 500 ms after
    // the first time (a slow listing): its rate uses those 500 ms, not the
    // 1 s between the samples.
    let mut m = Model::new(Duration::from_secs(1), Units::Bytes, false);
    let a = entry(
        0x11,
        (FIREFOX, 1200),
        6,
        v4([1, 1, 1, 1]),
        false,
        (1, 2),
        1000,
        (0, 0),
    );
    let mut b = a;
    b.age_ms = 1500;
    b.bytes_inbound = 1000;
    for (mono, f) in [(1, a), (2, b)] {
        let s = Sample {
            mono: Duration::from_secs(mono),
            flows: vec![f],
            ..Sample::default()
        };
        m.update(s, &mut naming, &super::NoNames, &mut cet);
    }
    assert_eq!(m.conns[&0x11].rate.0, 2000.0);
}

#[test]
fn marks_fade_and_ended_connections_go() {
    let mut m = fixture();
    // 2 s later the new flow is still new; 3 s after it came it is not.
    for (mono, new, ended_listed) in [(12, true, true), (13, true, true), (14, false, false)] {
        let s = Sample {
            mono: Duration::from_secs(mono),
            flows: flows(true),
            ..Sample::default()
        };
        m.update(s, &mut naming, &FakeNames, &mut cet);
        assert_eq!(m.mark(m.conns[&0x51].life) == Mark::New, new, "at {mono} s");
        assert_eq!(m.conns.contains_key(&0x13), ended_listed, "at {mono} s");
    }
    // A program whose every connection ended is marked, then goes.
    let gone: Vec<FlowEntry> = flows(true)
        .into_iter()
        .filter(|f| f.process_key != BACKUP)
        .collect();
    for mono in [15, 16, 17, 18] {
        let s = Sample {
            mono: Duration::from_secs(mono),
            flows: gone.clone(),
            ..Sample::default()
        };
        m.update(s, &mut naming, &FakeNames, &mut cet);
        let backup = m.programs.values().find(|p| p.name == "backup.exe");
        match mono {
            15..=17 => assert_eq!(
                backup.map(|p| m.mark(p.life)),
                Some(Mark::Ended),
                "at {mono}"
            ),
            _ => assert!(backup.is_none(), "gone at {mono}"),
        }
    }
}

#[test]
fn a_reused_flow_handle_is_a_new_connection() {
    let mut m = fixture();
    let mut list = flows(true);
    // Handle 0x12 now names another flow (younger than the one it was).
    list[1].age_ms = 10;
    list[1].bytes_inbound = 10;
    let s = Sample {
        mono: Duration::from_secs(12),
        flows: list,
        ..Sample::default()
    };
    m.update(s, &mut naming, &FakeNames, &mut cet);
    assert_eq!(m.mark(m.conns[&0x12].life), Mark::New);
    assert_eq!(m.conns[&0x12].rate.0, 10.0, "its bytes over the interval");
}

#[test]
fn events_take_the_zone_offset_at_their_own_time() {
    // Daylight saving starts between the two events of one sample.
    let mut asked = Vec::new();
    let mut zone = |t: SystemTime| {
        asked.push(t);
        if t < wall(2) { 3600 } else { 7200 }
    };
    let mut m = Model::new(Duration::from_secs(1), Units::Bytes, false);
    let s = Sample {
        events: vec![
            event(1, EVENT_ESTABLISHED, FIREFOX, 1200, [93, 184, 216, 35]),
            event(2, EVENT_ENDED, FIREFOX, 1200, [93, 184, 216, 35]),
        ],
        ..Sample::default()
    };
    m.update(s, &mut naming, &FakeNames, &mut zone);
    assert_eq!(asked, [wall(1), wall(2)]);
    let offsets: Vec<i32> = m.events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [3600, 7200]);
}

#[test]
fn no_host_names_with_numeric() {
    let mut m = Model::new(Duration::from_secs(1), Units::Bytes, true);
    let s = Sample {
        flows: flows(false),
        ..Sample::default()
    };
    m.update(s, &mut naming, &FakeNames, &mut cet);
    assert!(m.conns.values().all(|c| c.host.is_none()));
}

// ---------------------------------------------------------- sort and keys

fn program_order(m: &Model) -> Vec<String> {
    m.rows[0]
        .iter()
        .filter_map(|r| match r {
            Row::Program(id) => Some(m.programs[id].name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn every_column_of_every_tab_sorts() {
    let mut m = fixture();
    assert_eq!(
        program_order(&m),
        [
            "firefox.exe",
            "curl.exe",
            "backup.exe",
            "svchost.exe",
            "System"
        ],
        "IN/s, largest first"
    );
    press(&mut m, &[KeyCode::Char('>')]);
    assert_eq!(program_order(&m)[0], "backup.exe", "OUT/s");
    press(&mut m, &[KeyCode::Char('r')]);
    assert_eq!(program_order(&m)[0], "System", "OUT/s, smallest first");
    press(
        &mut m,
        &[KeyCode::Char('<'), KeyCode::Char('<'), KeyCode::Char('<')],
    );
    assert_eq!(
        program_order(&m),
        [
            "backup.exe",
            "curl.exe",
            "firefox.exe",
            "svchost.exe",
            "System"
        ],
        "PROGRAM, A to Z"
    );
    press(&mut m, &[KeyCode::Char('<')]);
    assert_eq!(program_order(&m)[0], "System", "PID 4 first");
    // Every column of every tab: the rows stay the same set, the order
    // follows the column (checked by the sort indicator in the header).
    for tab in ['p', 'c', 'e'] {
        press(&mut m, &[KeyCode::Char(tab)]);
        let t = m.tab.index();
        let mut before = m.rows[t].clone();
        before.sort_by_key(|r| format!("{r:?}"));
        for _ in 0..super::model::columns(m.tab).len() {
            press(&mut m, &[KeyCode::Char('>')]);
            let mut now = m.rows[t].clone();
            now.sort_by_key(|r| format!("{r:?}"));
            assert_eq!(now, before);
            let title = super::model::columns(m.tab)[m.sort[t].column].title;
            let screen = screen(&draw(&mut m, 200, 20));
            assert!(
                screen.contains(&format!("{title}▼")) || screen.contains(&format!("{title}▲")),
                "{title}\n{screen}"
            );
        }
    }
    // Connections by remote address, then by age.
    press(&mut m, &[KeyCode::Char('c')]);
    m.sort[1] = super::model::Sort {
        column: 4,
        descending: false,
    };
    m.rebuild();
    let Row::Conn(first) = m.rows[1][0] else {
        unreachable!()
    };
    assert_eq!(m.conns[&first].remote.to_string(), "10.0.0.1");
}

#[test]
fn filter_words_select_programs_connections_and_events() {
    let mut m = fixture();
    let shown = |m: &Model, t: usize| m.rows[t].len();
    for (filter, programs, conns, events) in [
        ("firefox", 1, 3, 2),
        ("dnscache", 1, 2, 0),
        ("example.com", 1, 2, 0),
        ("93.184.216.0/24", 1, 3, 2),
        ("2001:4860::/32", 1, 1, 0),
        (":53", 1, 2, 0),
        ("443", 2, 4, 4),
        ("pid:4", 1, 1, 0),
        ("proto:icmp", 1, 1, 0),
        ("proto:udp 192.0.2.53", 1, 1, 0),
        ("nothing-like-this", 0, 0, 0),
    ] {
        press(&mut m, &[KeyCode::Char('/'), KeyCode::Char('u')]);
        keys::handle(
            &mut m,
            KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL),
        );
        typed(&mut m, filter);
        press(&mut m, &[KeyCode::Enter]);
        assert_eq!(m.filter.text, filter);
        assert_eq!(
            (shown(&m, 0), shown(&m, 1), shown(&m, 2)),
            (programs, conns, events),
            "{filter}"
        );
    }
    // An empty filter shows everything again.
    press(&mut m, &[KeyCode::Char('/')]);
    keys::handle(
        &mut m,
        KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL),
    );
    press(&mut m, &[KeyCode::Enter]);
    assert_eq!((shown(&m, 0), shown(&m, 1)), (5, 8));
    assert_eq!(
        m.status.as_ref().unwrap().text,
        "filter cleared: everything is shown"
    );
}

#[test]
fn bad_filters_and_unknown_keys_are_explained_without_losing_the_view() {
    let mut m = fixture();
    press(&mut m, &[KeyCode::Char('/')]);
    typed(&mut m, "firefox 10.0.0.0/33");
    press(&mut m, &[KeyCode::Enter]);
    assert!(m.input.is_some(), "still typing, to correct it");
    assert!(m.filter.is_empty(), "the previous filter stays");
    let t = draw(&mut m, 100, 20);
    let (_, status) = line_with(
        &t,
        "bad CIDR '10.0.0.0/33': the prefix length must be 0 to 32",
    );
    assert!(status.starts_with("/firefox 10.0.0.0/33█"), "{status}");
    insta::assert_snapshot!("bad_cidr", screen(&t));
    press(&mut m, &[KeyCode::Esc]);
    assert!(
        m.input.is_none() && m.status.is_none(),
        "Esc cancels the typing"
    );
    assert_eq!(press(&mut m, &[KeyCode::Char('/')]), Action::Redraw);
    typed(&mut m, "port:http");
    press(&mut m, &[KeyCode::Enter]);
    let t = draw(&mut m, 100, 20);
    line_with(&t, "bad port 'http' in 'port:http': expected 0 to 65535");
    press(&mut m, &[KeyCode::Esc]);

    for (code, hint) in [
        (
            KeyCode::Char('z'),
            "unknown key 'z': press ? for the list of keys",
        ),
        (
            KeyCode::F(5),
            "unknown key F5: press ? for the list of keys",
        ),
        (
            KeyCode::Insert,
            "unknown key Insert: press ? for the list of keys",
        ),
    ] {
        assert_eq!(press(&mut m, &[code]), Action::Redraw);
        let t = draw(&mut m, 100, 20);
        let (row, _) = line_with(&t, hint);
        assert_eq!(row, 19, "on the status line");
        assert_eq!(fg_at(&t, row), Color::Red);
    }
    let alt_x = KeyEvent::new(
        KeyCode::Char('x'),
        KeyModifiers::ALT | KeyModifiers::CONTROL,
    );
    assert_eq!(keys::handle(&mut m, alt_x), Action::Redraw);
    assert_eq!(
        m.status.as_ref().map(|s| s.text.as_str()),
        Some("unknown key Ctrl+Alt+'x': press ? for the list of keys")
    );
    keys::handle(&mut m, key(KeyCode::Insert));
    insta::assert_snapshot!("unknown_key", screen(&draw(&mut m, 100, 20)));
    press(&mut m, &[KeyCode::Down]);
    assert!(m.status.is_none(), "the next key clears the hint");
}

#[test]
fn quit_keys() {
    for code in [KeyCode::Char('q'), KeyCode::Esc] {
        assert_eq!(press(&mut fixture(), &[code]), Action::Quit);
    }
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(keys::handle(&mut fixture(), ctrl_c), Action::Quit);
    let mut m = fixture();
    press(&mut m, &[KeyCode::Char('/')]);
    assert_eq!(
        keys::handle(&mut m, ctrl_c),
        Action::Quit,
        "also while typing"
    );
    let mut m = fixture();
    press(&mut m, &[KeyCode::Char('?')]);
    assert_eq!(
        press(&mut m, &[KeyCode::Esc]),
        Action::Redraw,
        "Esc closes the help first"
    );
    assert!(!m.help);
    assert_eq!(press(&mut m, &[KeyCode::Esc]), Action::Quit);
}

// ---------------------------------------------------------------- drawing

/// What every width must show of each tab.
fn check_tab(m: &mut Model, width: u16) {
    let t = draw(m, width, 24);
    let s = screen(&t);
    let lines = lines(&t);
    assert!(
        lines[0].starts_with(" wfpmonctl top │ 5 programs │ 7 conns")
            || lines[0].starts_with(" 5 programs │ 7 conns │ in 2.6 MiB/s out 11.9 MiB/s"),
        "{width}: {}",
        lines[0]
    );
    assert!(
        lines[0].contains("in 2.6 MiB/s out 11.9 MiB/s"),
        "{width}: {}",
        lines[0]
    );
    assert!(
        lines[1].contains("Programs (5)")
            && lines[1].contains("Connections (8)")
            && lines[1].contains("Events (4)"),
        "{width}: {}",
        lines[1]
    );
    match m.tab {
        Tab::Programs => {
            for title in ["PID", "PROGRAM", "IN/s▼", "OUT/s"] {
                assert!(lines[2].contains(title), "{width}: {title} in {}", lines[2]);
            }
            // Largest rate first, with its rate.
            assert!(
                lines[3].contains("1200")
                    && lines[3].contains("firefox")
                    && lines[3].contains("2.4 MiB/s"),
                "{width}:\n{s}"
            );
            let (row, curl) = line_with(&t, "curl");
            assert!(curl.starts_with('+'), "new program marked: {curl}");
            assert_eq!(fg_at(&t, row), Color::Green);
            assert!(s.contains("svchost.exe"), "{width}:\n{s}");
        }
        Tab::Connections => {
            for title in ["PROGRAM", "REMOTE", "IN/s▼", "OUT/s"] {
                assert!(lines[2].contains(title), "{width}: {title} in {}", lines[2]);
            }
            assert!(
                lines[3].contains("firefox") && lines[3].contains("1.9 MiB/s"),
                "{width}:\n{s}"
            );
            assert!(lines[3].contains("93.184.216.34:443"), "{width}:\n{s}");
            let (row, ended) = line_with(&t, "93.184.216.35");
            assert!(ended.starts_with('-'), "{ended}");
            assert_eq!(fg_at(&t, row), Color::Red);
            let (row, new) = line_with(&t, "203.0.113.9:80");
            assert!(new.starts_with('+'), "{new}");
            assert_eq!(fg_at(&t, row), Color::Green);
            if width >= 150 {
                assert!(
                    s.contains("example.com") && lines[2].contains("HOST"),
                    "{width}:\n{s}"
                );
            }
        }
        Tab::Events => {
            for title in ["TIME▼", "EVENT", "PROGRAM", "REMOTE"] {
                assert!(lines[2].contains(title), "{width}: {title} in {}", lines[2]);
            }
            assert!(
                // 08:00:03 UTC at UTC+1.
                lines[3].contains("09:00:03.000")
                    && lines[3].contains("established")
                    && lines[3].contains("curl"),
                "{width}:\n{s}"
            );
            assert!(
                lines[4].contains("ended")
                    && lines[4].contains("firefox")
                    && lines[4].contains("93.184.216.35:443"),
                "{width}:\n{s}"
            );
            if width >= 90 {
                assert!(
                    lines[1].contains("3 events lost to the driver's ring"),
                    "{width}: {}",
                    lines[1]
                );
            }
        }
    }
    assert!(
        lines[23].contains("? help") && lines[23].contains("q quit"),
        "{width}: {}",
        lines[23]
    );
}

#[test]
fn every_tab_at_every_width_from_60_to_200() {
    let mut m = fixture();
    for tab in Tab::ALL {
        m.tab = tab;
        for width in 60..=200 {
            check_tab(&mut m, width);
        }
    }
}

/// Keys pressed on the fixture.
type KeySteps = fn(&mut Model);

/// Each key's screen at every width from 60 to 200: what the key shows
/// is on the screen.
#[test]
fn every_key_at_every_width_from_60_to_200() {
    let states: [(&str, KeySteps, &str); 8] = [
        (
            "help",
            |m| {
                press(m, &[KeyCode::Char('?')]);
            },
            "wfpmonctl top: keys",
        ),
        (
            "typing",
            |m| {
                press(m, &[KeyCode::Char('/')]);
                typed(m, "svc :53");
            },
            "/svc :53█",
        ),
        (
            "bad CIDR",
            |m| {
                press(m, &[KeyCode::Char('/')]);
                typed(m, "::/200");
                press(m, &[KeyCode::Enter]);
            },
            "bad CIDR '::/200'",
        ),
        (
            "filtered",
            |m| {
                press(m, &[KeyCode::Char('/')]);
                typed(m, "dnscache");
                press(m, &[KeyCode::Enter]);
            },
            "svchost.exe",
        ),
        (
            "unknown key",
            |m| {
                press(m, &[KeyCode::Char('z')]);
            },
            "unknown key 'z'",
        ),
        (
            "paused",
            |m| {
                press(m, &[KeyCode::Char(' ')]);
            },
            "PAUSED",
        ),
        (
            "bits",
            |m| {
                press(m, &[KeyCode::Char('b')]);
            },
            "Mbit/s",
        ),
        (
            "expanded",
            |m| {
                press(m, &[KeyCode::Home, KeyCode::Enter]);
            },
            "└ 93.184",
        ),
    ];
    for (name, key, shown) in states {
        let mut m = fixture();
        key(&mut m);
        for width in 60..=200 {
            let t = draw(&mut m, width, 24);
            let s = screen(&t);
            assert!(
                s.contains(shown),
                "{name} at {width}: {shown:?} not shown:\n{s}"
            );
            if name == "filtered" {
                assert!(!s.contains("firefox"), "{name} at {width}:\n{s}");
            }
        }
    }
}

#[test]
fn snapshots_of_every_tab() {
    let mut m = fixture();
    for tab in Tab::ALL {
        m.tab = tab;
        for width in [60, 100, 200] {
            let name = format!("{}_{width}", tab.title().to_lowercase());
            insta::assert_snapshot!(name, screen(&draw(&mut m, width, 14)));
        }
    }
}

#[test]
fn expanding_a_program_lists_its_connections() {
    let mut m = fixture();
    // The selection followed System, first at the first sample (no rates
    // yet); Home goes to firefox.
    assert_eq!(
        m.rows[0][m.selected[0]],
        Row::Program(super::model::ProgramId { key: 0, pid: 4 })
    );
    press(&mut m, &[KeyCode::Home, KeyCode::Enter]);
    let t = draw(&mut m, 100, 20);
    let s = screen(&t);
    let (row, firefox) = line_with(&t, "firefox");
    assert!(firefox.contains("▾ firefox.exe"), "{s}");
    let children: Vec<String> = lines(&t)[row + 1..row + 4].to_vec();
    assert!(
        children[0].contains("└ 93.184.216.34:443") && children[0].contains("1.9 MiB/s"),
        "{s}"
    );
    assert!(
        children[2].contains("└ 93.184.216.35:443") && children[2].starts_with('-'),
        "{s}"
    );
    insta::assert_snapshot!("expanded", s);
    // On a child row, Left collapses its program.
    press(&mut m, &[KeyCode::Down, KeyCode::Left]);
    assert!(m.expanded.is_empty());
    assert_eq!(m.selected[0], 0, "back on the program");
    press(&mut m, &[KeyCode::Char('+')]);
    assert_eq!(m.rows[0].len(), 5 + 8);
    press(&mut m, &[KeyCode::Char('-')]);
    assert_eq!(m.rows[0].len(), 5);
}

#[test]
fn help_pause_units_and_navigation() {
    let mut m = fixture();
    press(&mut m, &[KeyCode::Char('?')]);
    let t = draw(&mut m, 100, 30);
    for (k, what) in keys::HELP {
        let (_, line) = line_with(&t, what);
        assert!(line.contains(k), "{k}: {line}");
    }
    insta::assert_snapshot!("help", screen(&t));
    press(&mut m, &[KeyCode::Char('x')]);
    assert!(!m.help, "any key closes the help");

    assert_eq!(press(&mut m, &[KeyCode::Char(' ')]), Action::Redraw);
    let t = draw(&mut m, 100, 20);
    assert!(lines(&t)[0].ends_with("│ PAUSED"), "{}", lines(&t)[0]);
    assert_eq!(
        press(&mut m, &[KeyCode::Char(' ')]),
        Action::Refresh,
        "resuming samples at once"
    );

    press(&mut m, &[KeyCode::Char('b')]);
    let t = draw(&mut m, 100, 20);
    assert!(
        lines(&t)[3].contains("20 Mbit/s"),
        "2 500 000 B/s: {}",
        lines(&t)[3]
    );
    assert!(lines(&t)[19].contains("b bytes"));
    insta::assert_snapshot!("bits", screen(&t));
    press(&mut m, &[KeyCode::Char('b')]);

    press(&mut m, &[KeyCode::Home, KeyCode::Down, KeyCode::Down]);
    assert_eq!(m.selected[0], 2);
    press(&mut m, &[KeyCode::End]);
    assert_eq!(m.selected[0], 4);
    press(&mut m, &[KeyCode::Down]);
    assert_eq!(m.selected[0], 4, "stays on the last row");
    press(&mut m, &[KeyCode::Home, KeyCode::PageDown]);
    assert_eq!(m.selected[0], 4);
    press(
        &mut m,
        &[KeyCode::PageUp, KeyCode::Char('j'), KeyCode::Char('k')],
    );
    assert_eq!(m.selected[0], 0);
    for (code, tab) in [
        (KeyCode::Tab, Tab::Connections),
        (KeyCode::Tab, Tab::Events),
        (KeyCode::Tab, Tab::Programs),
        (KeyCode::BackTab, Tab::Events),
        (KeyCode::Char('c'), Tab::Connections),
        (KeyCode::Char('p'), Tab::Programs),
    ] {
        press(&mut m, &[code]);
        assert_eq!(m.tab, tab);
    }
}

#[test]
fn the_selection_follows_its_row_and_the_table_scrolls() {
    let mut m = fixture();
    press(&mut m, &[KeyCode::Char('c'), KeyCode::End]);
    let last = *m.rows[1].last().unwrap();
    // 8 connections in a window of 6 rows: the selected last one is shown.
    let t = draw(&mut m, 100, MIN_HEIGHT_USED);
    let Row::Conn(id) = last else { unreachable!() };
    let remote = m.conns[&id].remote.to_string();
    line_with(&t, &remote);
    // A new sort moves the row; the selection goes with it.
    press(&mut m, &[KeyCode::Char('r')]);
    assert_eq!(m.rows[1][m.selected[1]], last);
}

const MIN_HEIGHT_USED: u16 = view::MIN_HEIGHT;

#[test]
fn a_terminal_too_small_is_told_so_and_nothing_panics() {
    let mut m = fixture();
    for (w, h) in [(59, 24), (40, 8), (100, 9), (1, 1), (0, 0), (10, 3)] {
        let t = draw(&mut m, w, h);
        if w >= 20 && h >= 5 {
            assert!(
                screen(&t).contains(&format!("The terminal is too small ({w}×{h})")),
                "{}",
                screen(&t)
            );
        }
    }
    insta::assert_snapshot!("too_small", screen(&draw(&mut m, 40, 8)));
    // Help, filter typing and every tab at the smallest size drawn.
    press(&mut m, &[KeyCode::Char('?')]);
    draw(&mut m, 60, 10);
    press(&mut m, &[KeyCode::Char('?'), KeyCode::Char('/')]);
    typed(&mut m, "x".repeat(200).as_str());
    let t = draw(&mut m, 60, 10);
    line_with(&t, "/xxxx");
}

#[test]
fn an_empty_result_says_why() {
    let mut m = fixture();
    press(&mut m, &[KeyCode::Char('/')]);
    typed(&mut m, "nothing-like-this");
    press(&mut m, &[KeyCode::Enter]);
    let t = draw(&mut m, 100, 12);
    line_with(
        &t,
        "nothing matches the filter 'nothing-like-this' (/ to change it)",
    );
    line_with(&t, " filter: nothing-like-this");
    insta::assert_snapshot!("filter_empty", screen(&t));
    let mut m = Model::new(Duration::from_secs(1), Units::Bytes, false);
    m.rebuild();
    line_with(&draw(&mut m, 100, 12), "no connection is tracked");
    m.tab = Tab::Events;
    line_with(&draw(&mut m, 100, 12), "no flow event yet");
}

#[test]
fn a_filter_applied_is_shown() {
    let mut m = fixture();
    press(&mut m, &[KeyCode::Char('c'), KeyCode::Char('/')]);
    typed(&mut m, "93.184.216.0/24");
    let t = draw(&mut m, 100, 14);
    line_with(&t, "/93.184.216.0/24█  Enter applies, Esc cancels");
    press(&mut m, &[KeyCode::Enter]);
    let t = draw(&mut m, 100, 14);
    assert!(lines(&t)[0].contains("(filtered)"));
    let rows: Vec<String> = lines(&t)[3..6].to_vec();
    assert!(rows.iter().all(|r| r.contains("firefox")), "{}", screen(&t));
    assert!(!screen(&t).contains("svchost"));
    insta::assert_snapshot!("filter_cidr", screen(&t));
}

// -------------------------------------------------------------- the loop

/// Keys and resizes at given monotonic times; the clock advances by the
/// time waited.
struct Script {
    events: VecDeque<(Duration, Event)>,
    clock: Rc<Cell<Duration>>,
}

impl Input for Script {
    fn next(&mut self, timeout: Duration) -> io::Result<Option<Event>> {
        let now = self.clock.get();
        match self.events.front() {
            Some((at, _)) if *at <= now + timeout => {
                self.clock.set(now.max(*at));
                Ok(self.events.pop_front().map(|(_, e)| e))
            }
            Some(_) => {
                self.clock.set(now + timeout);
                Ok(None)
            }
            None => Err(io::Error::other("the script ran out")),
        }
    }
}

struct ScriptClock(Rc<Cell<Duration>>);

impl Clock for ScriptClock {
    fn now(&mut self) -> (SystemTime, Duration) {
        let t = self.0.get();
        (wall(t.as_secs()), t)
    }
    fn utc_offset(&mut self, time: SystemTime) -> i32 {
        cet(time)
    }
}

/// A source counting samples, over the simulated driver, whose flows
/// move 1000 bytes per 100 ms of the script's time.
struct Counting<'a> {
    inner: DeviceSource<'a, SimDriver, fn(u64) -> Option<String>>,
    samples: Vec<Duration>,
    fail_at: Option<usize>,
}

impl Source for Counting<'_> {
    fn sample(&mut self, wall: SystemTime, mono: Duration) -> Result<Sample, Error> {
        self.samples.push(mono);
        if self.fail_at == Some(self.samples.len()) {
            return Err(Error::new(
                crate::error::Kind::DriverStopped,
                "the driver went away",
            ));
        }
        let mut s = self.inner.sample(wall, mono)?;
        let ms = u64::try_from(mono.as_millis()).unwrap();
        for f in &mut s.flows {
            f.age_ms = ms;
            f.bytes_inbound = ms * 10;
        }
        Ok(s)
    }
    fn name(&mut self, key: u64, pid: u64) -> Proc {
        self.inner.name(key, pid)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn run_script(
    events: Vec<(Duration, Event)>,
    fail_at: Option<usize>,
    interrupt_at: Option<Duration>,
) -> (
    Result<(), Error>,
    Vec<Duration>,
    Terminal<TestBackend>,
    Model,
) {
    let mut driver = SimDriver {
        flows: (1..=3).map(flow).collect(),
        processes: vec![process(1)],
        ..SimDriver::default()
    };
    driver.flows[0].process_key = 1 << 32 | 1;
    let mut source = Counting {
        inner: DeviceSource::new(
            &mut driver,
            (|_| None) as fn(u64) -> Option<String>,
            Vec::new(),
            |_| {},
        ),
        samples: Vec::new(),
        fail_at,
    };
    let time = Rc::new(Cell::new(Duration::ZERO));
    let mut script = Script {
        events: events.into(),
        clock: Rc::clone(&time),
    };
    let mut clock = ScriptClock(Rc::clone(&time));
    let mut terminal = Terminal::new(TestBackend::new(100, 20)).unwrap();
    let mut model = Model::new(Duration::from_secs(1), Units::Bytes, false);
    let mut interrupted = || interrupt_at.is_some_and(|t| time.get() >= t);
    let result = run::run(
        &mut terminal,
        &mut model,
        &mut source,
        &super::NoNames,
        &mut script,
        &mut clock,
        &mut interrupted,
    );
    (result, source.samples, terminal, model)
}

fn ch(c: char) -> Event {
    Event::Key(key(KeyCode::Char(c)))
}

#[test]
fn the_first_paint_has_rates_and_q_quits() {
    let (result, samples, terminal, _) = run_script(vec![(ms(1500), ch('q'))], None, None);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        samples,
        [ms(0), ms(250), ms(1250)],
        "two samples 250 ms apart, then every second"
    );
    // The screen of the last refresh: every flow moved 10 000 B/s.
    let (_, row) = line_with(&terminal, "app1.exe");
    assert!(row.contains("9.8 KiB/s"), "{}", screen(&terminal));
}

#[test]
fn nothing_is_drawn_before_the_second_sample() {
    // q during the priming wait: the loop ends without a paint.
    let (result, samples, terminal, _) = run_script(vec![(ms(100), ch('q'))], None, None);
    assert!(result.is_ok());
    assert_eq!(samples, [ms(0)]);
    assert!(screen(&terminal).trim().is_empty());
}

#[test]
fn pause_stops_sampling_and_resume_samples_at_once() {
    let events = vec![(ms(300), ch(' ')), (ms(3400), ch(' ')), (ms(3500), ch('q'))];
    let (result, samples, _, model) = run_script(events, None, None);
    assert!(result.is_ok());
    assert_eq!(samples, [ms(0), ms(250), ms(3400)]);
    assert!(!model.paused);
}

#[test]
fn resize_redraws_at_the_new_size_and_ctrl_c_or_an_interrupt_ends() {
    let events = vec![
        (ms(400), Event::Resize(80, 20)),
        (
            ms(500),
            Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        ),
    ];
    let (result, _, terminal, _) = run_script(events, None, None);
    assert!(result.is_ok());
    // TestBackend keeps its size; the loop redrew after the resize without
    // failing, and Ctrl+C ended it.
    assert!(screen(&terminal).contains("app1.exe"));
    let (result, samples, _, _) = run_script(vec![(ms(10_000), ch('q'))], None, Some(ms(2000)));
    assert!(result.is_ok());
    assert_eq!(
        samples.len(),
        3,
        "ended by the interrupt at 2 s: {samples:?}"
    );
}

#[test]
fn a_failing_driver_ends_the_view_with_its_error() {
    let (result, samples, _, _) = run_script(vec![(ms(10_000), ch('q'))], Some(3), None);
    let err = result.unwrap_err();
    assert_eq!(
        (err.exit_code(), err.message.as_str()),
        (5, "the driver went away")
    );
    assert_eq!(samples.len(), 3);
}

#[test]
fn an_unknown_key_in_the_loop_shows_a_hint() {
    let (result, _, terminal, _) =
        run_script(vec![(ms(400), ch('z')), (ms(500), ch('q'))], None, None);
    assert!(result.is_ok());
    line_with(&terminal, "unknown key 'z': press ? for the list of keys");
}

#[test]
fn top_refuses_without_a_terminal() {
    let err = run::not_a_terminal();
    assert_eq!(err.exit_code(), 11);
    assert!(
        err.message.contains("`wfpmonctl flows --watch SECONDS`"),
        "{err}"
    );
}
