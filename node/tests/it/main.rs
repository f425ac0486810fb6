//! Integration tests: a real `docfed-node` process, real sockets, real SQLite files.

mod annotations;
mod at_rest;
mod bad_input;
mod batch;
mod cert_roles;
mod common;
mod devices;
mod events;
mod federation;
mod lifecycle;
mod memory;
mod retention;
mod search;
mod signed_versions;
mod storage;
mod stream_through;
mod trust;
