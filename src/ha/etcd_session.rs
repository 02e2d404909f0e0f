//! Placeholder election until the full session lands: grant, campaign, keepalive.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::net::etcd::{Compare, EtcdClient, Op, OpResponse};

use super::Leadership;

pub struct Election {
    rx: watch::Receiver<Leadership>,
    task: tokio::task::JoinHandle<()>,
    state: std::sync::Arc<std::sync::Mutex<Option<(i64, i64)>>>,
    client: EtcdClient,
    key: Vec<u8>,
}

impl Election {
    pub fn spawn(client: EtcdClient, key: Vec<u8>, identity: String, lease: Duration) -> Election {
        let (tx, rx) = watch::channel(Leadership::default());
        let state = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (c, k, st) = (client.clone(), key.clone(), state.clone());
        let task = tokio::spawn(async move {
            let ttl = lease.as_secs().max(2) as i64;
            loop {
                let Ok(l) = c.lease_grant(ttl).await else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                let mut leader_until = None;
                let mut rev = None;
                loop {
                    let sent = Instant::now();
                    let r = c
                        .txn(
                            &[Compare::create_revision(&k, 0)],
                            &[Op::put(&k, identity.as_bytes(), l.id)],
                            &[Op::range(&k)],
                        )
                        .await;
                    let mut leader = None;
                    if let Ok(r) = &r {
                        if r.succeeded {
                            rev = Some(r.revision);
                        } else if let Some(OpResponse::Range(rr)) = r.responses.first()
                            && let Some(kv) = rr.kvs.first()
                        {
                            leader = Some(String::from_utf8_lossy(&kv.value).into_owned());
                            if kv.lease == l.id {
                                rev = Some(kv.create_revision);
                            } else {
                                rev = None;
                            }
                        }
                    }
                    let alive = matches!(c.lease_keepalive(l.id).await, Ok(t) if t > 0);
                    if !alive {
                        leader_until = None;
                        rev = None;
                    } else if rev.is_some() {
                        leader_until = Some(sent + lease - lease / 3);
                        leader = Some(identity.clone());
                    }
                    let leading = leader_until.is_some_and(|u| Instant::now() < u) && rev.is_some();
                    *st.lock().unwrap() = rev.map(|r| (l.id, r));
                    tx.send_if_modified(|cur| {
                        let new = Leadership {
                            leading,
                            leader: leader.clone(),
                            leader_rev: rev.filter(|_| leading),
                            error: None,
                        };
                        let changed = *cur != new;
                        *cur = new;
                        changed
                    });
                    if !alive {
                        break;
                    }
                    tokio::time::sleep(lease / 3).await;
                }
            }
        });
        Election {
            rx,
            task,
            state,
            client,
            key,
        }
    }

    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.rx.clone()
    }

    pub async fn resign(self) {
        self.task.abort();
        let held = *self.state.lock().unwrap();
        if let Some((lease, rev)) = held {
            let _ = self
                .client
                .txn(
                    &[Compare::create_revision(&self.key, rev)],
                    &[Op::delete(&self.key)],
                    &[],
                )
                .await;
            let _ = self.client.lease_revoke(lease).await;
        }
    }
}
