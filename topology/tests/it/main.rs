//! Integration tests of `docfed-topology`: the `check` and `up` commands run as the real binary,
//! and the private broker against a real `rabbitmq-server`.

mod broker;
mod check;
mod common;
mod launch;
mod up;
