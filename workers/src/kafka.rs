//! Kafka transport (rdkafka with its bundled librdkafka): one topic, keyed by aggregate id so that each
//! aggregate's events stay in one partition and in order; an idempotent producer so a retried send is not
//! duplicated by the broker; consumer groups with manual offset commits after the events were handled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::StoredEvent;
use futures::future::join_all;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::consumer::{handle_batch_with_retry, handle_with_retry, EventHandler};
use crate::relay::{PublishError, Publisher};
use projections::status::PartitionLag;

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`
    pub brokers: String,
    pub topic: String,
    pub partitions: i32,
    /// Consumer groups are `{group_prefix}-{role}`.
    pub group_prefix: String,
    /// The longest a consumer's fetch may wait for data at the broker (`fetch.wait.max.ms`); see
    /// [`DEFAULT_FETCH_WAIT_MS`].
    pub fetch_wait_ms: u32,
}

/// librdkafka waits up to 500 ms for a fetch to fill by default; a notifier wants each event at once (a failed
/// build crosses the stream twice: verdict to planner, notification to delivery). Kafka answers a waiting fetch as
/// soon as data arrives, so this bounds only how often an idle consumer asks. Some brokers hold every fetch for
/// the whole wait, data or not (tansu 0.6.0: `tansu-storage`'s fetch service sleeps out the remaining wait after
/// it has read), and there each hop costs up to twice this: lower it there for latency, at the price of that
/// many more fetches a second from every idle consumer.
pub const DEFAULT_FETCH_WAIT_MS: u32 = 10;

impl KafkaConfig {
    /// Where dead letters are published, for whoever wants to react to them (an alerting pipeline, a ticket).
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dead-letters", self.topic)
    }

    pub(crate) fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("socket.timeout.ms", "10000");
        // librdkafka's own debug contexts (`cgrp,fetch`, `all`): what a consumer group is doing, for the rare
        // day it does something surprising. Logged through `tracing` like the rest of librdkafka.
        if let Ok(debug) = std::env::var("HERALD_KAFKA_DEBUG") {
            config.set("debug", debug);
        }
        config
    }

    /// The producer the relay publishes with: idempotent, acknowledged by every in-sync replica, batched for
    /// at most a millisecond. Public so that a benchmark's raw-produce baseline uses exactly these settings.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000")
            .create()
    }

    /// Create the topics (events and dead letters) if they do not exist yet.
    pub async fn ensure_topic(&self) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client().create()?;
        let dead_letters = self.dead_letter_topic();
        let topics = [
            NewTopic::new(&self.topic, self.partitions, TopicReplication::Fixed(1)),
            NewTopic::new(&dead_letters, 1, TopicReplication::Fixed(1)),
        ];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::error!(topic = name, "cannot create topic");
                    })
                }
            }
        }
        Ok(())
    }

    /// How far each consumer group is behind the end of each partition.
    pub async fn lag(&self, roles: &[&str]) -> Result<Vec<PartitionLag>, KafkaError> {
        let config = self.clone();
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(5);
            let mut lags = Vec::new();
            for role in roles {
                let group = format!("{}-{role}", config.group_prefix);
                let consumer: rdkafka::consumer::BaseConsumer = config
                    .client()
                    .set("group.id", &group)
                    .set("enable.auto.commit", "false")
                    .create()?;
                let metadata = consumer.fetch_metadata(Some(&config.topic), timeout)?;
                let mut partitions = rdkafka::TopicPartitionList::new();
                for topic in metadata.topics() {
                    for partition in topic.partitions() {
                        partitions.add_partition(&config.topic, partition.id());
                    }
                }
                let committed = consumer.committed_offsets(partitions, timeout)?;
                for element in committed.elements() {
                    let (low, high) =
                        consumer.fetch_watermarks(&config.topic, element.partition(), timeout)?;
                    let position = match element.offset() {
                        rdkafka::Offset::Offset(o) => o,
                        _ => low,
                    };
                    lags.push(PartitionLag {
                        group: group.clone(),
                        partition: element.partition(),
                        committed: position,
                        end: high,
                        lag: (high - position).max(0),
                    });
                }
            }
            Ok(lags)
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }

    /// Is a broker reachable? (For `/ready`.)
    pub async fn ping(&self) -> Result<(), KafkaError> {
        let config = self.clone();
        tokio::task::spawn_blocking(move || {
            let producer: rdkafka::producer::BaseProducer = config.client().create()?;
            producer
                .client()
                .fetch_metadata(Some(&config.topic), Duration::from_secs(3))
                .map(|_| ())
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }
}

pub struct KafkaPublisher {
    producer: FutureProducer,
    topic: String,
}

impl KafkaPublisher {
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let producer = config.producer()?;
        Ok(Self {
            producer,
            topic: config.topic.clone(),
        })
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, events: &[StoredEvent]) -> Result<(), PublishError> {
        let payloads: Vec<Vec<u8>> = events
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<_, _>>()
            .map_err(|e| PublishError(e.to_string()))?;
        // Enqueued in order; the idempotent producer keeps that order per partition even across its retries.
        let traceparents: Vec<Option<String>> = events
            .iter()
            .map(|e| {
                let trace_id = e.metadata.get("trace_id")?.as_str()?;
                Some(commands::trace::traceparent(trace_id))
            })
            .collect();
        let sends = events.iter().zip(&payloads).zip(&traceparents).map(
            |((event, payload), traceparent)| {
                let mut headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "event_type",
                        value: Some(event.event_type.as_str()),
                    })
                    .insert(Header {
                        key: "aggregate_type",
                        value: Some(event.aggregate_type.as_str()),
                    });
                if let Some(traceparent) = traceparent {
                    headers = headers.insert(Header {
                        key: "traceparent",
                        value: Some(traceparent.as_str()),
                    });
                }
                let record = FutureRecord::to(&self.topic)
                    .key(event.aggregate_id.as_bytes())
                    .payload(payload.as_slice())
                    .headers(headers);
                self.producer.send(record, Duration::from_secs(30))
            },
        );
        for result in join_all(sends).await {
            result.map_err(|(e, _)| PublishError(e.to_string()))?;
        }
        Ok(())
    }
}

pub struct KafkaConsumer {
    consumer: StreamConsumer,
}

impl KafkaConsumer {
    pub fn new(config: &KafkaConfig, role: &str) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer = config
            .client()
            .set("group.id", format!("{}-{role}", config.group_prefix))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("fetch.wait.max.ms", config.fetch_wait_ms.to_string())
            .create()?;
        consumer.subscribe(&[&config.topic])?;
        Ok(Self { consumer })
    }

    /// Handle messages until `shutdown`, committing offsets only after their events were handled.
    ///
    /// What has already arrived when a message is taken (up to [`CONSUME_BATCH`]) is handled with it as one
    /// batch, in arrival order, so each partition's (and so each aggregate's) order holds: under load a
    /// handler that applies batches (the read models, the delivery queue) commits once per batch instead of
    /// once per event, as it does on the in-process bus. A message on its own keeps its `traceparent`.
    pub async fn run(self, handler: Arc<dyn EventHandler>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = self.consumer.recv() => m,
            };
            let first = match first {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(group = handler.group(), error = %e, "kafka receive failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut messages = vec![first];
            while messages.len() < CONSUME_BATCH {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(m)) => messages.push(m),
                    Some(Err(e)) => {
                        tracing::warn!(group = handler.group(), error = %e, "kafka receive failed");
                        break;
                    }
                    None => break,
                }
            }
            let mut events = Vec::with_capacity(messages.len());
            for message in &messages {
                match message.payload().map(serde_json::from_slice::<StoredEvent>) {
                    Some(Ok(event)) => events.push(event),
                    other => tracing::error!(
                        group = handler.group(),
                        partition = message.partition(),
                        offset = message.offset(),
                        error = ?other.map(|r| r.err()),
                        "message is not a Herald event; skipped"
                    ),
                }
            }
            let handled = match (events.as_slice(), messages.as_slice()) {
                ([event], [message]) => {
                    let trace = message.headers().and_then(|headers| {
                        headers
                            .iter()
                            .find(|h| h.key == "traceparent")
                            .and_then(|h| std::str::from_utf8(h.value?).ok())
                            .and_then(commands::trace::parse_traceparent)
                    });
                    handle_with_retry(handler.as_ref(), event, trace, &shutdown).await
                }
                (events, _) => handle_batch_with_retry(handler.as_ref(), events, &shutdown).await,
            };
            if !handled {
                return;
            }
            if let Err(e) = self.commit(&messages) {
                tracing::warn!(group = handler.group(), error = %e, "offset commit failed; the events may be seen again");
            }
        }
    }

    /// Commit past the last of `messages` in each partition.
    fn commit(&self, messages: &[BorrowedMessage<'_>]) -> Result<(), KafkaError> {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for message in messages {
            let offset = next
                .entry((message.topic(), message.partition()))
                .or_default();
            *offset = (*offset).max(message.offset() + 1);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        self.consumer.commit(&list, CommitMode::Async)
    }
}

/// Messages handled as one batch at most.
const CONSUME_BATCH: usize = 500;
