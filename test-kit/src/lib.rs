//! What docfed's test suites share, so each suite states its scenario and not the plumbing:
//! waiting for a condition with a deadline ([`wait`]), the broker tests use, and, from
//! `docfed-bench-kit` (which the endurance harness uses too), awaiting a started process's
//! `ready.json` ([`process`]), deterministic content that never needs to be kept in memory
//! ([`content`]) and a process's memory from `/proc` ([`procfs`]).

pub use docfed_bench_kit::{content, process, procfs};
pub mod wait;

/// An error any test can return with `?`.
pub type Error = docfed_bench_kit::Error;
pub type TestResult<T = ()> = Result<T, Error>;

/// The RabbitMQ the tests share: `DOCFED_AMQP_URL`, or the local default broker.
pub fn amqp_url() -> String {
    std::env::var("DOCFED_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// MD5 of `data` as lowercase hex, as the API names content.
pub fn md5_hex(data: &[u8]) -> String {
    format!("{:x}", md5::compute(data))
}

/// SHA-256 of `data` as lowercase hex, as signed versions carry it.
pub fn sha256_hex(data: &[u8]) -> String {
    use docfed_shared::hashing::StreamHash;
    let mut h = docfed_shared::ContentHasher::new();
    h.update(data);
    h.finish().sha256.to_string()
}

/// A number unlikely to repeat across test processes and calls within one, for names on the
/// shared broker (node ids, queue prefixes) that must not collide between concurrent tests.
pub fn unique_u32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    (t.subsec_nanos() ^ std::process::id().rotate_left(16) ^ n.rotate_left(24))
        .wrapping_mul(2_654_435_761)
}
