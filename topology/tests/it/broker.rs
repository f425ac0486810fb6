//! `PrivateBroker` against a real `rabbitmq-server` (≈ 7-10 s per start).

use std::time::Duration;

use topology::broker::{amqp_answers, free_broker_port, PrivateBroker};

#[tokio::test]
async fn start_kill_restart_stop_remove() {
    let run_dir = tempfile::tempdir().unwrap();
    let port = free_broker_port().unwrap();
    let name = format!("docfed-test-{port}");
    let probe = Duration::from_secs(2);

    let mut broker = PrivateBroker::start(run_dir.path(), &name, port)
        .await
        .expect("private broker starts");
    let url = broker.url();
    assert_eq!(url, format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
    assert!(amqp_answers(&url, probe).await);
    assert!(broker.is_running());
    let dir = broker.dir().to_owned();
    assert!(dir.starts_with(run_dir.path()) && dir.join("mnesia").is_dir());

    // A crash takes the whole VM down at once: the port stops answering immediately.
    broker.kill().await.unwrap();
    assert!(!broker.is_running());
    assert!(!amqp_answers(&url, probe).await);

    broker.restart().await.expect("restarts after kill -9");
    assert!(amqp_answers(&url, probe).await);

    broker.stop().await.expect("clean stop");
    assert!(!broker.is_running());
    assert!(!amqp_answers(&url, probe).await);
    // Stopping twice is harmless.
    broker.stop().await.unwrap();

    broker.remove().await.unwrap();
    assert!(!dir.exists());
}

#[tokio::test]
async fn refuses_a_port_in_use() {
    let run_dir = tempfile::tempdir().unwrap();
    let port = free_broker_port().unwrap();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let err = PrivateBroker::start(run_dir.path(), "docfed-busy", port)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&port.to_string()), "{err:#}");
}

#[tokio::test]
async fn refuses_bad_names_and_ports() {
    let run_dir = tempfile::tempdir().unwrap();
    assert!(PrivateBroker::start(run_dir.path(), "a@b", 30000)
        .await
        .is_err());
    assert!(PrivateBroker::start(run_dir.path(), "ok", 0).await.is_err());
    assert!(PrivateBroker::start(run_dir.path(), "ok", 50000)
        .await
        .is_err());
}
