//! The VM test matrix.
