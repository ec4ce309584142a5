//! The clients of what wfpmonctl talks to: the driver's control device
//! (the control protocol, the paged lists, busy retries) and the filter
//! engine (the objects `install` adds, in one transaction).

pub mod device;
pub mod engine;
pub mod plan;
