//! Lookup coalescing: while a lookup round is in flight, the keys of every further request
//! queue up and go out together in the next round. When idle a request goes out at once (no
//! added latency); under load — a closure being crawled level by level — many small batches
//! become a few large ones, one request per log each, which saves the logs and the checks most
//! of their per-request work.

use std::sync::{Arc, Mutex};

use provenix_core::nix::StorePathHash;
use tokio::sync::oneshot;

use crate::quorum::{Lookup, Quorum};

/// Rounds in flight at once. One: while Nix walks a closure cold, the machine's CPU is the
/// limit, and fewer, larger rounds cost the logs and the checks less per key than more, smaller
/// ones; 16 alternating real-Nix runs of the 202-path closure through a fresh proxy were
/// ~10–40 ms faster with 1 than with 2 (issue 4).
const MAX_ROUNDS: usize = 1;

type Waiter = (Vec<StorePathHash>, oneshot::Sender<Arc<Lookup>>);

#[derive(Default)]
struct State {
    rounds: usize,
    queue: Vec<Waiter>,
}

/// Called once per round with its lookup (for metrics).
pub type OnRound = Box<dyn Fn(&Lookup) + Send + Sync>;

/// Coalesces [`Quorum::lookup`] calls.
pub struct Coalescer {
    quorum: Arc<Quorum>,
    state: Mutex<State>,
    on_round: OnRound,
}

impl Coalescer {
    /// A coalescer over `quorum`, calling `on_round` after each round.
    pub fn new(quorum: Arc<Quorum>, on_round: OnRound) -> Arc<Self> {
        Arc::new(Self {
            quorum,
            state: Mutex::new(State::default()),
            on_round,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lookup of a round that covered `keys` (and maybe others).
    pub async fn lookup(self: &Arc<Self>, keys: Vec<StorePathHash>) -> Arc<Lookup> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut st = self.lock();
            st.queue.push((keys, tx));
            if st.rounds < MAX_ROUNDS {
                st.rounds += 1;
                true
            } else {
                false
            }
        };
        if start {
            tokio::spawn(self.clone().drive());
        }
        match rx.await {
            Ok(l) => l,
            // The round's task died: no evidence, so nothing is trusted.
            Err(_) => Arc::new(Lookup::default()),
        }
    }

    /// Runs rounds until the queue is empty.
    async fn drive(self: Arc<Self>) {
        loop {
            let batch = {
                let mut st = self.lock();
                if st.queue.is_empty() {
                    st.rounds -= 1;
                    return;
                }
                std::mem::take(&mut st.queue)
            };
            let keys: Vec<StorePathHash> =
                batch.iter().flat_map(|(k, _)| k.iter().copied()).collect();
            let lookup = Arc::new(self.quorum.lookup(&keys).await);
            (self.on_round)(&lookup);
            for (_, tx) in batch {
                let _ = tx.send(lookup.clone());
            }
        }
    }
}
