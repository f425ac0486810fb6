//! The sources page (ARCHITECTURE.md §2.9): a federation whose topology has two watched folders;
//! a file dropped into one is published and counted on the page, under the primary that runs the
//! source; a file too large for the other is a failed item whose error (an author-chosen file
//! name, markup in it) is shown escaped; a primary that dies is a row saying it is unreachable,
//! not an error page.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;

use crate::common::{eventually, Client, Env, TestResult};
use crate::pages::raw_iso_in_text;

const T: Duration = Duration::from_secs(60);

/// A file name that is markup: it reaches the page inside the source's last error.
const HOSTILE: &str = "<em>big & bold.txt";

fn watch(name: &str, dir: &Path, extra: &str) -> String {
    format!(
        "[[source]]\nname = {name:?}\nkind = \"watch\"\npath = {:?}\nscope = \"global\"\n\
         settle = \"400ms\"\n{extra}\n",
        dir.display().to_string()
    )
}

/// The `<section>` of the sources page for source `name`.
fn source_card(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("data-source=\"{name}\""))?;
    let rest = &page[page[..at].rfind("<section")?..];
    Some(rest[..rest.find("</section>")?].to_owned())
}

/// The `<tr>` of primary `id` in a source's section.
fn primary_row(card: &str, id: &str) -> Option<String> {
    let at = card.find(&format!("data-primary=\"{id}\""))?;
    let rest = &card[card[..at].rfind("<tr")?..];
    Some(rest[..rest.find("</tr>")?].to_owned())
}

/// The primary the section names as running the source, if one does.
fn running_primary(card: &str) -> Option<String> {
    let rest = card.split("<strong class=\"primary\">").nth(1)?;
    Some(rest[..rest.find('<')?].to_owned())
}

fn cell<'a>(row: &'a str, label: &str) -> Option<&'a str> {
    let rest = row.split(&format!("data-label=\"{label}\">")).nth(1)?;
    Some(&rest[..rest.find("</td>")?])
}

/// Reloads the sources page until `check` finds what it waits for in it; on a timeout, the
/// error carries the last page.
async fn await_page<V>(c: &Client, what: &str, check: impl Fn(&str) -> Option<V>) -> TestResult<V> {
    let r = eventually(T, what, || async {
        let page = c.get("/sources").await?;
        if page.status != StatusCode::OK {
            return Err(format!("/sources answered {}: {}", page.status, page.body).into());
        }
        Ok(check(&page.body))
    })
    .await;
    match r {
        Ok(v) => Ok(v),
        Err(e) => Err(format!("{e}: {}", c.get("/sources").await?.body).into()),
    }
}

#[tokio::test]
async fn sources_page_counts_a_dropped_file_under_the_running_primary() -> TestResult {
    let mut env = Env::start_with_sources(&[], |tmp| {
        watch("dropbox", &tmp.join("dropbox"), "")
            + &watch("tiny", &tmp.join("tiny"), "max_item_size = 8")
    })
    .await?;
    let alice = env.author("alice").await?;
    let (pa, pb) = (env.id("pa"), env.id("pb"));

    // A session is required.
    let anonymous = Client::new(&env.portal.url).get("/sources").await?;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert!(anonymous.location().starts_with("/login"));

    // Both primaries report both sources; once a primary holds a lease, the page names it.
    await_page(&alice, "both sources run by a primary", |page| {
        let runs = |name: &str| source_card(page, name).and_then(|c| running_primary(&c));
        (runs("dropbox").is_some() && runs("tiny").is_some()).then_some(())
    })
    .await?;

    std::fs::write(
        env.tmp.path().join("dropbox").join("report.txt"),
        b"field report",
    )?;
    std::fs::write(env.tmp.path().join("tiny").join(HOSTILE), [b'x'; 100])?;

    let (runner, card) = await_page(&alice, "dropbox: published 1 by its primary", |page| {
        let card = source_card(page, "dropbox")?;
        let runner = running_primary(&card)?;
        let row = primary_row(&card, &runner)?;
        (cell(&row, "Published") == Some("1")).then_some((runner, card))
    })
    .await?;
    assert!(runner == pa || runner == pb, "{runner}");
    let row = primary_row(&card, &runner).ok_or("no row")?;
    assert!(row.contains("runs it"), "{row}");
    assert_eq!(cell(&row, "Failed"), Some("0"), "{row}");
    // The other primary has its own (empty) record, not a copy.
    let other = if runner == pa { &pb } else { &pa };
    let other_row = primary_row(&card, other).ok_or("no row for the other primary")?;
    assert_eq!(cell(&other_row, "Published"), Some("0"), "{other_row}");
    assert!(!other_row.contains("runs it"), "{other_row}");

    // The oversize file: a failed item, its error shown in full and escaped.
    let tiny = await_page(&alice, "tiny: a failed item with its error", |page| {
        let card = source_card(page, "tiny")?;
        let row = primary_row(&card, &running_primary(&card)?)?;
        let failed = cell(&row, "Failed").is_some_and(|n| n != "0");
        (failed && row.contains("error-text")).then_some(card)
    })
    .await?;
    assert!(tiny.contains("&lt;em&gt;big &amp; bold.txt"), "{tiny}");
    assert!(!tiny.contains("<em>"), "markup from a file name: {tiny}");

    let page = alice.get("/sources").await?;
    assert!(
        page.body
            .contains("href=\"/sources\" aria-current=\"page\""),
        "the navigation marks the page"
    );
    assert_eq!(raw_iso_in_text(&page.body), None, "{}", page.body);
    assert!(page.body.contains("2 sources: 2 running"), "{}", page.body);

    // A primary dies: still a page, with that primary's rows saying it is unreachable.
    env.fed.kill_node(other).await?;
    await_page(&alice, "the dead primary shown as unreachable", |page| {
        let card = source_card(page, "dropbox")?;
        let row = primary_row(&card, other)?;
        (row.contains("unreachable") && page.contains(&format!("{other} is unreachable.")))
            .then_some(())
    })
    .await?;
    Ok(())
}
