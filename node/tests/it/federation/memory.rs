//! Memory of a federated node: its broker connections cost little. Each node holds one AMQP
//! connection per relay target besides its inbox; unless the node proposes a frame size, lapin
//! zero-fills 8 MiB of frame buffers per connection at RabbitMQ's default (see
//! `federation::amqp::FRAME_MAX`).

use super::*;
use crate::common::federation::ROLES;

/// Anonymous memory (heap, arenas, touched stacks) of one node of a debug build, with every
/// connection open and messages passed over each. Measured at 5.3-5.7 MiB; 58 MiB at primary-a
/// when the node proposed no frame size. File-backed pages (the binary) are shared between nodes and not counted.
const ANON_LIMIT: u64 = 20 * 1024 * 1024;

#[tokio::test]
async fn a_federated_node_with_every_connection_open_holds_little_memory() -> TestResult {
    let fed = Federation::start(&[]).await?;
    // A global document passes a notification over every relay and a receipt back to both
    // primaries, so every node's connections are open and have carried messages.
    let id = publish(&fed, "primary-a", "title=Memory", pattern(21, 100_000)).await?;
    for role in ["na", "eu", "asia", "primary-b"] {
        fed.await_meta(role, &id, T, |m| m["available_here"] == true)
            .await?;
    }
    for role in ["na", "eu", "asia"] {
        fed.await_metric(role, "docfed_messages_published_total", 1)
            .await?;
    }
    for role in ROLES {
        let pid = fed.node(role).pid();
        let anon = docfed_test_kit::procfs::status_bytes(pid, "RssAnon").ok_or("no RssAnon")?;
        println!("{role}: RssAnon {:.1} MiB", anon as f64 / 1048576.0);
        assert!(
            anon < ANON_LIMIT,
            "{role}: {anon} bytes of anonymous memory (limit {ANON_LIMIT})"
        );
    }
    Ok(())
}
