//! # wfpmonctl
//!
//! User-mode control tool of the wfpmon WFP callout driver.
//!
//! The logic is platform-independent and tested on any host:
//!
//! - [`plan`]: the filter-engine objects `install` adds (keys, layers,
//!   flags, weights, order), built from `wfpmon_core::catalog`;
//! - [`engine`]: install / uninstall / status against a [`engine::FilterEngine`];
//! - [`device`]: statistics, flow list (with buffer growth) and counting
//!   switch against a [`device::ControlDevice`];
//! - [`output`]: tables and JSON;
//! - [`cli`]: the command line;
//! - [`exit`]: failure kinds and their distinct exit codes;
//! - [`app`]: running a command and its refresh loop.
//!
//! Only the `windows` module (compiled for Windows) touches the operating
//! system: it implements the two traits with the `Fwpm*` API and
//! `DeviceIoControl`, and queries the service control manager.

pub mod app;
pub mod cli;
pub mod device;
pub mod engine;
pub mod exit;
pub mod output;
pub mod plan;

#[cfg(windows)]
pub mod windows;
