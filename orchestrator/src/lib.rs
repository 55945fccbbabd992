//! rcompose's orchestration library: the compose loader and the project model.
//!
//! The binary (`src/main.rs`) is a thin layer over this library: it parses
//! flags, gathers the process environment and prints results.

pub mod loader;
pub mod model;
pub mod output;
