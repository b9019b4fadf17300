//! [`WsTransport`]: the protocol over a WebSocket, `ws://` or `wss://`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{SignalingTransport, TransportError};
use crate::msg::{ClientMsg, ParseError, ServerMsg};

/// The WebSocket layer's read buffer, in bytes (the server's is the same
/// size): a signaling message is read in a few chunks at worst.
const READ_BUFFER: usize = 4 * 1024;

/// A [`SignalingTransport`] over a WebSocket: `ws://` URLs, and `wss://`
/// ones with a TLS client configuration from the caller
/// ([`WsTransport::connect_with`]).
///
/// Pings from the server are answered automatically while
/// [`recv`](SignalingTransport::recv) is being polled, so keep a receive
/// pending (as a driver's `select!` loop does) or the server may time the
/// connection out.
pub struct WsTransport {
    ws: WebSocketStream<Stream>,
}

impl std::fmt::Debug for WsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTransport")
            .field("tls", &matches!(self.ws.get_ref(), Stream::Tls(_)))
            .finish_non_exhaustive()
    }
}

fn ws_error(e: WsError) -> TransportError {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => TransportError::Closed,
        e => TransportError::WebSocket(Box::new(e)),
    }
}

impl WsTransport {
    /// Opens a WebSocket to a `ws://` URL (for example `ws://127.0.0.1:8080/ws`).
    /// A `wss://` URL fails with [`TransportError::TlsNotConfigured`]: use
    /// [`WsTransport::connect_with`].
    pub async fn connect(url: &str) -> Result<WsTransport, TransportError> {
        WsTransport::connect_with(url, None).await
    }

    /// Opens a WebSocket to `url`: `ws://`, or `wss://` over TLS with `tls`
    /// (its trust roots decide which servers are accepted; the host of the
    /// URL is the name checked against the certificate).
    pub async fn connect_with(
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<WsTransport, TransportError> {
        let request = url.into_client_request().map_err(ws_error)?;
        let uri = request.uri();
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => {
                return Err(TransportError::BadUrl(
                    "the URL must start with ws:// or wss://",
                ))
            }
        };
        let host = uri
            .host()
            .ok_or(TransportError::BadUrl("the URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| TransportError::WebSocket(Box::new(e)))?;
        let _ = tcp.set_nodelay(true);
        let stream = if secure {
            let config = tls.ok_or(TransportError::TlsNotConfigured)?;
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|_| TransportError::BadUrl("the host is not a valid TLS server name"))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(TransportError::Tls)?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        // tungstenite zeroes its whole read buffer before every read
        // attempt (128 KiB by default): a small one costs little per wakeup
        // and still reads a 64 KiB message in a few chunks.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
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

/// A TCP stream, with or without TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
