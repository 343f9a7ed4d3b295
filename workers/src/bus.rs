//! The in-process bus: the stream when no Kafka is configured (all-in-one mode).
//!
//! It keeps Kafka's promise with none of its storage: [`Publisher::publish`] returns only after every consumer
//! group has *handled* the batch, so the relay clears outbox rows only for events every consumer has seen. If the
//! process dies first, the rows are still in the outbox and are published again at start (consumers are
//! idempotent). Each group handles a batch in publish order, so per-aggregate order holds; the projections apply a
//! whole batch in one transaction per read model, which under load (when the relay's batches grow) is what
//! keeps their commits from limiting ingest. Batches are handed over ahead of their acknowledgement
//! ([`Publisher::hand_over`]), so each group works at its own pace, up to [`crate::relay::IN_FLIGHT`] batches
//! behind the relay, instead of every group waiting for the slowest at every batch. Each group's channel holds
//! that many, so handing a batch over never waits on a slow group.

use std::sync::Arc;

use async_trait::async_trait;
use domain::StoredEvent;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::sync::CancellationToken;

use crate::consumer::{handle_batch_with_retry, EventHandler};
use crate::relay::{PublishError, Published, Publisher, IN_FLIGHT};

struct Batch {
    events: Arc<Vec<StoredEvent>>,
    done: oneshot::Sender<()>,
}

struct Group {
    name: &'static str,
    sender: mpsc::Sender<Batch>,
    receiver: Option<mpsc::Receiver<Batch>>,
}

#[derive(Clone, Default)]
pub struct InProcessBus {
    groups: Arc<Mutex<Vec<Group>>>,
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare a consumer group before the relay starts, so no batch is published past it.
    pub async fn register(&self, name: &'static str) {
        let mut groups = self.groups.lock().await;
        if groups.iter().any(|g| g.name == name) {
            return;
        }
        let (sender, receiver) = mpsc::channel(IN_FLIGHT);
        groups.push(Group {
            name,
            sender,
            receiver: Some(receiver),
        });
    }

    /// Handle every batch published to `handler`'s group until `shutdown`.
    pub(crate) async fn consume(
        &self,
        handler: Arc<dyn EventHandler>,
        shutdown: CancellationToken,
    ) {
        self.register(handler.group()).await;
        let receiver = {
            let mut groups = self.groups.lock().await;
            groups
                .iter_mut()
                .find(|g| g.name == handler.group())
                .and_then(|g| g.receiver.take())
        };
        let Some(mut receiver) = receiver else {
            tracing::error!(
                group = handler.group(),
                "consumer group already has a consumer"
            );
            return;
        };
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                batch = receiver.recv() => match batch { Some(b) => b, None => break },
            };
            // Shut down mid-batch: not acknowledging leaves the batch in the outbox.
            if handle_batch_with_retry(handler.as_ref(), &batch.events, &shutdown).await {
                let _ = batch.done.send(());
            }
        }
        // A later consumer of this group gets a channel of its own. Batches may be queued behind one this
        // consumer did not handle, and a later consumer must not handle them before that one is published
        // again: they go with this channel, unacknowledged, and the relay publishes them all again from the
        // outbox (a send still waiting on this channel fails, which sends the relay back to the outbox).
        let mut groups = self.groups.lock().await;
        if let Some(g) = groups.iter_mut().find(|g| g.name == handler.group()) {
            let (sender, fresh) = mpsc::channel(IN_FLIGHT);
            g.sender = sender;
            g.receiver = Some(fresh);
        }
        drop(receiver);
    }
}

impl InProcessBus {
    /// Put `events` in every group's channel, in the order of the calls, and return what tells when each
    /// group has handled them.
    async fn send(&self, events: &Arc<Vec<StoredEvent>>) -> Result<Acks, PublishError> {
        let senders: Vec<(&'static str, mpsc::Sender<Batch>)> = self
            .groups
            .lock()
            .await
            .iter()
            .map(|g| (g.name, g.sender.clone()))
            .collect();
        if senders.is_empty() {
            return Err(PublishError(
                "no consumer is registered on the in-process bus".into(),
            ));
        }
        let mut acks = Vec::with_capacity(senders.len());
        for (name, sender) in senders {
            let (done, ack) = oneshot::channel();
            sender
                .send(Batch {
                    events: events.clone(),
                    done,
                })
                .await
                .map_err(|_| PublishError(format!("consumer group {name} is gone")))?;
            acks.push((name, ack));
        }
        Ok(Acks(acks))
    }
}

/// One acknowledgement per consumer group.
struct Acks(Vec<(&'static str, oneshot::Receiver<()>)>);

impl Acks {
    async fn all(self) -> Result<(), PublishError> {
        for (name, ack) in self.0 {
            ack.await.map_err(|_| {
                PublishError(format!(
                    "consumer group {name} stopped before handling the batch"
                ))
            })?;
        }
        Ok(())
    }
}

/// Each group takes batches from its channel one at a time, in the order they were put there, and handles none
/// after one it stopped on (it stops only when shut down); so batches may be handed over before the ones ahead
/// of them are handled, and the relay keeps several in flight.
#[async_trait]
impl Publisher for InProcessBus {
    async fn publish(&self, events: &[StoredEvent]) -> Result<(), PublishError> {
        self.send(&Arc::new(events.to_vec())).await?.all().await
    }

    async fn hand_over(
        &self,
        events: &Arc<Vec<StoredEvent>>,
    ) -> Result<Option<Published>, PublishError> {
        let acks = self.send(events).await?;
        Ok(Some(Box::pin(acks.all())))
    }
}
