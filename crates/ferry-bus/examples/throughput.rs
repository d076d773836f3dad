//! Messages per second through each bus: one publisher sends N small messages to one subject as fast as it can,
//! one subscriber (on another connection) counts them. Prints figures; asserts nothing.
//!
//! `cargo run -p ferry-bus --release --example throughput -- [memory] [nats] [amqp] [--count N] [--size BYTES]`
//! (default: all three, 200,000 messages of 64 bytes). Brokers: `FERRY_TEST_NATS_URL`, `FERRY_TEST_AMQP_URL`
//! (default the local ones).

use bytes::Bytes;
use ferry_bus::{connect, Bus, BusOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let mut kinds = Vec::new();
    let mut count: u64 = 200_000;
    let mut size: usize = 64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--count" => count = args.next().and_then(|n| n.parse().ok()).unwrap_or(count),
            "--size" => size = args.next().and_then(|n| n.parse().ok()).unwrap_or(size),
            kind => kinds.push(kind.to_owned()),
        }
    }
    if kinds.is_empty() {
        kinds = vec!["memory".into(), "nats".into(), "amqp".into()];
    }
    for kind in kinds {
        let url = match kind.as_str() {
            "nats" => std::env::var("FERRY_TEST_NATS_URL")
                .unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
            "amqp" => std::env::var("FERRY_TEST_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            other => other.to_owned(),
        };
        match run(&url, count, size).await {
            Ok(line) => println!("{kind:>6}: {line}"),
            Err(e) => println!("{kind:>6}: not measured: {e}"),
        }
    }
}

async fn run(url: &str, count: u64, size: usize) -> Result<String, String> {
    let options = BusOptions::default();
    let publisher: Arc<dyn Bus> = connect(url, &options).await.map_err(|e| e.to_string())?;
    // The in-process bus: both sides on one bus; brokers: a connection each.
    let subscriber = if url == "memory" {
        publisher.clone()
    } else {
        connect(url, &options).await.map_err(|e| e.to_string())?
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let subject = format!("bench.throughput.t{nanos:x}");
    let mut subscription = subscriber
        .subscribe(&subject)
        .await
        .map_err(|e| e.to_string())?;
    let payload = Bytes::from(vec![b'x'; size]);

    let start = Instant::now();
    let receiving = tokio::spawn(async move {
        let mut received = 0u64;
        while received < count {
            match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await {
                Ok(Some(_)) => received += 1,
                _ => break,
            }
        }
        (received, start.elapsed())
    });
    let mut failed = 0u64;
    for _ in 0..count {
        if publisher.publish(&subject, payload.clone()).await.is_err() {
            failed += 1;
        }
    }
    publisher.flush().await.map_err(|e| e.to_string())?;
    let published = start.elapsed();
    let (received, last) = receiving.await.map_err(|e| e.to_string())?;
    publisher.close().await;
    subscriber.close().await;
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    Ok(format!(
        "{count} × {size} B: publish {:>9.0} msg/s ({published:.2?}{}), received {received} ({:.1}%) at {:>9.0} msg/s end to end ({last:.2?})",
        rate(count, published),
        if failed > 0 { format!(", {failed} refused") } else { String::new() },
        100.0 * received as f64 / count as f64,
        rate(received, last),
    ))
}
