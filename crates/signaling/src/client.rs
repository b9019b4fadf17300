//! The client side (feature `client`): a transport trait with WebSocket and
//! in-memory implementations, and a small convenience client over it.

mod memory;
mod ws;

use std::collections::VecDeque;

use async_trait::async_trait;

use crate::msg::{
    ClientMsg, ErrorCode, IceCandidate, IceServer, ParseError, PeerInfo, RelayUnavailable,
    ServerMsg,
};

pub use memory::{MemoryHub, MemoryTransport};
pub use ws::WsTransport;

/// A bidirectional channel to a signaling server, carrying whole messages.
///
/// Implemented by [`WsTransport`] (the WebSocket protocol of
/// `docs/signaling.md`) and [`MemoryTransport`] (an in-process server for
/// tests). A user can plug in any other signaling path (an existing app
/// server, a chat bot...) by implementing it.
#[async_trait]
pub trait SignalingTransport: Send {
    /// Sends one message.
    async fn send(&mut self, msg: ClientMsg) -> Result<(), TransportError>;
    /// Receives the next message; `Ok(None)` once the server closed the connection.
    /// Messages of a type this version does not know are skipped.
    async fn recv(&mut self) -> Result<Option<ServerMsg>, TransportError>;
}

#[async_trait]
impl<T: SignalingTransport + ?Sized> SignalingTransport for Box<T> {
    async fn send(&mut self, msg: ClientMsg) -> Result<(), TransportError> {
        (**self).send(msg).await
    }

    async fn recv(&mut self) -> Result<Option<ServerMsg>, TransportError> {
        (**self).recv().await
    }
}

/// A transport failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The WebSocket connection failed (connect, handshake, read or write).
    #[error("WebSocket: {0}")]
    WebSocket(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The server sent a frame that is not a valid message.
    #[error("invalid message from the server: {0}")]
    InvalidMessage(#[source] ParseError),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// The URL is not a `ws://` or `wss://` URL with a host.
    #[error("bad signaling URL: {0}")]
    BadUrl(&'static str),
    /// A `wss://` URL and no TLS client configuration (trust roots) to
    /// check the server with.
    #[error("wss:// needs TLS trust roots: pass a rustls ClientConfig (p2p-connect: PeerConfig::tls_roots; p2p connect: --tls-ca)")]
    TlsNotConfigured,
    /// The TLS handshake failed (an untrusted or mismatched certificate,
    /// say).
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
}

/// A [`SignalingClient`] call failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server refused the request.
    #[error("server error {code}: {message}")]
    Server {
        /// The stable error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server closed the connection while the client waited.
    #[error("the server closed the connection")]
    Closed,
    /// The server broke the protocol (for example, the first message was not a welcome).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The server speaks another protocol version.
    #[error(
        "the server speaks protocol version {server}, this client {}",
        crate::PROTOCOL_VERSION
    )]
    VersionMismatch {
        /// The server's version.
        server: u32,
    },
}

/// A small client over any [`SignalingTransport`]: waits for the welcome,
/// joins rooms, waits for a peer, and sends offers, answers and candidates.
///
/// Messages that arrive while a call waits for something else (a `join`
/// waiting for `joined`, say) are buffered and returned by
/// [`recv`](SignalingClient::recv) in order. The client keeps track of the
/// peers present in its rooms from `joined`, `peer-joined` and `peer-left`.
pub struct SignalingClient {
    transport: Box<dyn SignalingTransport>,
    peer_id: String,
    ice_servers: Vec<IceServer>,
    relay_unavailable: Option<RelayUnavailable>,
    resume_token: Option<String>,
    next_id: u64,
    buffered: VecDeque<ServerMsg>,
    present: Vec<(String, PeerInfo)>,
    hide_hosts: bool,
    /// The `resumed` of the last `joined` answering [`SignalingClient::join`].
    membership_kept: Option<bool>,
}

impl std::fmt::Debug for SignalingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalingClient")
            .field("peer_id", &self.peer_id)
            .field("ice_servers", &self.ice_servers.len())
            .field("buffered", &self.buffered.len())
            .field("present", &self.present)
            .finish_non_exhaustive()
    }
}

impl SignalingClient {
    /// Connects to a WebSocket URL (`ws://host:port/`) and waits for the
    /// welcome. For `wss://`, use [`SignalingClient::connect_with`].
    pub async fn connect(url: &str) -> Result<SignalingClient, ClientError> {
        SignalingClient::connect_with(url, None).await
    }

