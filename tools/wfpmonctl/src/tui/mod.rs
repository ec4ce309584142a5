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

use std::net::IpAddr;
use std::time::Duration;

use crate::cli::TopArgs;
use crate::error::Error;

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
