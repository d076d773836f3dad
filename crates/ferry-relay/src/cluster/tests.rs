//! The origin side of the cluster protocol against a scripted executor on the in-process bus: grants, denials,
//! publishing again, expiry, streamed bodies with credit, and cuts through the dispatch queue (an origin on a
//! bus that reports no bounces, [`QueueOnly`]); requests sent straight to a node's inbox, their answers,
//! bounces, declines and cancels (an origin on the in-process bus itself).

use super::origin::Sent;
use super::*;
use crate::dispatch::RelayError;
use bytes::Bytes;
use ferry_bus::MemoryBus;
use ferry_proto::cluster::{AbortReason, BodyKind, RequestMsg, ResponseHead};
use ferry_proto::TargetName;
use http_body_util::BodyExt;

fn settings() -> ClusterSettings {
    ClusterSettings {
        name: "ferry".into(),
        heartbeat_interval: Duration::from_millis(100),
        node_expiry: Duration::from_secs(5),
        claim_timeout: Duration::from_millis(150),
        store_poll_interval: Duration::from_secs(30),
        links: true,
    }
}

fn subjects() -> Subjects {
    Subjects::new("ferry")
}

fn identity(node: &str) -> NodeIdentity {
    NodeIdentity {
        node_id: node.into(),
        roles: "gateway".into(),
        address: "http://127.0.0.1:1".into(),
        version: "test".into(),
        started_at: 0,
    }
}

/// A node that only speaks the protocol by hand: it announces a connector of `acme` serving `app`, and hands the
/// test every message for it.
struct Fake {
    bus: MemoryBus,
    node: String,
    inbox: Subscription,
    queue: Subscription,
}

impl Fake {
    async fn start(bus: &MemoryBus, node: &str) -> Self {
        let inbox = bus.subscribe(&subjects().inbox(node)).await.expect("inbox");
        let queue = bus
            .queue_subscribe(&subjects().dispatch("acme"), DISPATCH_GROUP)
            .await
            .expect("queue");
        let info = NodeInfo {
            node: node.into(),
            roles: "relay".into(),
            address: "http://127.0.0.1:2".into(),
            version: "test".into(),
            started_at: 0,
            generation: 1,
            worker_active: false,
        };
        let conn = ConnectorInfo {
            record_id: format!("{node}-r1"),
            tenant: "acme".into(),
            connector_id: "c1".into(),
            targets: vec!["app".into()],
            since: 0,
            remote_addr: "127.0.0.1:9".into(),
        };
        let snapshot = Message::Presence(PresenceMsg::Snapshot(info, vec![conn]));
        bus.publish(&subjects().presence(), cluster::encode(&snapshot))
            .await
            .expect("announce");
        Self {
            bus: bus.clone(),
            node: node.into(),
            inbox,
            queue,
        }
    }

    async fn next_request(&mut self) -> RequestMsg {
        let raw = tokio::time::timeout(Duration::from_secs(5), self.queue.next())
            .await
            .expect("a request in time")
            .expect("queue open");
        match cluster::decode(raw) {
            Ok(Decoded::Message(Message::Request(r))) => *r,
            other => panic!("not a request: {other:?}"),
        }
    }

    /// The next message in the inbox, which must be a request sent straight here.
    async fn next_direct(&mut self) -> RequestMsg {
        match self.next().await {
            Decoded::Message(Message::Request(r)) => *r,
            other => panic!("not a request: {other:?}"),
        }
    }

    /// Answer a request sent straight here.
    async fn answer(&self, req: &RequestMsg, executor_stream: u64, body: &'static [u8]) {
        self.to_origin(
            &req.origin,
            &Message::Answer {
                stream: req.origin_stream,
                executor: self.node.clone(),
                executor_stream,
                head: Box::new(ResponseHead {
                    status: 200,
                    headers: vec![],
                    body: BodyKind::Inline(Bytes::from_static(body)),
                }),
            },
        )
        .await;
    }

    async fn next(&mut self) -> Decoded {
        let raw = tokio::time::timeout(Duration::from_secs(5), self.inbox.next())
            .await
            .expect("a message in time")
            .expect("inbox open");
        cluster::decode(raw).expect("decodes")
    }

    async fn to_origin(&self, origin: &str, m: &Message) {
        self.bus
            .publish(&subjects().inbox(origin), cluster::encode(m))
            .await
            .expect("send");
    }

