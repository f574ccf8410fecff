//! lethe: retires inactive user accounts across many systems, safely and provably.
//!
//! See ARCHITECTURE.md for the code map and the invariants each module keeps.

pub mod cli;
pub mod config;
pub mod domain;
pub mod driver;
pub mod mail;
pub mod pii;
pub mod sql;
pub mod stages;
pub mod store;
pub mod telemetry;
