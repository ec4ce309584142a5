//! wfpmon-export: streams the wfpmon driver's process-attributed flows to
//! IPFIX collectors (RFC 7011) and Prometheus. Everything but the
//! `windows` module is platform-independent and tested on any host;
//! README.md describes the modules and the choices behind them.

// Lints relaxed for this crate, each for a reason:
#![allow(
    // The accounting entry points take a flow's fields one by one (the
    // driver's events and listing entries carry them so); a struct per
    // call would only be built to be taken apart.
    clippy::too_many_arguments,
    // The sender thread holds the queue's lock across each decision on
    // purpose (the decision and the queue must agree).
    clippy::significant_drop_tightening,
    // The exposition renderer and the sender read best as one list each.
    clippy::too_many_lines
)]

pub mod accounting;
pub mod config;
pub mod exporter;
pub mod ipfix;
pub mod metrics;
pub mod run;
pub mod service_status;
pub mod transport;
#[cfg(windows)]
pub mod windows;