    async fn claim(&self, req: &RequestMsg, executor_stream: u64) {
        self.to_origin(
            &req.origin,
            &Message::Claim {
                origin_stream: req.origin_stream,
                executor: self.node.clone(),
                executor_stream,
            },
        )
        .await;
    }
}

/// The in-process bus without its bounce reports, as RabbitMQ's bus is: every request goes through the queue.
struct QueueOnly(MemoryBus);

#[async_trait::async_trait]
impl Bus for QueueOnly {
    fn kind(&self) -> &'static str {
        "queue-only"
    }
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.0.publish(subject, payload).await
    }
    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        self.0.subscribe(subject).await
    }
    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        self.0.queue_subscribe(subject, group).await
    }
    async fn flush(&self) -> Result<(), BusError> {
        self.0.flush().await
    }
    fn is_connected(&self) -> bool {
        true
    }
}

/// An origin node whose requests go through the dispatch queue.
async fn origin(bus: &MemoryBus) -> Arc<Cluster> {
    let bus: Arc<dyn Bus> = Arc::new(QueueOnly(bus.clone()));
    Cluster::start(bus, identity("origin"), settings(), None)
        .await
        .expect("cluster")
}

/// An origin node that sends small requests straight to a node's inbox.
async fn direct_origin(bus: &MemoryBus) -> Arc<Cluster> {
    Cluster::start(Arc::new(bus.clone()), identity("origin"), settings(), None)
        .await
        .expect("cluster")
}

async fn until_serves(cluster: &Cluster) {
    for _ in 0..100 {
        if cluster.presence.lookup("acme", "app") == presence::Lookup::Serves {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("presence never showed the fake connector");
}

fn request(body: ferry_http::Body) -> http::Request<ferry_http::Body> {
    http::Request::builder()
        .method("POST")
        .uri("http://example.com/a?b=1")
        .header("x-one", "1")
        .body(body)
        .expect("request")
}

fn names() -> (TenantName, TargetName) {
    ("acme".parse().expect("t"), "app".parse().expect("t"))
}

#[tokio::test]
async fn one_claim_is_granted_the_rest_denied_and_inline_bodies_round_trip() {
    let bus = MemoryBus::new();
    let cluster = origin(&bus).await;
    let mut a = Fake::start(&bus, "exec-a").await;
    let b = Fake::start(&bus, "exec-b").await;
    until_serves(&cluster).await;
    let (tenant, target) = names();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let send = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            cluster
                .send(
                    &tenant,
                    &target,
                    request(ferry_http::full("hello")),
                    None,
                    "rid",
                    deadline,
                )
                .await
        })
    };
    let req = a.next_request().await;
    assert_eq!(req.attempt, 1);
    assert_eq!(req.body, BodyKind::Inline(Bytes::from_static(b"hello")));
    assert_eq!(req.path_and_query, "/a?b=1");
    assert!(req.headers.iter().any(|(n, v)| n == "x-one" && v == b"1"));
    a.claim(&req, 11).await;
    b.claim(&req, 22).await;
    assert!(matches!(
        a.next().await,
        Decoded::Message(Message::Grant { stream: 11 })
    ));
    let mut b = b;
    assert!(
        matches!(
            b.next().await,
            Decoded::Message(Message::Deny { stream: 22 })
        ),
        "a second claim is denied"
    );
    a.to_origin(
        "origin",
        &Message::Head {
            stream: req.origin_stream,
            head: Box::new(ResponseHead {
                status: 201,
                headers: vec![("x-two".into(), b"2".to_vec())],
                body: BodyKind::Inline(Bytes::from_static(b"done")),
            }),
        },
    )
    .await;
    let Ok(Sent::Answered(answer)) = send.await.expect("task") else {
        panic!("no answer")
    };
    assert_eq!(answer.response.status(), 201);
    assert_eq!(answer.response.headers()["x-two"], "2");
    let body = answer
        .response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"done");
    assert_eq!(cluster.open_streams(), 0, "nothing left open");
}

