//! The container runtime seam of rcompose.
//!
//! A narrow `Runtime` trait in rcompose's own terms, with the Docker Engine
//! implementation and a recording fake. It is built under issue 3; until then
//! this crate only reserves its place in the workspace.
