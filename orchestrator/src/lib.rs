//! rcompose's orchestration library: the compose loader and model, and the
//! observe -> plan -> execute loop that converges an engine to a project.
//!
//! The binary (`src/main.rs`) is a thin layer over this library: it parses
//! flags, gathers the process environment and prints results.

pub mod balancer;
pub mod convert;
pub mod discover;
pub mod execute;
pub mod loader;
pub mod model;
pub mod observe;
pub mod output;
pub mod plan;
pub mod watch;
