//! [`MemoryHub`]: a [`Rooms`] in the same process, for tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{SignalingTransport, TransportError};
use crate::msg::{ClientMsg, ParseError, ServerMsg};
use crate::rooms::{ConnId, Limits, Rooms};

/// An in-process signaling server: a [`Rooms`] behind a mutex, handing out
/// connected [`MemoryTransport`]s.
///
/// Messages go through the same JSON encoding and the same [`Rooms`] checks
/// as over a WebSocket, so tests see what a real server would do. Time is
/// tokio's clock (`tokio::time::Instant`), so `start_paused` tests control
/// rate limits and idle timeouts; idle connections are expired whenever any
/// transport sends. Queues are unbounded: meant for tests, not production.
#[derive(Clone)]
pub struct MemoryHub {
    inner: Arc<Mutex<HubInner>>,
}

impl std::fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHub").finish_non_exhaustive()
    }
}

struct HubInner {
    rooms: Rooms,
    conns: HashMap<ConnId, mpsc::UnboundedSender<String>>,
}

impl HubInner {
    fn deliver(&mut self, out: Vec<(ConnId, ServerMsg)>) {
        for (conn, msg) in out {
            if let Some(tx) = self.conns.get(&conn) {
                // A receiver that is gone is dropped from the rooms on its Drop.
                let _ = tx.send(msg.to_json());
            }
        }
        while let Some(conn) = self.rooms.poll_close() {
            // Dropping the sender ends that transport's stream after the queued messages.
            self.conns.remove(&conn);
        }
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl MemoryHub {
    /// A hub with open rooms, no ICE servers and the given limits.
    pub fn new(limits: Limits) -> MemoryHub {
        MemoryHub::with_rooms(Rooms::new(limits))
    }

    /// A hub around a configured [`Rooms`] (auth, ICE servers).
    pub fn with_rooms(rooms: Rooms) -> MemoryHub {
        MemoryHub {
            inner: Arc::new(Mutex::new(HubInner {
                rooms,
                conns: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        lock(&self.inner)
    }

    /// A new connected client; its first message is the welcome.
    pub fn connect(&self) -> Result<MemoryTransport, TransportError> {
        let mut inner = self.lock();
        let (conn, welcome) = inner
            .rooms
            .connect(now())
            .map_err(|e| TransportError::WebSocket(Box::new(e)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        inner.conns.insert(conn, tx);
        inner.deliver(vec![(conn, welcome)]);
        Ok(MemoryTransport {
            hub: self.inner.clone(),
            conn,
            rx,
        })
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.lock().rooms.connection_count()
    }
}

fn lock(m: &Mutex<HubInner>) -> MutexGuard<'_, HubInner> {
    // No code path panics while holding the lock; recover anyway.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One client connection to a [`MemoryHub`]. Dropping it disconnects.
pub struct MemoryTransport {
    hub: Arc<Mutex<HubInner>>,
    conn: ConnId,
    rx: mpsc::UnboundedReceiver<String>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl MemoryTransport {
    /// Sends a raw text frame, as a WebSocket client could.
    pub fn send_text(&mut self, text: &str) -> Result<(), TransportError> {
        let mut inner = lock(&self.hub);
        if !inner.conns.contains_key(&self.conn) {
            return Err(TransportError::Closed);
        }
        let now = now();
        let mut out = inner.rooms.handle_timeout(now);
        out.extend(inner.rooms.handle_text(self.conn, now, text));
        inner.deliver(out);
        Ok(())
    }
}

#[async_trait]
impl SignalingTransport for MemoryTransport {
    async fn send(&mut self, msg: ClientMsg) -> Result<(), TransportError> {
        self.send_text(&msg.to_json())
    }

    async fn recv(&mut self) -> Result<Option<ServerMsg>, TransportError> {
        loop {
            let Some(text) = self.rx.recv().await else {
                return Ok(None);
            };
            match ServerMsg::from_json(&text) {
                Ok(msg) => return Ok(Some(msg)),
                Err(ParseError::UnknownType { .. }) => continue,
                Err(e) => return Err(TransportError::InvalidMessage(e)),
            }
        }
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        let mut inner = lock(&self.hub);
        inner.conns.remove(&self.conn);
        let out = inner.rooms.disconnect(self.conn);
        inner.deliver(out);
    }
}
