//! Bounded channels where the newest value wins: how every pipeline stage hands work to the next.
//!
//! Owns the drop policy and its counter. A sender never blocks: when the receiver is behind and the channel is full,
//! the oldest queued value is discarded to make room, so a slow stage sees fresh frames and latency cannot
//! accumulate in queues. Receives values of any type; emits them in order, minus the dropped ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};

/// Sending half; cloning shares the drop counter.
pub struct LatestSender<T> {
    tx: Sender<T>,
    /// A receiver handle used only to evict the oldest value when full.
    evict: Receiver<T>,
    dropped: Arc<AtomicU64>,
    receiver_gone: Arc<AtomicBool>,
}

impl<T> Clone for LatestSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            evict: self.evict.clone(),
            dropped: Arc::clone(&self.dropped),
            receiver_gone: Arc::clone(&self.receiver_gone),
        }
    }
}

/// Receiving half. Dereferences to a crossbeam `Receiver` (`recv`, `try_iter`, `select!`); dropping it tells the
/// senders that the stage has stopped.
pub struct LatestReceiver<T> {
    rx: Receiver<T>,
    gone: Arc<AtomicBool>,
}

impl<T> std::ops::Deref for LatestReceiver<T> {
    type Target = Receiver<T>;
    fn deref(&self) -> &Receiver<T> {
        &self.rx
    }
}

impl<T> Drop for LatestReceiver<T> {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Release);
    }
}

/// Why a send did not deliver.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The receiver was dropped; nothing will read this channel again.
    #[error("the receiving stage has stopped")]
    Disconnected,
}

/// A channel holding at most `capacity` values (at least 1).
///
/// A slow receiver sees the newest values; the sender never waits, and counts what it dropped:
///
/// ```
/// use metaportrait::pipeline::channel::latest;
///
/// let (tx, rx) = latest::<u32>(2);
/// for frame in 0..5 {
///     tx.send(frame).expect("the receiver is alive");
/// }
/// assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![3, 4]);
/// assert_eq!(tx.dropped(), 3);
/// drop(rx);
/// assert!(tx.send(5).is_err(), "a stopped stage is reported to its sender");
/// ```
pub fn latest<T>(capacity: usize) -> (LatestSender<T>, LatestReceiver<T>) {
    let (tx, rx) = channel::bounded(capacity.max(1));
    let gone = Arc::new(AtomicBool::new(false));
    let sender =
        LatestSender { tx, evict: rx.clone(), dropped: Arc::new(AtomicU64::new(0)), receiver_gone: gone.clone() };
    (sender, LatestReceiver { rx, gone })
}

impl<T> LatestSender<T> {
    /// Queues `value`, discarding the oldest queued value if the channel is full. Never blocks.
    pub fn send(&self, mut value: T) -> Result<(), SendError> {
        if self.is_disconnected() {
            return Err(SendError::Disconnected);
        }
        loop {
            match self.tx.try_send(value) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(SendError::Disconnected),
                Err(TrySendError::Full(v)) => {
                    value = v;
                    if self.evict.try_recv().is_ok() {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Values discarded so far because the receiver was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether the receiving stage has gone away (the sender's own eviction handle does not count).
    pub fn is_disconnected(&self) -> bool {
        self.receiver_gone.load(Ordering::Acquire)
    }
}

/// Takes everything queued and returns the newest value (the render loop's `try_recv` policy).
pub fn newest<T>(rx: &Receiver<T>) -> Option<T> {
    rx.try_iter().last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_full_channel_drops_the_oldest_and_counts_it() {
        let (tx, rx) = latest(2);
        for v in 0..5 {
            tx.send(v).unwrap();
        }
        assert_eq!(tx.dropped(), 3);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![3, 4]);
        tx.send(9).unwrap();
        assert_eq!(newest(&rx), Some(9));
        drop(rx);
        assert!(tx.is_disconnected());
        assert_eq!(tx.send(1), Err(SendError::Disconnected));
    }

    #[test]
    fn a_slow_consumer_sees_fresh_values_with_bounded_latency() {
        let (tx, rx) = latest::<Instant>(1);
        let producer = std::thread::spawn(move || {
            for _ in 0..200 {
                tx.send(Instant::now()).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            tx.dropped()
        });
        let mut worst = Duration::ZERO;
        let mut received = 0;
        while let Ok(sent) = rx.recv_timeout(Duration::from_millis(500)) {
            worst = worst.max(sent.elapsed());
            received += 1;
            std::thread::sleep(Duration::from_millis(10)); // a stage 10× slower than its input
        }
        let dropped = producer.join().unwrap();
        assert!(dropped > 100, "dropped {dropped}");
        assert_eq!(received + dropped as usize, 200, "every value is either delivered or counted as dropped");
        // Latency stays within one consumer period (plus scheduling slack), not 200 queued frames.
        assert!(worst < Duration::from_millis(60), "worst latency {worst:?}");
    }
}
