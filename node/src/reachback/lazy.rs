//! Lazy items (ARCHITECTURE.md §2.9): a source publishes an item by its digests and where it
//! lives; the bytes are read from there only when a node is first asked for them, by the
//! primary's on-demand transfer (`federation::ondemand`), which verifies them against the
//! version's MD5, size and SHA-256 like any pull and refuses other bytes.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::db::sources::{Counts, LazyItem};
use crate::Node;

pub type ItemStream = BoxStream<'static, Result<Bytes, Box<dyn std::error::Error + Send + Sync>>>;

/// Opens a lazy item's bytes where its source said they are: an absolute path of a regular
/// file, with no symbolic link on the way (a watched folder's locators are canonical), or an
/// http(s) URL fetched without following redirects.
pub async fn open(item: &LazyItem) -> Result<ItemStream, String> {
    let locator = &item.locator;
    if locator.starts_with('/') {
        let file = super::exec::open_item_file(std::path::Path::new(locator))
            .await
            .map_err(|e| format!("{e:#}"))?;
        return Ok(tokio_util::io::ReaderStream::new(file)
            .map(|r| r.map_err(Into::into))
            .boxed());
    }
    let url = super::exec::item_url(locator).map_err(|e| format!("{e:#}"))?;
    let resp = client()
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {locator}: {e}"))?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("GET {locator} answered {}", resp.status()));
    }
    Ok(resp.bytes_stream().map(|r| r.map_err(Into::into)).boxed())
}

/// Records a failed read of a lazy item in its source's status (the operator sees it on
/// `GET /v1/sources` and the portal's Sources page).
pub async fn failed(node: &Node, item: &LazyItem, error: &str) {
    tracing::warn!(source = %item.source, key = %item.key, error, "lazy item not delivered");
    let counts = Counts {
        failed: 1,
        ..Counts::default()
    };
    let why = format!("{}: {error}", item.key);
    if let Err(e) = node.db.count_items(&item.source, counts, Some(&why)).await {
        tracing::warn!(source = %item.source, error = %e, "cannot update the source's counters");
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        docfed_http::tls::client_builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client without custom TLS builds")
    })
}
