//! The built-in load balancer of rcompose.
//!
//! It knows nothing of compose: it is fed a stream of endpoint changes per
//! backend and proxies traffic to them. The balancer itself is built under
//! issue 4; until then this crate only reserves its place in the workspace.
