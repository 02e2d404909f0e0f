//! What the supervisor hears from its `ha` group (leadership changes, records other
//! processes committed) and how it reacts: one input stream, one loop that decides.

use tokio::sync::{mpsc, watch};

use crate::deadlines::Now;
use crate::events;
use crate::ha::Leadership;
use crate::store::Watched;

use super::Supervisor;

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

impl Supervisor {
    /// Whether refreshes may call providers: always alone, only while leading in a group.
    pub(super) fn may_fetch(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.leadership.leading)
    }

    pub(super) fn group_event(&mut self, event: GroupEvent) {
        match event {
            GroupEvent::Leadership(l) => {
                let Some(g) = self.group.as_mut() else {
                    return;
                };
                let was = g.leadership.leading;
                g.store.set_fence(l.leader_rev.filter(|_| l.leading));
                let leader_changed = l.leader != g.leadership.leader;
                let recovered = l.error.is_none() && g.leadership.error.is_some();
                if l.leading != was || leader_changed {
                    events::leadership(&g.name, l.leading, l.leader.as_deref());
                }
                if recovered || leader_changed {
                    // etcd answers again, or someone new leads: a watch opened before may
                    // be silently dead, and commits may have been missed.
                    g.store.rewatch();
                }
                let wake = (l.leading && !was) || recovered || leader_changed;
                g.leadership = l;
                self.publish_role();
                if wake {
                    // Whatever came due while following is this process's job now, and
                    // what others committed meanwhile is read again.
                    self.wake_all();
                }
            }
            GroupEvent::Store(Watched::Resync) => self.wake_all(),
            GroupEvent::Store(Watched::Changed(change)) => {
                let change = *change;
                let name = change.record.credential.clone();
                let Some(entry) = self.entries.get_mut(&name) else {
                    return;
                };
                match entry.slot.as_mut() {
                    Some(slot) => {
                        if slot.offer(change.record, change.version) {
                            let now = Now::read();
                            entry.next = now.wall;
                            self.queue.insert(&name, now.wall, now);
                        }
                    }
                    None => entry.store_changed = true,
                }
            }
        }
    }

    /// Every credential gets an attempt now (a read of the store first); one in flight gets
    /// another as soon as it returns, since it may have started as a follower.
    fn wake_all(&mut self) {
        let now = Now::read();
        for (name, entry) in &mut self.entries {
            if entry.slot.is_some() {
                entry.next = now.wall;
                self.queue.insert(name, now.wall, now);
            } else {
                entry.store_changed = true;
            }
        }
    }

    pub(super) fn publish_role(&self) {
        if let Some(g) = &self.group {
            self.observed.set_group(crate::observe::GroupView {
                group: g.name.clone(),
                leading: g.leadership.leading,
                leader: g.leadership.leader.clone(),
                error: g.leadership.error.clone(),
            });
        }
    }
}
