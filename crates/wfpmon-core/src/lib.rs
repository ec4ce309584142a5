//! # wfpmon-core
//!
//! Everything of the wfpmon callout driver that does not need the kernel:
//!
//! - [`catalog`]: the callouts, their fixed keys and layers — the one place
//!   wfpmon's GUIDs are defined;
//! - [`flow`]: flow identity and the per-flow traffic counters the
//!   per-packet path updates without locks;
//! - [`process`]: the processes of tracked flows, interned, with totals
//!   that survive their flows;
//! - [`events`]: the ring of flow events user mode reads;
//! - [`stats`]: driver-wide counters and their snapshot;
//! - [`unload`]: the callout unregistration protocol of "Unloading a Callout
//!   Driver" (`STATUS_DEVICE_BUSY` → remove flow contexts → retry) as a
//!   state machine;
//! - [`protocol`]: the control device's IOCTL codes and request/response
//!   layouts, with the request validator;
//! - [`security`]: the control device's security descriptor;
//! - [`status`]: the `NTSTATUS` values this logic speaks in.
//!
//! The crate is `no_std`, allocation-free and has no WDK dependency, so all
//! of it is tested on the development host with `cargo test`.

#![cfg_attr(not(test), no_std)]

pub mod catalog;
pub mod events;
pub mod flow;
pub mod process;
pub mod protocol;
pub mod security;
pub mod stats;
pub mod status;
pub mod unload;
pub mod wire;
