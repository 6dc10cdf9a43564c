//! Shared helpers for the end-to-end tests (see guest_*.rs).
