//! The views that are not JSON: text tables and lines fitted to the
//! terminal, units, local times, and CSV.

pub mod csv;
pub mod text;
pub mod units;