    /// Connects to `ws://` or `wss://` (over TLS with `tls`, whose trust
    /// roots decide which servers are accepted) and waits for the welcome.
    pub async fn connect_with(
        url: &str,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<SignalingClient, ClientError> {
        let transport = WsTransport::connect_with(url, tls).await?;
        SignalingClient::new(Box::new(transport)).await
    }

    /// Waits for the welcome on an already connected transport.
    pub async fn new(
        mut transport: Box<dyn SignalingTransport>,
    ) -> Result<SignalingClient, ClientError> {
        match transport.recv().await? {
            Some(ServerMsg::Welcome {
                version,
                peer_id,
                ice_servers,
                relay_unavailable,
                resume_token,
            }) => {
                if version != crate::PROTOCOL_VERSION {
                    return Err(ClientError::VersionMismatch { server: version });
                }
                Ok(SignalingClient {
                    transport,
                    peer_id,
                    ice_servers,
                    relay_unavailable,
                    resume_token,
                    next_id: 1,
                    buffered: VecDeque::new(),
                    present: Vec::new(),
                    hide_hosts: false,
                    membership_kept: None,
                })
            }
            Some(_) => Err(ClientError::Protocol("the first message was not a welcome")),
            None => Err(ClientError::Closed),
        }
    }

    /// This connection's peer id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The STUN/TURN servers to use: the welcome's, replaced by those of a
    /// later `joined` that carries some (servers that hand out TURN
    /// credentials only to room members put them there).
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.ice_servers
    }

    /// Why the last `welcome` or `joined` carried no TURN credentials, if
    /// the server said.
    pub fn relay_unavailable(&self) -> Option<RelayUnavailable> {
        self.relay_unavailable
    }

    /// The token that takes this peer id back on a new connection
    /// ([`SignalingClient::resume`]), if the server hands them out.
    pub fn resume_token(&self) -> Option<&str> {
        self.resume_token.as_deref()
    }

    /// Takes back the peer id of an earlier connection with its resume
    /// token (before joining any room). On success this client has that
    /// peer id (and a fresh token); on `resume-refused` it keeps its own.
    pub async fn resume(&mut self, token: &str) -> Result<(), ClientError> {
        let id = self.take_id();
        self.send(ClientMsg::Resume {
            token: token.to_owned(),
            id: Some(id),
        })
        .await?;
        loop {
            match self.recv_transport().await? {
                ServerMsg::Resumed {
                    peer_id,
                    resume_token,
                    id: Some(i),
                } if i == id => {
                    self.peer_id = peer_id;
                    if resume_token.is_some() {
                        self.resume_token = resume_token;
                    }
                    return Ok(());
                }
                ServerMsg::Error {
                    code,
                    message,
                    id: Some(i),
                } if i == id => return Err(ClientError::Server { code, message }),
                other => self.buffered.push_back(other),
            }
        }
    }

    /// The peers present in this client's rooms, as `(room, peer)`, as far as
    /// the messages received so far tell.
    pub fn peers(&self) -> &[(String, PeerInfo)] {
        &self.present
    }

    /// Whether the next joins ask the peers met to hide their host
    /// addresses behind mDNS names (`hideHosts`, [`PeerInfo::hide_hosts`]).
    /// Default false.
    pub fn ask_peers_to_hide_hosts(&mut self, yes: bool) {
        self.hide_hosts = yes;
    }

    /// After a [`join`](SignalingClient::join) on a connection that
    /// [resumed](SignalingClient::resume): whether the peer id was still a
    /// member of that room (its membership survived the move: a peer that
    /// joined meanwhile saw it listed). `Some(false)`: it was not (reaped, or left when
    /// the old connection closed): the others got `peer-left` and now see
    /// `peer-joined` as for a newcomer, and the peers listed may have come
    /// meanwhile, so go on as a newcomer. `None`: the server did not say
    /// (no resume, or a server older than this field).
    pub fn membership_kept(&self) -> Option<bool> {
        self.membership_kept
    }

