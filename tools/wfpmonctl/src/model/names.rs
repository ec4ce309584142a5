//! The names administrators recognize: the services a process hosts
//! (`svchost.exe (Dnscache)`) and the reverse-DNS names of remote
//! addresses.
//!
//! Both are caches over the operating system, which the views ask without
//! ever waiting: [`Services`] re-reads the service control manager's
//! process-to-service table when it is older than [`SERVICES_MAX_AGE`];
//! [`Hosts`] starts reverse lookups through a [`Lookup`] (on Windows
//! `GetNameInfoW` on the system thread pool), takes their answers when they
//! come, and keeps each name for [`HOST_TTL`] (an address without a name for
//! [`NO_NAME_TTL`]); a lookup that has not answered after [`LOOKUP_TIMEOUT`]
//! counts as failed. A view shows what is known now; a one-shot command may
//! give the lookups a bounded time first ([`Hosts::settle`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

/// How long the service table is used before it is read again.
pub const SERVICES_MAX_AGE: Duration = Duration::from_secs(10);
/// How long a host name is kept before it is looked up again (names
/// change; `GetNameInfoW` does not give the record's TTL).
pub const HOST_TTL: Duration = Duration::from_mins(5);
/// How long "no name" is kept.
pub const NO_NAME_TTL: Duration = Duration::from_mins(1);
/// A lookup without an answer after this long counts as failed (its
/// answer is still taken should it come).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a view that never waits takes the lookups' answers (and
/// starts queued ones), and the step of a one-shot listing's wait.
pub const NAME_STEP: Duration = Duration::from_millis(50);
/// Lookups running at once (each holds a thread-pool thread while the
/// resolver waits); more wait in a queue.
pub const MAX_IN_FLIGHT: usize = 16;

/// The processes that host services, and their services (the service
/// control manager's `SERVICE_WIN32` services that run, by process id).
#[derive(Debug, Default)]
pub struct Services {
    by_pid: HashMap<u64, Vec<String>>,
    read_at: Option<Duration>,
}

impl Services {
    /// Reads the table with `read` (`(pid, service name)` pairs) when it
    /// was never read or is older than [`SERVICES_MAX_AGE`] at `now`
    /// (monotonic). A failed read keeps what was known.
    pub fn refresh<E>(
        &mut self,
        now: Duration,
        read: impl FnOnce() -> Result<Vec<(u32, String)>, E>,
    ) {
        if self
            .read_at
            .is_some_and(|at| now.saturating_sub(at) < SERVICES_MAX_AGE)
        {
            return;
        }
        self.read_at = Some(now);
        if let Ok(pairs) = read() {
            self.by_pid.clear();
            for (pid, name) in pairs.into_iter().filter(|(pid, _)| *pid != 0) {
                self.by_pid.entry(u64::from(pid)).or_default().push(name);
            }
            for names in self.by_pid.values_mut() {
                names.sort_by_key(|n| n.to_lowercase());
                names.dedup();
            }
        }
    }

    /// The services process `pid` hosts, sorted (empty: none).
    pub fn of(&self, pid: u64) -> &[String] {
        self.by_pid.get(&pid).map_or(&[], Vec::as_slice)
    }
}

/// Reverse-DNS lookups that run by themselves: started here, answered
/// later (the Windows one runs `GetNameInfoW` on the system thread pool).
pub trait Lookup {
    /// Starts a lookup of `addr`; `false` when it could not be started.
    fn start(&mut self, addr: IpAddr) -> bool;
    /// The lookups that finished since the last call: each address and its
    /// name (`None`: no name, or the lookup failed).
    fn finished(&mut self) -> Vec<(IpAddr, Option<String>)>;
}

/// What is known of an address.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// The name (`None`: none known).
    name: Option<String>,
    /// When it is to be looked up again (monotonic).
    until: Duration,
    /// When a running lookup started.
    pending: Option<Duration>,
}

