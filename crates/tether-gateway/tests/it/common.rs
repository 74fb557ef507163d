//! Helpers for the gateway's tests: everything generic comes from `tether_testkit`.

pub(crate) use tether_testkit::*;
