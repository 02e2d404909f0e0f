//! What can reach the supervisor of `tokend run` from outside: signals and the HTTP
//! trigger. Its own module so that those senders do not depend on the supervisor.

#[derive(Debug)]
pub enum Control {
    Shutdown,
    Reload,
    RefreshAll,
    Refresh(String),
}