#[tokio::test]
async fn an_unclaimed_request_is_published_again_and_expires_unrun() {
    let bus = MemoryBus::new();
    let cluster = origin(&bus).await;
    let mut a = Fake::start(&bus, "exec-a").await;
    until_serves(&cluster).await;
    let (tenant, target) = names();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    let send = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            cluster
                .send(
                    &tenant,
                    &target,
                    request(ferry_http::empty()),
                    None,
                    "rid",
                    deadline,
                )
                .await
        })
    };
    // the node that took it "died" before claiming: the origin publishes it again after the claim timeout
    let first = a.next_request().await;
    let second = a.next_request().await;
    assert_eq!((first.attempt, second.attempt), (1, 2));
    assert_eq!(first.origin_stream, second.origin_stream);
    let result = send.await.expect("task");
    assert!(
        matches!(result, Err(RelayError::Expired(_))),
        "past its expiration: 504"
    );
    // a claim arriving now is denied: nothing runs late
    a.claim(&second, 5).await;
    assert!(matches!(
        a.next().await,
        Decoded::Message(Message::Deny { stream: 5 })
    ));
}

#[tokio::test]
async fn not_accepted_publishes_again_and_a_lost_executor_is_connector_lost() {
    let bus = MemoryBus::new();
    let cluster = origin(&bus).await;
    let mut a = Fake::start(&bus, "exec-a").await;
    until_serves(&cluster).await;
    let (tenant, target) = names();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let send = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            cluster
                .send(
                    &tenant,
                    &target,
                    request(ferry_http::empty()),
                    None,
                    "rid",
                    deadline,
                )
                .await
        })
    };
    let req = a.next_request().await;
    a.claim(&req, 1).await;
    assert!(matches!(
        a.next().await,
        Decoded::Message(Message::Grant { stream: 1 })
    ));
    a.to_origin(
        "origin",
        &Message::Abort {
            stream: req.origin_stream,
            reason: AbortReason::NotAccepted,
        },
    )
    .await;
    let again = a.next_request().await;
    assert_eq!(again.attempt, 2, "nothing ran: published again");
    a.claim(&again, 2).await;
    assert!(matches!(
        a.next().await,
        Decoded::Message(Message::Grant { stream: 2 })
    ));
    a.to_origin(
        "origin",
        &Message::Abort {
            stream: req.origin_stream,
            reason: AbortReason::ConnectorLost,
        },
    )
    .await;
    assert!(matches!(
        send.await.expect("task"),
        Err(RelayError::ConnectorLost(_))
    ));
}

