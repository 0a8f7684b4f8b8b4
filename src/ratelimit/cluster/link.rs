//! The limiter's current connection to Redis: made on first use, replaced once broken. Calls
//! that find no usable connection wait for the one being made rather than each making its own.

use super::conn::{ConnError, Connector};
use super::mux::Mux;
use std::sync::{Arc, Mutex};

pub struct Link {
    connector: Connector,
    current: Mutex<Option<Arc<Mux>>>,
    /// Held while a connection is being made.
    connecting: tokio::sync::Mutex<()>,
}

impl Link {
    pub fn new(connector: Connector) -> Link {
        Link {
            connector,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// `host:port` or the socket path, for logs.
    pub fn address(&self) -> String {
        self.connector.address()
    }

    /// The current connection, or a new one when there is none or it broke.
    pub async fn connection(&self) -> Result<Arc<Mux>, ConnError> {
        if let Some(mux) = self.live() {
            return Ok(mux);
        }
        let _making = self.connecting.lock().await;
        if let Some(mux) = self.live() {
            return Ok(mux);
        }
        let mux = Arc::new(Mux::new(self.connector.connect().await?));
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(mux.clone());
        Ok(mux)
    }

    fn live(&self) -> Option<Arc<Mux>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|m| !m.is_broken()).cloned()
    }
}