/// Reverse-DNS names of remote addresses, cached with expiry.
#[derive(Debug)]
pub struct Hosts<L> {
    lookup: L,
    known: HashMap<IpAddr, Entry>,
    queue: VecDeque<IpAddr>,
    queued: HashSet<IpAddr>,
}

/// Whether `addr` can have a name worth asking for: not the unspecified
/// address, not multicast or broadcast.
const fn nameable(addr: IpAddr) -> bool {
    let broadcast = matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
    !(addr.is_unspecified() || addr.is_multicast() || broadcast)
}

impl<L: Lookup> Hosts<L> {
    /// An empty cache over the resolver `lookup`.
    pub fn new(lookup: L) -> Self {
        Self {
            lookup,
            known: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
        }
    }

    /// Asks for the name of `addr` at `now`: queued for a lookup when it
    /// is not known, or known for longer than its time to live (the old
    /// name stays until the new answer). Never waits.
    pub fn want(&mut self, addr: IpAddr, now: Duration) {
        if !nameable(addr) || self.queued.contains(&addr) {
            return;
        }
        let stale = self
            .known
            .get(&addr)
            .is_none_or(|e| e.pending.is_none() && now >= e.until);
        if stale {
            self.queued.insert(addr);
            self.queue.push_back(addr);
        }
    }

    /// Takes the answers that came, times out lookups that did not, and
    /// starts queued lookups (at most [`MAX_IN_FLIGHT`] pending at once; a
    /// timed-out one no longer counts).
    pub fn poll(&mut self, now: Duration) {
        for (addr, name) in self.lookup.finished() {
            let ttl = if name.is_some() {
                HOST_TTL
            } else {
                NO_NAME_TTL
            };
            self.known.insert(
                addr,
                Entry {
                    name,
                    until: now + ttl,
                    pending: None,
                },
            );
        }
        for entry in self.known.values_mut() {
            if entry
                .pending
                .is_some_and(|at| now.saturating_sub(at) >= LOOKUP_TIMEOUT)
            {
                // Failed for now; the thread may still answer.
                (entry.pending, entry.until) = (None, now + NO_NAME_TTL);
            }
        }
        let mut in_flight = self.known.values().filter(|e| e.pending.is_some()).count();
        while in_flight < MAX_IN_FLIGHT {
            let Some(addr) = self.queue.pop_front() else {
                break;
            };
            self.queued.remove(&addr);
            let entry = self.known.entry(addr).or_insert(Entry {
                name: None,
                until: now,
                pending: None,
            });
            if self.lookup.start(addr) {
                in_flight += 1;
                entry.pending = Some(now);
            } else {
                entry.until = now + NO_NAME_TTL;
            }
        }
    }

    /// Lookups started or queued that have not answered (nor timed out).
    pub fn pending(&self) -> usize {
        self.queue.len() + self.known.values().filter(|e| e.pending.is_some()).count()
    }

    /// The name known for `addr` now, if any.
    pub fn name(&self, addr: IpAddr) -> Option<String> {
        self.known.get(&addr).and_then(|e| e.name.clone())
    }

