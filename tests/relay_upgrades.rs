//! End to end, against the built `ferry` binary: server-sent events and WebSockets through the relay.

use ferry_testkit::{
    http_client, light_slot, within, PatternStream, Stack, StackOptions, TargetKind, TargetServer,
};
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one_as_sent() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let events: Vec<String> = ["one", "two", "three", "four"].map(String::from).to_vec();
    let delay = Duration::from_millis(500);
    let sse = TargetServer::start(TargetKind::Sse {
        events: events.clone(),
        delay,
    })
    .await?;
    let stack = Stack::start(BIN, StackOptions::default().target("events", &sse.url())).await?;
    let started = Instant::now();
    let resp = http_client()
        .get(stack.relay_url("events", "/stream"))
        .header("accept", "text/event-stream")
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        ctype.starts_with("text/event-stream"),
        "content-type {ctype:?}"
    );
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut got: Vec<(String, Duration)> = Vec::new();
    while let Some(chunk) = within(T, "next event", body.next()).await? {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf[..end].to_owned();
            buf.drain(..end + 2);
            let data = event.strip_prefix("data: ").unwrap_or(&event).to_owned();
            got.push((data, started.elapsed()));
        }
    }
    let names: Vec<&str> = got.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(names, events);
    // each event arrives when it is sent, not batched with the next
    assert!(
        got[0].1 < Duration::from_millis(1000),
        "first event after {:?}",
        got[0].1
    );
    for pair in got.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= Duration::from_millis(250),
            "events {:?} and {:?} arrived {gap:?} apart",
            pair[0].0,
            pair[1].0
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_relay_text_binary_large_and_close() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let ws_target = TargetServer::start(TargetKind::WebSocketEcho).await?;
    let stack = Stack::start(BIN, StackOptions::default().target("ws", &ws_target.url())).await?;
    let url = stack
        .relay_url("ws", "/chat?room=1")
        .replacen("http://", "ws://", 1);
    let (mut ws, resp) = within(
        T,
        "websocket connect",
        tokio_tungstenite::connect_async(url),
    )
    .await??;
    assert_eq!(resp.status(), 101);

    ws.send(Message::Text("hello through ferry".into())).await?;
    let m = within(T, "text echo", ws.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("closed"))??;
    assert_eq!(m, Message::Text("hello through ferry".into()));

    ws.send(Message::Binary(vec![0, 1, 2, 255])).await?;
    let m = within(T, "binary echo", ws.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("closed"))??;
    assert_eq!(m, Message::Binary(vec![0, 1, 2, 255]));

    let big: Vec<u8> = PatternStream::new(5, 1024 * 1024)
        .flat_map(|b| b.to_vec())
        .collect();
    ws.send(Message::Binary(big.clone())).await?;
    let m = within(T, "1 MiB echo", ws.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("closed"))??;
    assert!(
        m == Message::Binary(big),
        "1 MiB message came back different"
    );

    // several in a row keep their order
    for i in 0..20 {
        ws.send(Message::Text(format!("msg {i}"))).await?;
    }
    for i in 0..20 {
        let m = within(T, "ordered echo", ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("closed"))??;
        assert_eq!(m, Message::Text(format!("msg {i}")));
    }

    ws.close(None).await?;
    let mut saw_close = false;
    within(T, "close handshake", async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(_)) => saw_close = true,
                Ok(_) => {}
                Err(e) => anyhow::bail!("error during close: {e}"),
            }
        }
        Ok(())
    })
    .await??;
    assert!(saw_close, "the target's close frame did not come back");
    Ok(())
}
