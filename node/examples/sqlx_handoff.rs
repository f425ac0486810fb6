//! Measurement (BENCHMARKS.md §7, fifth round): how much of a small write transaction is sqlx's
//! hand-off per statement. The same 15 statements (5 inserts, 5 lookups, 5 updates) run through
//! sqlx, through rusqlite on sqlx's locked handle (begin and commit still through sqlx), and as
//! one blocking rusqlite transaction, with `synchronous` FULL (as the node) and OFF (no fsync).
//!
//! `cargo run --release -p docfed-node --example sqlx_handoff -- [TRANSACTIONS] [DIR]`

use std::str::FromStr;
use std::time::Instant;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

const K: i64 = 5; // inserts, selects and updates each: 15 statements

fn cpu() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

async fn open(path: &str, sync: SqliteSynchronous) -> SqliteConnection {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(format!("{path}-wal"));
    let _ = std::fs::remove_file(format!("{path}-shm"));
    let opts = SqliteConnectOptions::from_str(&format!("sqlite:{path}"))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync);
    let mut c = SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, md5 TEXT NOT NULL UNIQUE, n INTEGER NOT NULL, body TEXT)")
        .execute(&mut c)
        .await
        .unwrap();
    c
}

async fn via_sqlx(c: &mut SqliteConnection, i: i64) {
    let mut tx = c.begin().await.unwrap();
    for j in 0..K {
        let k = i * K + j;
        sqlx::query("INSERT INTO t (k, md5, n, body) VALUES (?, ?, 0, ?)")
            .bind(k)
            .bind(format!("{k:032x}"))
            .bind("some text of a document's row")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    for j in 0..K {
        let k = i * K + j;
        let _: (i64,) = sqlx::query_as("SELECT n FROM t WHERE md5 = ?")
            .bind(format!("{k:032x}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    }
    for j in 0..K {
        let k = i * K + j;
        sqlx::query("UPDATE t SET n = n + 1 WHERE k = ?")
            .bind(k)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

fn statements(db: &rusqlite::Connection, i: i64) {
    for j in 0..K {
        let k = i * K + j;
        db.prepare_cached("INSERT INTO t (k, md5, n, body) VALUES (?, ?, 0, ?)")
            .unwrap()
            .execute(rusqlite::params![
                k,
                format!("{k:032x}"),
                "some text of a document's row"
            ])
            .unwrap();
    }
    for j in 0..K {
        let k = i * K + j;
        let _: i64 = db
            .prepare_cached("SELECT n FROM t WHERE md5 = ?")
            .unwrap()
            .query_row([format!("{k:032x}")], |r| r.get(0))
            .unwrap();
    }
    for j in 0..K {
        let k = i * K + j;
        db.prepare_cached("UPDATE t SET n = n + 1 WHERE k = ?")
            .unwrap()
            .execute([k])
            .unwrap();
    }
}

async fn via_locked_handle(c: &mut SqliteConnection, i: i64) {
    let mut tx = c.begin().await.unwrap();
    {
        let mut h = tx.lock_handle().await.unwrap();
        let db = unsafe { rusqlite::Connection::from_handle(h.as_raw_handle().as_ptr()) }.unwrap();
        statements(&db, i);
    }
    tx.commit().await.unwrap();
}

fn via_blocking(db: &mut rusqlite::Connection, i: i64) {
    let tx = db.transaction().unwrap();
    statements(&tx, i);
    tx.commit().unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: i64 = std::env::args().nth(1).map_or(2000, |s| s.parse().unwrap());
    let dir = std::env::args().nth(2).unwrap_or_else(|| {
        std::env::temp_dir()
            .join("sqlx-handoff")
            .display()
            .to_string()
    });
    std::fs::create_dir_all(&dir).unwrap();
    for round in 0..2 {
        for sync in [SqliteSynchronous::Full, SqliteSynchronous::Off] {
            let label = if matches!(sync, SqliteSynchronous::Full) {
                "FULL"
            } else {
                "OFF"
            };
            for way in ["sqlx", "locked", "blocking"] {
                let path = format!("{dir}/{way}.db");
                let mut c = open(&path, sync).await;
                let (t0, c0) = (Instant::now(), cpu());
                match way {
                    "sqlx" => {
                        for i in 0..n {
                            via_sqlx(&mut c, i).await;
                        }
                    }
                    "locked" => {
                        for i in 0..n {
                            via_locked_handle(&mut c, i).await;
                        }
                    }
                    _ => {
                        drop(c);
                        let p = path.clone();
                        let full = label == "FULL";
                        let mut db = tokio::task::spawn_blocking(move || {
                            let db = rusqlite::Connection::open(&p).unwrap();
                            db.pragma_update(
                                None,
                                "synchronous",
                                if full { "FULL" } else { "OFF" },
                            )
                            .unwrap();
                            db
                        })
                        .await
                        .unwrap();
                        for i in 0..n {
                            db = tokio::task::spawn_blocking(move || {
                                via_blocking(&mut db, i);
                                db
                            })
                            .await
                            .unwrap();
                        }
                    }
                }
                let (wall, cpu_s) = (t0.elapsed().as_secs_f64(), cpu() - c0);
                println!(
                    "round {round} sync={label:4} {way:8}: {:7.1} µs wall, {:7.1} µs CPU per transaction of {} statements",
                    wall / n as f64 * 1e6,
                    cpu_s / n as f64 * 1e6,
                    3 * K
                );
            }
        }
    }
}
