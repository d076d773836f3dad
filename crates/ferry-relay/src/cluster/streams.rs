//! The table of this node's open cross-node streams: each request this node sent to another node (as origin) or
//! runs for another node (as executor) has a stream id here, and the inbox router delivers that stream's messages
//! to it.
//!
//! A stream has two inputs: an ordered channel ([`Inbound`]: claims, grants, the response head, body chunks, the
//! end, aborts) read by whichever task owns the stream at the time, and the peer's cumulative credit for the
//! chunks this side sends ([`CreditState`]), which the task sending a body watches. An abort or the peer's death
//! reaches both.

use ferry_proto::cluster::{AbortReason, Data, Header, ResponseHead};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{mpsc, watch};

/// A message for one stream.
#[derive(Debug)]
pub(crate) enum Inbound {
    Claim {
        executor: String,
        executor_stream: u64,
    },
    Grant,
    Deny,
    Decline,
    Head(Box<ResponseHead>),
    /// The answer to a request sent to the executor's inbox: the head and the executor's stream.
    Answer {
        executor: String,
        executor_stream: u64,
        head: Box<ResponseHead>,
    },
    Data(Data),
    End {
        chunks: u64,
        trailers: Vec<Header>,
    },
    Abort(AbortReason),
    /// The peer node left presence (died or shut down).
    PeerGone,
}

/// The peer's credit for the chunks this side sends: how many it has consumed, or why the stream was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CreditState {
    pub consumed: u64,
    pub cut: Option<AbortReason>,
}

struct Entry {
    tx: mpsc::UnboundedSender<Inbound>,
    credit: watch::Sender<CreditState>,
    /// The node at the other end, once known (the executor after a grant, the origin from the start).
    peer: Option<String>,
}

/// Every open stream of this node.
#[derive(Default)]
pub(crate) struct Streams {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
}

/// One side's handle on a stream: its id, its inbound channel and credit, and its registration. The parts may
/// go separate ways (a body reading the channel, a task watching the credit); the stream stays open until the
/// last clone of the registration is dropped.
pub(crate) struct StreamHandle {
    pub id: u64,
    pub rx: mpsc::UnboundedReceiver<Inbound>,
    pub credit: watch::Receiver<CreditState>,
    pub reg: Arc<Registration>,
}

/// Keeps a stream in the table; removes it when dropped.
pub(crate) struct Registration {
    id: u64,
    streams: Arc<Streams>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.streams.lock().remove(&self.id);
    }
}

impl Streams {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open a stream, with its peer if already known.
    pub fn open(self: &Arc<Self>, peer: Option<String>) -> StreamHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let (credit_tx, credit) = watch::channel(CreditState {
            consumed: 0,
            cut: None,
        });
        self.lock().insert(
            id,
            Entry {
                tx,
                credit: credit_tx,
                peer,
            },
        );
        StreamHandle {
            id,
            rx,
            credit,
            reg: Arc::new(Registration {
                id,
                streams: self.clone(),
            }),
        }
    }

    /// Record the node at the other end of a stream (its death then cuts the stream).
    pub fn set_peer(&self, id: u64, peer: &str) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.peer = Some(peer.to_owned());
        }
    }

    /// Forget the node at the other end of a stream, and any cut its death made (a request that came back unrun
    /// from that node, going elsewhere).
    pub fn clear_peer(&self, id: u64) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.peer = None;
            e.credit.send_modify(|c| c.cut = None);
        }
    }

    /// Deliver a message to a stream; `false` when the stream is not open here.
    pub fn deliver(&self, id: u64, message: Inbound) -> bool {
        let entries = self.lock();
        let Some(e) = entries.get(&id) else {
            return false;
        };
        if let Inbound::Abort(reason) = &message {
            let reason = *reason;
            e.credit.send_modify(|c| c.cut = Some(reason));
        }
        e.tx.send(message).is_ok()
    }

    /// Record the peer's cumulative credit.
    pub fn credit(&self, id: u64, consumed: u64) {
        if let Some(e) = self.lock().get(&id) {
            e.credit.send_if_modified(|c| {
                let more = consumed > c.consumed;
                if more {
                    c.consumed = consumed;
                }
                more
            });
        }
    }

    /// A node is gone: cut every stream whose peer it was. Returns how many.
    pub fn peer_gone(&self, node: &str) -> usize {
        let entries = self.lock();
        let mut n = 0;
        for e in entries.values() {
            if e.peer.as_deref() == Some(node) {
                e.credit
                    .send_modify(|c| c.cut = Some(AbortReason::ConnectorLost));
                let _ = e.tx.send(Inbound::PeerGone);
                n += 1;
            }
        }
        n
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivery_credit_abort_and_peer_death() {
        let streams = Arc::new(Streams::default());
        let mut a = streams.open(Some("n2".into()));
        let mut b = streams.open(None);
        assert_ne!(a.id, b.id);
        assert!(streams.deliver(a.id, Inbound::Grant));
        assert!(matches!(a.rx.recv().await, Some(Inbound::Grant)));
        streams.credit(a.id, 5);
        streams.credit(a.id, 3);
        assert_eq!(a.credit.borrow().consumed, 5, "credit only grows");
        assert_eq!(streams.peer_gone("n2"), 1);
        assert!(matches!(a.rx.recv().await, Some(Inbound::PeerGone)));
        assert_eq!(a.credit.borrow().cut, Some(AbortReason::ConnectorLost));
        streams.set_peer(b.id, "n3");
        assert!(streams.deliver(b.id, Inbound::Abort(AbortReason::Cancelled)));
        assert_eq!(b.credit.borrow().cut, Some(AbortReason::Cancelled));
        assert!(matches!(
            b.rx.recv().await,
            Some(Inbound::Abort(AbortReason::Cancelled))
        ));
        let id = a.id;
        drop(a);
        assert!(
            !streams.deliver(id, Inbound::Grant),
            "closed streams get nothing"
        );
        assert_eq!(streams.len(), 1);
    }
}
