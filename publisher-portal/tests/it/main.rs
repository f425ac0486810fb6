//! Integration tests of `docfed-portal`: the real binary in front of a real federation of
//! `docfed-node` processes, over HTTP (and, in `browser`, through headless Chromium).

mod accounts;
mod annotations;
mod bad_input;
mod browser;
mod common;
mod documents;
mod failover;
mod lifecycle;
mod login_hardening;
mod memory;
mod pages;
mod primary_certificates;
mod sources;
