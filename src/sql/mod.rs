//! Relational targets: dialects, foreign-key introspection, the deletion plan and its SQL.
//!
//! Invariants: identifiers that come from introspection or config are quoted with the
//! dialect's rules; subject ids and values are bound parameters; a plan deletes a table's
//! dependents before the table, never follows a cycle, and keeps (nullifies) rows that
//! only name a retired user as an actor.

pub mod plan;
pub mod pool;
pub mod render;
pub mod source;
pub mod target;

pub use crate::db::Dialect;