    /// Joins `room` and returns the peers already there.
    pub async fn join(
        &mut self,
        room: &str,
        token: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<PeerInfo>, ClientError> {
        let id = self.take_id();
        self.send(ClientMsg::Join {
            room: room.to_owned(),
            token: token.map(str::to_owned),
            name: name.map(str::to_owned),
            hide_hosts: self.hide_hosts,
            version: Some(crate::PROTOCOL_VERSION),
            id: Some(id),
        })
        .await?;
        loop {
            match self.recv_transport().await? {
                ServerMsg::Joined {
                    peers,
                    resumed,
                    id: Some(i),
                    ..
                } if i == id => {
                    self.membership_kept = resumed;
                    return Ok(peers);
                }
                ServerMsg::Error {
                    code,
                    message,
                    id: Some(i),
                } if i == id => return Err(ClientError::Server { code, message }),
                other => self.buffered.push_back(other),
            }
        }
    }

    /// Leaves `room`, or every room when `None`. Does not wait for the reply.
    pub async fn leave(&mut self, room: Option<&str>) -> Result<(), ClientError> {
        self.send(ClientMsg::Leave {
            room: room.map(str::to_owned),
            id: None,
        })
        .await
    }

    /// Returns a peer present in one of this client's rooms, waiting for a
    /// `peer-joined` if there is none yet (that `peer-joined` is consumed).
    pub async fn wait_for_peer(&mut self) -> Result<PeerInfo, ClientError> {
        if let Some((_, peer)) = self.present.first() {
            return Ok(peer.clone());
        }
        loop {
            match self.recv_transport().await? {
                ServerMsg::PeerJoined { peer, .. } => return Ok(peer),
                other => self.buffered.push_back(other),
            }
        }
    }

    /// Sends any message.
    pub async fn send(&mut self, msg: ClientMsg) -> Result<(), ClientError> {
        Ok(self.transport.send(msg).await?)
    }

    /// Sends an SDP offer to peer `to`.
    pub async fn send_offer(&mut self, to: &str, sdp: &str) -> Result<(), ClientError> {
        self.send(ClientMsg::Offer {
            to: to.to_owned(),
            sdp: sdp.to_owned(),
            id: None,
        })
        .await
    }

    /// Sends an SDP answer to peer `to`.
    pub async fn send_answer(&mut self, to: &str, sdp: &str) -> Result<(), ClientError> {
        self.send(ClientMsg::Answer {
            to: to.to_owned(),
            sdp: sdp.to_owned(),
            id: None,
        })
        .await
    }

    /// Trickles one ICE candidate to peer `to`.
    pub async fn send_candidate(
        &mut self,
        to: &str,
        candidate: IceCandidate,
    ) -> Result<(), ClientError> {
        self.send(ClientMsg::Candidate {
            to: to.to_owned(),
            candidate,
            id: None,
        })
        .await
    }

    /// Tells peer `to` that no more candidates follow.
    pub async fn send_end_of_candidates(&mut self, to: &str) -> Result<(), ClientError> {
        self.send(ClientMsg::EndOfCandidates {
            to: to.to_owned(),
            id: None,
        })
        .await
    }

    /// Sends new ICE credentials to peer `to` (ICE restart without SDP).
    pub async fn send_ice_restart(
        &mut self,
        to: &str,
        ufrag: &str,
        pwd: &str,
    ) -> Result<(), ClientError> {
        self.send(ClientMsg::IceRestart {
            to: to.to_owned(),
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
            id: None,
        })
        .await
    }

    /// Ends the session with peer `to`.
    pub async fn send_bye(&mut self, to: &str) -> Result<(), ClientError> {
        self.send(ClientMsg::Bye {
            to: to.to_owned(),
            id: None,
        })
        .await
    }

    /// The next message: buffered ones first, then from the transport.
    /// `Ok(None)` once the server closed the connection.
    pub async fn recv(&mut self) -> Result<Option<ServerMsg>, ClientError> {
        if let Some(m) = self.buffered.pop_front() {
            return Ok(Some(m));
        }
        match self.transport.recv().await? {
            Some(m) => {
                self.track(&m);
                Ok(Some(m))
            }
            None => Ok(None),
        }
    }

    /// Gives the transport back (buffered messages are lost).
    pub fn into_transport(self) -> Box<dyn SignalingTransport> {
        self.transport
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn recv_transport(&mut self) -> Result<ServerMsg, ClientError> {
        match self.transport.recv().await? {
            Some(m) => {
                self.track(&m);
                Ok(m)
            }
            None => Err(ClientError::Closed),
        }
    }

    fn track(&mut self, msg: &ServerMsg) {
        match msg {
            ServerMsg::Joined {
                room,
                peers,
                ice_servers,
                relay_unavailable,
                ..
            } => {
                if let Some(servers) = ice_servers {
                    self.ice_servers.clone_from(servers);
                    self.relay_unavailable = None;
                }
                if relay_unavailable.is_some() {
                    self.relay_unavailable = *relay_unavailable;
                }
                for p in peers {
                    self.present.push((room.clone(), p.clone()));
                }
            }
            ServerMsg::PeerJoined { room, peer } => self.present.push((room.clone(), peer.clone())),
            ServerMsg::PeerLeft { room, peer_id } => self
                .present
                .retain(|(r, p)| !(r == room && p.id == *peer_id)),
            ServerMsg::Left { room, .. } => self.present.retain(|(r, _)| r != room),
            _ => {}
        }
    }
}
