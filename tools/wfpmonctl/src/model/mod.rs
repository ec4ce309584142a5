//! The model: what the driver reports, made into what an administrator
//! reads — flows and processes with names, rates, events on the wall clock,
//! the filters, and the verdict of `status`. Each document here is also the
//! JSON view (serde, schemas documented in the README).

pub mod events;
pub mod flows;
pub mod names;
pub mod procs;
pub mod status;
