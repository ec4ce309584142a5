//! wfpmon-export: streams the wfpmon driver's process-attributed flows to
//! IPFIX collectors (RFC 7011) and Prometheus. Everything but the
//! `windows` module is platform-independent and tested on any host;
//! README.md describes the modules and the choices behind them.

pub mod accounting;
pub mod config;
pub mod exporter;
pub mod ipfix;
pub mod metrics;
pub mod transport;
