//! What the supervisor hears from its `ha` group: leadership changes and records other
//! processes committed. One input stream, so the single loop stays the only decider.

use tokio::sync::{mpsc, watch};

use crate::ha::Leadership;
use crate::store::etcd::Watched;

pub enum GroupEvent {
    Leadership(Leadership),
    Store(Watched),
}

pub struct GroupInputs {
    /// `None` for `role: follower`, which never campaigns.
    pub leadership: Option<watch::Receiver<Leadership>>,
    pub watched: mpsc::Receiver<Watched>,
}

impl GroupInputs {
    /// The next event; pends for ever once both sources are closed.
    pub async fn next(&mut self) -> GroupEvent {
        loop {
            tokio::select! {
                changed = async {
                    match self.leadership.as_mut() {
                        Some(rx) => rx.changed().await.map(|_| rx.borrow_and_update().clone()),
                        None => std::future::pending().await,
                    }
                } => match changed {
                    Ok(l) => return GroupEvent::Leadership(l),
                    Err(_) => self.leadership = None,
                },
                Some(w) = self.watched.recv() => return GroupEvent::Store(w),
                else => std::future::pending::<()>().await,
            }
        }
    }
}
