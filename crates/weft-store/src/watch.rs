//! The lease watch: events, resume revisions.

use etcd_client::{EventType, WatchStream};
use tracing::warn;

use crate::*;

/// The revision a watch response proves delivered: its last event's mod revision, or for a
/// response without events (a progress notification) the header's revision.
pub(crate) fn delivered_revision(event_revisions: impl Iterator<Item = i64>, header: i64) -> i64 {
    event_revisions.max().unwrap_or(header)
}

/// What a paged listing collects.
pub trait ListItem {
    /// Whether the pages are asked for without values.
    const KEYS_ONLY: bool;
    /// Marks items listed without their value because it alone is over gRPC's limit.
    fn mark_oversized(items: &mut [Self])
    where
        Self: Sized;
}

impl ListItem for RawLease {
    const KEYS_ONLY: bool = false;
    fn mark_oversized(items: &mut [Self]) {
        for i in items {
            i.oversized = Some(MAX_MESSAGE_BYTES);
        }
    }
}

impl ListItem for KeyRevision {
    const KEYS_ONLY: bool = true;
    fn mark_oversized(_: &mut [Self]) {}
}

/// A running watch on the subnet keys.
pub struct LeaseWatch {
    pub(crate) stream: WatchStream,
    pub(crate) prefix: String,
}

impl LeaseWatch {
    /// Asks etcd for a progress notification: once the watch has caught up, etcd answers
    /// with an empty batch carrying the current revision (see [`WatchBatch::Events`]).
    pub async fn request_progress(&mut self) -> Result<(), StoreError> {
        self.stream
            .request_progress()
            .await
            .map_err(|cause| StoreError::Request {
                what: format!("watch {} (progress request)", self.prefix),
                hint: None,
                cause,
            })
    }

    /// The next batch of events. `Ok(None)` means the stream ended (etcd went away): the
    /// caller reconnects from its last revision + 1. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<WatchBatch>, StoreError> {
        loop {
            let Some(resp) = self
                .stream
                .message()
                .await
                .map_err(|cause| StoreError::Request {
                    what: format!("watch {}", self.prefix),
                    hint: None,
                    cause,
                })?
            else {
                return Ok(None);
            };
            if resp.compact_revision() > 0 {
                return Ok(Some(WatchBatch::Compacted(resp.compact_revision())));
            }
            if resp.canceled() {
                warn!(
                    reason = resp.cancel_reason(),
                    "etcd cancelled the lease watch"
                );
                return Err(StoreError::WatchCancelled {
                    prefix: self.prefix.clone(),
                    reason: resp.cancel_reason().to_string(),
                });
            }
            if resp.created() && resp.events().is_empty() {
                continue;
            }
            // The revision everything up to which has been delivered. Not the header's while
            // events come: etcd stamps every response with its current revision, also the
            // batches (of up to 1,000 revisions) of a watch that is still catching up, so
            // resuming from the header would skip the batches not yet sent. An empty
            // response is a progress notification, which etcd sends only to a watch that has
            // caught up: then the header's revision is delivered in full.
            let revision = delivered_revision(
                resp.events()
                    .iter()
                    .filter_map(|e| e.kv())
                    .map(|kv| kv.mod_revision()),
                resp.header().map(|h| h.revision()).unwrap_or(0),
            );
            let events = resp
                .events()
                .iter()
                .filter_map(|ev| {
                    let kv = ev.kv()?;
                    Some(match ev.event_type() {
                        EventType::Put => LeaseEvent::Put(raw(kv, &self.prefix)),
                        EventType::Delete => {
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            LeaseEvent::Delete {
                                subnet: key_to_subnet(&key, &self.prefix),
                                key,
                            }
                        }
                    })
                })
                .collect();
            return Ok(Some(WatchBatch::Events { events, revision }));
        }
    }
}
