//! lethe: retires inactive user accounts across many systems, safely and provably.
//!
//! See ARCHITECTURE.md for the code map and the invariants each module keeps.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod domain;
pub mod driver;
pub mod error;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod ops;
pub mod pii;
pub mod sql;
pub mod stages;
pub mod store;
pub mod telemetry;

/// mimalloc for the whole process: the daemon allocates many small, short-lived values on
/// several threads (rows, messages, events), where glibc's malloc spent a fifth of the
/// email path's CPU. Declared here so tests and benchmarks run the allocator the binary runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
