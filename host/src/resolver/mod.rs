//! Dependency resolution: the DAG of a workflow's tasks (cycles, execution
//! levels, ancestry), `${task-id.result.path}` substitution and `when:`
//! conditions over the same references.
//!
//! Pure functions over tasks and results; it never runs anything and keeps no
//! state between calls. The engine owns run-time state and calls in here.

pub mod condition;
pub mod graph;
pub mod substitution;

pub use graph::Dag;
pub use substitution::{PathSegment, Reference, Root, SubstitutionError, TemplateError, substitute};
