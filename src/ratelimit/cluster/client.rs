//! The limiter's connection, from the redis crate: for one Redis a `ConnectionManager` (one
//! multiplexed connection shared by every check, replaced by the crate once it breaks), for a
//! Redis Cluster a cluster connection (one multiplexed connection per node, slots followed
//! through MOVED answers and failovers). Made on first use, inside the runtime that makes the
//! call; given up when a call timed out on it, since nothing says it will ever answer again (a
//! silently dead network path would otherwise hold every later call until TCP gives up).

use super::target::Target;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterConfig;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisResult, Value};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub struct Client {
    target: Target,
    /// Bounds each connection attempt.
    connect_timeout: Duration,
    current: Mutex<Current>,
}

#[derive(Default)]
struct Current {
    conn: Option<Conn>,
    /// Counts the connections made, so that giving one up never drops its successor.
    generation: u64,
}

/// One connection, cheap to clone (a handle on the crate's shared state).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Sends one command and waits for its reply; an error reply is an `Err`.
    pub async fn query(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            // A script's error is the whole reply: no need to rebuild an array to look inside.
            Conn::Single(c) => match c.send_packed_command(cmd).await? {
                Value::ServerError(e) => Err(e.into()),
                reply => Ok(reply),
            },
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

impl Client {
    pub fn new(target: Target, connect_timeout: Duration) -> Client {
        Client {
            target,
            connect_timeout,
            current: Mutex::new(Current::default()),
        }
    }

    /// The current connection and its generation, made now (without waiting: it connects when
    /// first used) if there is none. Must run inside a Tokio runtime.
    pub fn connection(&self) -> RedisResult<(u64, Conn)> {
        let mut current = self.lock();
        if let Some(conn) = &current.conn {
            return Ok((current.generation, conn.clone()));
        }
        let conn = match &self.target {
            Target::Single(client) => {
                // The crate replaces a broken connection by itself; one attempt per call that
                // finds none (the limiter backs off when Redis stays away, and bounds each
                // call by its timeout, so the crate needs no timer per command).
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(None)
                    .set_number_of_retries(0);
                Conn::Single(ConnectionManager::new_lazy_with_config(
                    client.as_ref().clone(),
                    config,
                )?)
            }
            Target::Cluster(client) => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(self.connect_timeout)
                    .set_response_timeout(self.connect_timeout);
                Conn::Cluster(client.get_pending_async_connection_with_config(config))
            }
        };
        current.generation += 1;
        current.conn = Some(conn.clone());
        Ok((current.generation, conn))
    }

    /// Drops the connection of `generation` if it is still the current one: the next call makes
    /// a new one.
    pub fn give_up(&self, generation: u64) {
        let mut current = self.lock();
        if current.generation == generation {
            current.conn = None;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}
