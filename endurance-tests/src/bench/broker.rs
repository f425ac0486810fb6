//! Scenario `broker`: how long after a broker restart every node consumes its inbox again.

use docfed_shared::wire::peers::PeersView;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use topology::broker::{free_broker_port, PrivateBroker};
use topology::launch::BrokerChoice;

use crate::fedgen;
use crate::stats::percentile;

/// Scenario 5: time from a broker restart until every node consumes its inbox again.
pub(super) async fn broker(dir: &Path, quick: bool) -> Result<()> {
    let rounds = if quick { 2 } else { 5 };
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let name = format!("bench-{:x}", std::process::id());
    let mut rmq = PrivateBroker::start(dir, &name, free_broker_port()?).await?;
    let b = fedgen::start(&dir.join("fed"), BrokerChoice::External(rmq.url()), &[]).await?;
    let urls: Vec<String> = b.fed.nodes().iter().map(|n| n.url()).collect();
    let token = b.fed.token().to_owned();
    let states = |want: bool| {
        let (http, urls, token) = (http.clone(), urls.clone(), token.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let mut all = true;
                for u in &urls {
                    let v: Option<PeersView> = match http
                        .get(format!("{u}/v1/peers"))
                        .bearer_auth(&token)
                        .send()
                        .await
                    {
                        Ok(r) => r.json::<PeersView>().await.ok(),
                        Err(_) => None,
                    };
                    all &= v.and_then(|v| v.inbox_connected) == Some(want);
                }
                if all {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("nodes did not reach inbox_connected = {want}");
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };
    states(true).await?;
    let mut times = Vec::new();
    for _ in 0..rounds {
        rmq.kill().await?;
        states(false).await?;
        rmq.restart().await?;
        let up = Instant::now();
        states(true).await?;
        times.push(up.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "broker restart -> all 7 nodes consuming again: p50 {:.2} s, max {:.2} s over {rounds} restarts (reconnect rate 100 %)",
        percentile(&times, 0.5),
        times.last().copied().unwrap_or(f64::NAN)
    );
    let mut fed = b.fed;
    fed.shutdown().await?;
    // Benchmark federations on the shared broker leave no queues behind.
    fed.discard();
    rmq.stop().await?;
    Ok(())
}