#[tokio::test]
async fn streamed_bodies_flow_within_the_credit_both_ways() {
    let bus = MemoryBus::new();
    let cluster = origin(&bus).await;
    let mut a = Fake::start(&bus, "exec-a").await;
    until_serves(&cluster).await;
    let (tenant, target) = names();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // a request body of unknown size, 40 chunks long
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((
            Ok::<_, ferry_http::BoxError>(http_body::Frame::data(data)),
            rx,
        ))
    });
    let body = http_body_util::StreamBody::new(frames).boxed_unsync();
    let send = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            cluster
                .send(&tenant, &target, request(body), None, "rid", deadline)
                .await
        })
    };
    let req = a.next_request().await;
    assert_eq!(req.body, BodyKind::Stream);
    a.claim(&req, 7).await;
    assert!(matches!(
        a.next().await,
        Decoded::Message(Message::Grant { stream: 7 })
    ));
    // frames of a whole chunk each: 40 chunks
    for _ in 0..40 {
        tx.send(Bytes::from(vec![1u8; flow::CHUNK]))
            .await
            .expect("feed");
    }
    drop(tx);
    // without credit, only a window's worth arrives
    let mut got = 0u64;
    while got < flow::WINDOW {
        match a.next().await {
            Decoded::Data(d) => {
                assert_eq!((d.stream, d.seq), (7, got));
                got += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let quiet = tokio::time::timeout(Duration::from_millis(200), a.inbox.next()).await;
    assert!(quiet.is_err(), "the sender waits for credit");
    a.to_origin(
        "origin",
        &Message::Credit {
            stream: req.origin_stream,
            consumed: 40,
        },
    )
    .await;
    loop {
        match a.next().await {
            Decoded::Data(d) => {
                assert_eq!(d.seq, got);
                got += 1;
            }
            Decoded::Message(Message::End {
                stream: 7, chunks, ..
            }) => {
                assert_eq!(chunks, 40);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // the response streams back; the origin's body gives credit as it is read
    a.to_origin(
        "origin",
        &Message::Head {
            stream: req.origin_stream,
            head: Box::new(ResponseHead {
                status: 200,
                headers: vec![],
                body: BodyKind::Stream,
            }),
        },
    )
    .await;
    let Ok(Sent::Answered(answer)) = send.await.expect("task") else {
        panic!("no answer")
    };
    for seq in 0..20u64 {
        a.bus
            .publish(
                &subjects().inbox("origin"),
                cluster::encode_data(req.origin_stream, seq, b"xy"),
            )
            .await
            .expect("chunk");
    }
    a.to_origin(
        "origin",
        &Message::End {
            stream: req.origin_stream,
            chunks: 20,
            trailers: vec![("grpc-status".into(), b"0".to_vec())],
        },
    )
    .await;
    let collected = answer.response.into_body().collect().await.expect("body");
    assert_eq!(
        collected.trailers().map(|t| t["grpc-status"].clone()),
        Some(http::HeaderValue::from_static("0"))
    );
    assert_eq!(collected.to_bytes().len(), 40);
    let mut credits = 0;
    while let Ok(Some(raw)) = tokio::time::timeout(Duration::from_millis(200), a.inbox.next()).await
    {
        if let Ok(Decoded::Message(Message::Credit {
            stream: 7,
            consumed,
        })) = cluster::decode(raw)
        {
            credits = credits.max(consumed);
        }
    }
    assert!(
        credits >= flow::WINDOW / 2,
        "the origin gave credit ({credits})"
    );
}

#[tokio::test]
async fn a_gap_in_the_chunks_fails_the_body_and_a_dead_executor_cuts_it() {
    let bus = MemoryBus::new();
    let cluster = origin(&bus).await;
    let mut a = Fake::start(&bus, "exec-a").await;
    until_serves(&cluster).await;
    let (tenant, target) = names();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for case in ["gap", "dead"] {
        let send = {
            let cluster = cluster.clone();
            let (tenant, target) = (tenant.clone(), target.clone());
            tokio::spawn(async move {
                cluster
                    .send(
                        &tenant,
                        &target,
                        request(ferry_http::empty()),
                        None,
                        "rid",
                        deadline,
                    )
                    .await
            })
        };
        let req = a.next_request().await;
        a.claim(&req, 3).await;
        assert!(matches!(
            a.next().await,
            Decoded::Message(Message::Grant { .. })
        ));
        a.to_origin(
            "origin",
            &Message::Head {
                stream: req.origin_stream,
                head: Box::new(ResponseHead {
                    status: 200,
                    headers: vec![],
                    body: BodyKind::Stream,
                }),
            },
        )
        .await;
        let Ok(Sent::Answered(answer)) = send.await.expect("task") else {
            panic!("no answer")
        };
        let mut body = answer.response.into_body();
        a.bus
            .publish(
                &subjects().inbox("origin"),
                cluster::encode_data(req.origin_stream, 0, b"a"),
            )
            .await
            .expect("chunk");
        assert!(body.frame().await.expect("frame").is_ok());
        if case == "gap" {
            a.bus
                .publish(
                    &subjects().inbox("origin"),
                    cluster::encode_data(req.origin_stream, 2, b"c"),
                )
                .await
                .expect("chunk");
        } else {
            // the executor's node leaves: the body fails instead of hanging
            a.bus
                .publish(
                    &subjects().presence(),
                    cluster::encode(&Message::Presence(PresenceMsg::Leave("exec-a".into()))),
                )
                .await
                .expect("leave");
        }
        let next = tokio::time::timeout(Duration::from_secs(2), body.frame())
            .await
            .expect("no hang");
        assert!(
            matches!(next, Some(Err(_))),
            "{case}: an error, not a silent end"
        );
        if case == "gap" {
            // the executor is told to stop
            loop {
                if let Decoded::Message(Message::Abort { reason, .. }) = a.next().await {
                    assert_eq!(reason, AbortReason::Protocol);
                    break;
                }
            }
        }
    }
}

/// The dispatch seam with no tunnels on this node: no connector anywhere is 503 after `connector_wait`; a
/// connector appearing elsewhere during the wait gets the request; a target no connector serves is 404 after a
/// short grace.
#[tokio::test]
async fn dispatch_waits_for_a_connector_anywhere_then_answers_503_or_404() {
    use crate::dispatch::{Answer, Dispatcher, Outbound};
    let bus = MemoryBus::new();
    let cluster = origin(&bus).await;
    let dispatcher = Dispatcher::new(None, Some(cluster.clone()), Duration::from_millis(300));
    let (tenant, target) = names();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let out = || Outbound {
        tenant: &tenant,
        target: &target,
        request_id: "rid",
        upgrade: None,
        deadline,
        by_link: true,
    };
    let started = std::time::Instant::now();
    let nobody = dispatcher.send(out(), request(ferry_http::empty())).await;
    assert!(
        matches!(nobody, Err(RelayError::NoConnector(..))),
        "503 no_connector"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "after connector_wait"
    );

    // a connector elsewhere appears while the request waits
    let waiting = {
        let dispatcher = Arc::new(dispatcher);
        let (tenant, target) = (tenant.clone(), target.clone());
        let d = dispatcher.clone();
        let task = tokio::spawn(async move {
            d.send(
                Outbound {
                    tenant: &tenant,
                    target: &target,
                    request_id: "rid",
                    upgrade: None,
                    deadline,
                    by_link: true,
                },
                request(ferry_http::empty()),
            )
            .await
            .map(|a| matches!(a, Answer::Remote(_)))
        });
        (dispatcher, task)
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut a = Fake::start(&bus, "exec-a").await;
    let req = a.next_request().await;
    a.claim(&req, 9).await;
    assert!(matches!(
        a.next().await,
        Decoded::Message(Message::Grant { stream: 9 })
    ));
    a.to_origin(
        "origin",
        &Message::Head {
            stream: req.origin_stream,
            head: Box::new(ResponseHead {
                status: 204,
                headers: vec![],
                body: BodyKind::Empty,
            }),
        },
    )
    .await;
    let (dispatcher, task) = waiting;
    assert!(
        task.await.expect("task").expect("answered"),
        "answered by the other node"
    );

    // the tenant is served elsewhere, but not this target: 404 after the grace
    let web: TargetName = "web".parse().expect("name");
    let started = std::time::Instant::now();
    let wrong = dispatcher
        .send(
            Outbound {
                tenant: &tenant,
                target: &web,
                request_id: "rid",
                upgrade: None,
                deadline,
                by_link: true,
            },
            request(ferry_http::empty()),
        )
        .await;
    assert!(
        matches!(wrong, Err(RelayError::UnknownTarget { .. })),
        "404 unknown_target"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn spawn_send(
    cluster: &Arc<Cluster>,
    body: ferry_http::Body,
    deadline: tokio::time::Instant,
) -> tokio::task::JoinHandle<Result<Sent, RelayError>> {
    let cluster = cluster.clone();
    let (tenant, target) = names();
    tokio::spawn(async move {
        cluster
            .send(&tenant, &target, request(body), None, "rid", deadline)
            .await
    })
}

async fn body_of(sent: Result<Sent, RelayError>) -> Bytes {
    let Ok(Sent::Answered(answer)) = sent else {
        panic!("no answer")
    };
    answer
        .response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

#[tokio::test]
async fn small_requests_go_straight_to_the_nodes_in_turn_and_their_answers_come_back() {
    let bus = MemoryBus::new();
    let cluster = direct_origin(&bus).await;
    let mut a = Fake::start(&bus, "exec-a").await;
    let mut b = Fake::start(&bus, "exec-b").await;
    until_serves(&cluster).await;
    for _ in 0..10 {
        if cluster.presence.pick("acme", "app", 1) != cluster.presence.pick("acme", "app", 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen = std::collections::HashSet::new();
    for round in 0..4u64 {
        let send = spawn_send(&cluster, ferry_http::full("hello"), deadline);
        // the request is in one of the two inboxes, with no claim and no grant
        let (fake, req) = tokio::select! {
            r = a.next_direct() => (&a, r),
            r = b.next_direct() => (&b, r),
        };
        assert_eq!(req.attempt, 1);
        assert_eq!(req.body, BodyKind::Inline(Bytes::from_static(b"hello")));
        seen.insert(fake.node.clone());
        fake.answer(&req, 100 + round, b"done").await;
        assert_eq!(&body_of(send.await.expect("task")).await[..], b"done");
    }
    assert_eq!(seen.len(), 2, "both nodes took requests: {seen:?}");
    assert_eq!(
        tokio::time::timeout(Duration::from_millis(100), a.queue.next())
            .await
            .ok()
            .flatten(),
        None,
        "nothing went through the dispatch queue"
    );
    assert_eq!(cluster.open_streams(), 0, "nothing left open");
}

#[tokio::test]
async fn a_request_to_a_gone_node_bounces_and_goes_through_the_queue() {
    let bus = MemoryBus::new();
    let cluster = direct_origin(&bus).await;
    let a = Fake::start(&bus, "exec-a").await;
    until_serves(&cluster).await;
    // the node dies without presence noticing yet: its inbox has no subscriber, its queue share is gone too, and
    // another node (which presence does not show yet) consumes the queue
    let Fake { queue, inbox, .. } = a;
    drop((queue, inbox));
    let mut b_queue = bus
        .queue_subscribe(&subjects().dispatch("acme"), DISPATCH_GROUP)
        .await
        .expect("queue");
    let mut b_inbox = bus
        .subscribe(&subjects().inbox("exec-b"))
        .await
        .expect("inbox");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let send = spawn_send(&cluster, ferry_http::empty(), deadline);
    let raw = tokio::time::timeout(Duration::from_secs(5), b_queue.next())
        .await
        .expect("the request reaches the queue")
        .expect("queue open");
    let Ok(Decoded::Message(Message::Request(req))) = cluster::decode(raw) else {
        panic!("not a request")
    };
    assert_eq!(req.attempt, 2, "the bounced first attempt ran nowhere");
    let to_origin = |m: Message| {
        let bus = bus.clone();
        async move {
            bus.publish(&subjects().inbox("origin"), cluster::encode(&m))
                .await
                .expect("send")
        }
    };
    to_origin(Message::Claim {
        origin_stream: req.origin_stream,
        executor: "exec-b".into(),
        executor_stream: 7,
    })
    .await;
    let raw = tokio::time::timeout(Duration::from_secs(5), b_inbox.next())
        .await
        .expect("a grant")
        .expect("inbox open");
    assert!(matches!(
        cluster::decode(raw),
        Ok(Decoded::Message(Message::Grant { stream: 7 }))
    ));
    to_origin(Message::Head {
        stream: req.origin_stream,
        head: Box::new(ResponseHead {
            status: 200,
            headers: vec![],
            body: BodyKind::Inline(Bytes::from_static(b"via the queue")),
        }),
    })
    .await;
    assert_eq!(
        &body_of(send.await.expect("task")).await[..],
        b"via the queue"
    );
}

#[tokio::test]
async fn a_declined_request_goes_through_the_queue_and_a_cancel_names_the_origin_stream() {
    let bus = MemoryBus::new();
    let cluster = direct_origin(&bus).await;
    let mut a = Fake::start(&bus, "exec-a").await;
    until_serves(&cluster).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);

    // declined (no connector for the target there after all): published to the queue, nothing ran
    let send = spawn_send(&cluster, ferry_http::empty(), deadline);
    let req = a.next_direct().await;
    a.to_origin(
        "origin",
        &Message::Decline {
            stream: req.origin_stream,
        },
    )
    .await;
    let again = a.next_request().await;
    assert_eq!(again.attempt, 2);
    a.claim(&again, 3).await;
    assert!(matches!(
        a.next().await,
        Decoded::Message(Message::Grant { stream: 3 })
    ));
    a.to_origin(
        "origin",
        &Message::Head {
            stream: again.origin_stream,
            head: Box::new(ResponseHead {
                status: 200,
                headers: vec![],
                body: BodyKind::Empty,
            }),
        },
    )
    .await;
    assert!(matches!(send.await.expect("task"), Ok(Sent::Answered(_))));

    // the client goes away before the answer: the node hears a cancel naming the origin's stream
    let send = spawn_send(&cluster, ferry_http::empty(), deadline);
    let req = a.next_direct().await;
    send.abort();
    let _ = send.await;
    match a.next().await {
        Decoded::Message(Message::Cancel {
            origin,
            origin_stream,
        }) => {
            assert_eq!(origin, "origin");
            assert_eq!(origin_stream, req.origin_stream);
        }
        other => panic!("not a cancel: {other:?}"),
    }
    // an answer arriving after that is cut at the node
    a.answer(&req, 9, b"late").await;
    assert!(matches!(
        a.next().await,
        Decoded::Message(Message::Abort {
            stream: 9,
            reason: AbortReason::Cancelled
        })
    ));
    // a node that dies after taking a request: the client gets connector_lost once presence forgets it
    let send = spawn_send(&cluster, ferry_http::empty(), deadline);
    let _req = a.next_direct().await;
    assert!(cluster.presence.forget("exec-a"));
    assert_eq!(cluster.streams.peer_gone("exec-a"), 1);
    assert!(matches!(
        send.await.expect("task"),
        Err(RelayError::ConnectorLost(_))
    ));
}
