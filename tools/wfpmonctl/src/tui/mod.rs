//! `wfpmonctl top`: the interactive live view (ratatui on crossterm).
//!
//! - [`model`]: the view's state — connections, rates, new/ended marks,
//!   programs, events, sort, filter, selection — with no drawing;
//! - [`source`]: samples from the driver through the device client;
//! - [`view`]: drawing the model (only the rows that fit);
//! - [`keys`]: what each key does to the model;
//! - [`filter`], [`units`]: the `/` filter and the units of rates;
//! - [`run`]: the refresh loop and the terminal (raw mode, alternate
//!   screen, restored on every exit and on panic).

pub mod filter;
pub mod keys;
pub mod model;
pub mod run;
pub mod source;
pub mod units;
pub mod view;

#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::time::Duration;

use crate::cli::TopArgs;
use crate::error::Error;
use crate::names::{Hosts, Lookup, NAME_STEP, Services};

/// Names people recognize, as far as they are known: the services a
/// process hosts and the host names of remote addresses.
///
/// Asked at every refresh (for each program, and for each connection unless
/// `-n`), so an implementation answers from a cache and looks names up in
/// the background; `None` while unknown.
pub trait Names {
    /// The services hosted by process `pid` (`Dnscache, NlaSvc`).
    fn services(&self, pid: u64) -> Option<String>;
    /// The host name of `address` (reverse DNS).
    fn remote_host(&self, address: IpAddr) -> Option<String>;
}

/// No names: every answer is unknown.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNames;

impl Names for NoNames {
    fn services(&self, _: u64) -> Option<String> {
        None
    }
    fn remote_host(&self, _: IpAddr) -> Option<String> {
        None
    }
}

/// The live view's names, from the same caches as the other commands.
///
/// From `crate::names`: the services of a process (the table read again
/// through `read_services` when stale), and — with a [`Hosts`] cache, that
/// is without `-n` — the host name of a remote address, asked for when the
/// view shows it, with the lookups' answers taken at most every
/// [`NAME_STEP`] of `now` (monotonic): never a wait (a refresh shows what
/// is known; names appear as they arrive).
pub struct CachedNames<L, N, R> {
    services: RefCell<Services>,
    hosts: RefCell<Option<Hosts<L>>>,
    polled: Cell<Option<Duration>>,
    now: N,
    read_services: R,
}

impl<L, N, R, E> CachedNames<L, N, R>
where
    L: Lookup,
    N: Fn() -> Duration,
    R: Fn() -> Result<Vec<(u32, String)>, E>,
{
    /// Names from `hosts` (`None`: no host names) and the service table
    /// `read_services` gives, at the monotonic time `now` gives.
    pub fn new(hosts: Option<Hosts<L>>, now: N, read_services: R) -> Self {
        Self {
            services: RefCell::new(Services::default()),
            hosts: RefCell::new(hosts),
            polled: Cell::new(None),
            now,
            read_services,
        }
    }
}

impl<L, N, R, E> Names for CachedNames<L, N, R>
where
    L: Lookup,
    N: Fn() -> Duration,
    R: Fn() -> Result<Vec<(u32, String)>, E>,
{
    fn services(&self, pid: u64) -> Option<String> {
        let now = (self.now)();
        let mut services = self.services.borrow_mut();
        services.refresh(now, &self.read_services);
        let names = services.of(pid);
        (!names.is_empty()).then(|| names.join(", "))
    }

    fn remote_host(&self, address: IpAddr) -> Option<String> {
        let now = (self.now)();
        let mut hosts = self.hosts.borrow_mut();
        let hosts = hosts.as_mut()?;
        hosts.want(address, now);
        if self
            .polled
            .get()
            .is_none_or(|at| now.saturating_sub(at) >= NAME_STEP)
        {
            hosts.poll(now);
            self.polled.set(Some(now));
        }
        hosts.name(address)
    }
}

/// A new view as `args` ask for.
pub fn model(args: &TopArgs) -> model::Model {
    model::Model::new(
        Duration::from_secs_f64(args.interval),
        args.units,
        args.numeric,
    )
}

/// `wfpmonctl top` on this process's terminal, reading `source`.
///
/// # Errors
/// See [`run::terminal`].
pub fn top(
    args: &TopArgs,
    source: &mut dyn source::Source,
    names: &dyn Names,
    interrupted: &mut dyn FnMut() -> bool,
) -> Result<(), Error> {
    let mut model = model(args);
    run::terminal(&mut model, source, names, interrupted)
}