    /// Gives the lookups asked for up to `budget` to answer (a one-shot
    /// listing: names are worth a short wait there): polls, and while some
    /// are pending, sleeps `step` through `sleep`, which returns the time
    /// then.
    pub fn settle(
        &mut self,
        now: Duration,
        budget: Duration,
        step: Duration,
        sleep: &mut impl FnMut(Duration) -> Duration,
    ) {
        let (deadline, mut now) = (now + budget, now);
        loop {
            self.poll(now);
            if self.pending() == 0 || now >= deadline {
                return;
            }
            now = sleep(step.min(deadline.saturating_sub(now)));
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A scripted resolver: each address answers with the next of its
    /// names after its delay (in `poll` calls); `started` records lookups.
    #[derive(Clone, Default)]
    pub struct Scripted(pub Rc<RefCell<Script>>);

    /// An answer (`None`: no name) and its delay in `finished` calls
    /// (`None`: never).
    pub type Answer = (Option<String>, Option<usize>);

    #[derive(Default)]
    pub struct Script {
        /// Per address: the answers to successive lookups, and how many
        /// `finished` calls each takes (`None`: never answers).
        pub answers: HashMap<IpAddr, VecDeque<Answer>>,
        pub running: Vec<(IpAddr, Option<String>, Option<usize>)>,
        pub started: Vec<IpAddr>,
        /// `start` refuses (no thread pool).
        pub refuse: bool,
    }

    impl Lookup for Scripted {
        fn start(&mut self, addr: IpAddr) -> bool {
            let mut s = self.0.borrow_mut();
            if s.refuse {
                return false;
            }
            s.started.push(addr);
            let (name, delay) = s
                .answers
                .get_mut(&addr)
                .and_then(VecDeque::pop_front)
                .unwrap_or((None, Some(0)));
            s.running.push((addr, name, delay));
            true
        }

        fn finished(&mut self) -> Vec<(IpAddr, Option<String>)> {
            let mut s = self.0.borrow_mut();
            let mut done = Vec::new();
            s.running.retain_mut(|(addr, name, delay)| match delay {
                Some(0) => {
                    done.push((*addr, name.take()));
                    false
                }
                Some(n) => {
                    *n -= 1;
                    true
                }
                None => true,
            });
            done
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn services_by_pid_sorted_refreshed_when_stale() {
        let mut s = Services::default();
        let reads = std::cell::Cell::new(0);
        let table = |pairs: &[(u32, &str)]| {
            reads.set(reads.get() + 1);
            Ok::<_, ()>(pairs.iter().map(|(p, n)| (*p, (*n).to_owned())).collect())
        };
        s.refresh(secs(0), || {
            table(&[
                (900, "LanmanWorkstation"),
                (900, "Dnscache"),
                (0, "Stopped"),
                (4, "x"),
            ])
        });
        assert_eq!(
            s.of(900),
            ["Dnscache", "LanmanWorkstation"],
            "several, sorted"
        );
        assert!(s.of(0).is_empty() && s.of(1234).is_empty());
        s.refresh(secs(9), || table(&[]));
        assert_eq!(
            (reads.get(), s.of(900).len()),
            (1, 2),
            "fresh: not read again"
        );
        s.refresh(secs(10), || Err(()));
        assert_eq!(s.of(900).len(), 2, "a failed read keeps what was known");
        s.refresh(secs(25), || table(&[(901, "Dnscache")]));
        assert_eq!(
            (s.of(900), s.of(901)),
            (&[][..], &["Dnscache".to_owned()][..]),
            "moved"
        );
    }

    #[test]
    fn lookups_are_asynchronous_cached_and_expire() {
        let script = Scripted::default();
        let a = ip("192.0.2.7");
        script.0.borrow_mut().answers.insert(
            a,
            [
                (Some("a.example".into()), Some(1)),
                (Some("b.example".into()), Some(0)),
            ]
            .into(),
        );
        let mut hosts = Hosts::new(script.clone());
        hosts.want(a, secs(0));
        assert_eq!(
            (hosts.name(a), hosts.pending()),
            (None, 1),
            "queued, not waited for"
        );
        hosts.poll(secs(0));
        assert_eq!(script.0.borrow().started, [a]);
        hosts.want(a, secs(0));
        hosts.poll(secs(1));
        assert_eq!(
            (hosts.name(a), script.0.borrow().started.len()),
            (None, 1),
            "one lookup at a time"
        );
        hosts.poll(secs(2));
        assert_eq!(hosts.name(a).as_deref(), Some("a.example"));
        assert_eq!(hosts.pending(), 0);
        hosts.want(a, secs(2 + 299));
        hosts.poll(secs(2 + 299));
        assert_eq!(script.0.borrow().started.len(), 1, "cached for HOST_TTL");
        hosts.want(a, secs(2 + 300));
        assert_eq!(
            hosts.name(a).as_deref(),
            Some("a.example"),
            "the old name until the new one comes"
        );
        hosts.poll(secs(2 + 300));
        hosts.poll(secs(2 + 301));
        assert_eq!(
            hosts.name(a).as_deref(),
            Some("b.example"),
            "the name changed"
        );
    }

    #[test]
    fn a_lookup_that_never_answers_times_out_and_no_name_is_kept_shorter() {
        let script = Scripted::default();
        let (slow, none) = (ip("2001:db8::1"), ip("198.51.100.1"));
        script
            .0
            .borrow_mut()
            .answers
            .insert(slow, [(None, None)].into());
        let mut hosts = Hosts::new(script.clone());
        for t in [0, 1] {
            hosts.want(slow, secs(t));
            hosts.want(none, secs(t));
            hosts.poll(secs(t));
        }
        assert_eq!(
            (hosts.name(none), hosts.pending()),
            (None, 1),
            "no name: answered"
        );
        hosts.poll(secs(10));
        assert_eq!(hosts.pending(), 0, "timed out after LOOKUP_TIMEOUT");
        hosts.want(slow, secs(69));
        hosts.want(none, secs(60));
        hosts.poll(secs(69));
        assert_eq!(
            script.0.borrow().started.len(),
            2,
            "no name is kept NO_NAME_TTL"
        );
        hosts.want(slow, secs(70));
        hosts.want(none, secs(70));
        hosts.poll(secs(70));
        assert_eq!(script.0.borrow().started.len(), 4, "then asked again");
    }

    #[test]
    fn at_most_max_in_flight_and_no_lookup_of_what_has_no_name() {
        let script = Scripted::default();
        for i in 0..40u8 {
            script
                .0
                .borrow_mut()
                .answers
                .insert(IpAddr::from([10, 0, 0, i]), [(None, None)].into());
        }
        let mut hosts = Hosts::new(script.clone());
        for i in 0..40u8 {
            hosts.want(IpAddr::from([10, 0, 0, i]), secs(0));
        }
        for addr in [
            "0.0.0.0",
            "::",
            "224.0.0.251",
            "ff02::fb",
            "255.255.255.255",
        ] {
            hosts.want(ip(addr), secs(0));
        }
        hosts.poll(secs(0));
        assert_eq!(script.0.borrow().started.len(), MAX_IN_FLIGHT);
        assert_eq!(hosts.pending(), 40);
        script.0.borrow_mut().refuse = true;
        hosts.poll(secs(11));
        assert_eq!(
            hosts.pending(),
            0,
            "timed out; the refused ones are no names"
        );
    }

    #[test]
    fn settle_waits_only_for_pending_lookups_and_at_most_the_budget() {
        let script = Scripted::default();
        let (fast, slow) = (ip("192.0.2.1"), ip("192.0.2.2"));
        script
            .0
            .borrow_mut()
            .answers
            .insert(fast, [(Some("fast.example".into()), Some(2))].into());
        script
            .0
            .borrow_mut()
            .answers
            .insert(slow, [(Some("slow.example".into()), None)].into());
        let mut hosts = Hosts::new(script);
        hosts.want(fast, secs(0));
        let clock = std::cell::Cell::new(Duration::ZERO);
        let sleeps = std::cell::Cell::new(0);
        let mut sleep = |d: Duration| {
            sleeps.set(sleeps.get() + 1);
            clock.set(clock.get() + d);
            clock.get()
        };
        hosts.settle(secs(0), secs(1), Duration::from_millis(50), &mut sleep);
        assert_eq!(hosts.name(fast).as_deref(), Some("fast.example"));
        assert_eq!(sleeps.get(), 3, "until it answered (on the third look)");
        let start = clock.get();
        hosts.want(slow, start);
        hosts.settle(start, secs(1), Duration::from_millis(300), &mut sleep);
        assert_eq!(hosts.name(slow), None);
        assert_eq!(
            clock.get().saturating_sub(start),
            secs(1),
            "never longer than the budget"
        );
    }
}
