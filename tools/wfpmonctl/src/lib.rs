//! # wfpmonctl
//!
//! User-mode control tool of the wfpmon WFP callout driver. Everything but
//! the `windows` module is platform-independent and tested on any host:
//!
//! - [`cli`]: the command line (clap derive);
//! - [`app`]: running a command against a [`app::System`];
//! - [`plan`], [`engine`]: the filter-engine objects; install, uninstall, query;
//! - [`device`]: the control device's IOCTLs;
//! - [`flows`], [`status`], [`render`]: the views, as JSON documents and text;
//! - [`error`]: failures and exit codes.

pub mod app;
pub mod cli;
pub mod device;
pub mod engine;
pub mod error;
pub mod flows;
pub mod plan;
pub mod render;
pub mod status;

#[cfg(windows)]
pub mod windows;
