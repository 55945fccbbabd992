//! The Docker Engine implementation of [`crate::Runtime`] (being written).
