//! [`WsTransport`]: the protocol over a WebSocket.

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{SignalingTransport, TransportError};
use crate::msg::{ClientMsg, ParseError, ServerMsg};

/// A [`SignalingTransport`] over a WebSocket (`ws://` URLs; no TLS yet).
///
/// Pings from the server are answered automatically while
/// [`recv`](SignalingTransport::recv) is being polled, so keep a receive
/// pending (as a driver's `select!` loop does) or the server may time the
/// connection out.
pub struct WsTransport {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl std::fmt::Debug for WsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTransport").finish_non_exhaustive()
    }
}

fn ws_error(e: WsError) -> TransportError {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => TransportError::Closed,
        e => TransportError::WebSocket(Box::new(e)),
    }
}

impl WsTransport {
    /// Opens a WebSocket to `url` (for example `ws://127.0.0.1:8443/`).
    pub async fn connect(url: &str) -> Result<WsTransport, TransportError> {
        let (ws, _response) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(ws_error)?;
        Ok(WsTransport { ws })
    }

    /// Sends a raw text frame (for tests and interoperability checks).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), TransportError> {
        self.ws
            .send(Message::text(text.into()))
            .await
            .map_err(ws_error)
    }

    /// Sends a raw binary frame (which the protocol rejects; for tests).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), TransportError> {
        self.ws.send(Message::binary(bytes)).await.map_err(ws_error)
    }

    /// Sends a close frame and waits for the server's.
    pub async fn close(mut self) -> Result<(), TransportError> {
        match self.ws.close(None).await {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {}
            Err(e) => return Err(ws_error(e)),
        }
        while let Some(frame) = self.ws.next().await {
            if frame.is_err() {
                break;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl SignalingTransport for WsTransport {
    async fn send(&mut self, msg: ClientMsg) -> Result<(), TransportError> {
        self.send_text(msg.to_json()).await
    }

    async fn recv(&mut self) -> Result<Option<ServerMsg>, TransportError> {
        loop {
            match self.ws.next().await {
                None => return Ok(None),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Ok(None),
                Some(Err(e)) => return Err(ws_error(e)),
                Some(Ok(Message::Text(text))) => match ServerMsg::from_json(text.as_str()) {
                    Ok(msg) => return Ok(Some(msg)),
                    // A newer server's message type: skip it.
                    Err(ParseError::UnknownType { .. }) => continue,
                    Err(e) => return Err(TransportError::InvalidMessage(e)),
                },
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(_)) => continue,
            }
        }
    }
}
