//! The signaling protocol by which two peers meet: rooms, SDP offer/answer
//! and trickled ICE candidates, relayed as JSON text frames over a WebSocket.
//! The protocol (version [`PROTOCOL_VERSION`]) is specified in
//! `docs/signaling.md`; a browser page speaks it with `WebSocket` and
//! `JSON.stringify` alone.
//!
//! By default this crate is the message types ([`ClientMsg`], [`ServerMsg`])
//! and [`Rooms`], the server's state as a sans-IO machine: it owns no socket,
//! reads no clock (`now: Instant` is passed in) and knows no runtime. It does
//! not parse SDP or candidates (that is `p2p-sdp`); it relays them as strings
//! after a sanity check. Two features add the tokio + WebSocket glue:
//!
//! - `server`: `serve(listener, ServerConfig, shutdown)`, one task owning the
//!   [`Rooms`], one task per connection (a reader and a writer side by side),
//!   WebSocket heartbeats and frame limits, a bounded queue and a write
//!   timeout per client (a client that stops reading is closed, 1008), a
//!   bounded share of the hub's queue per client, per-address admission
//!   ([`AddrTable`]) and `Metrics`;
//! - `client`: the `SignalingTransport` trait, `WsTransport` (WebSocket,
//!   `ws://` and `wss://` with the caller's `rustls::ClientConfig`),
//!   `MemoryHub` (an in-process server for tests) and `SignalingClient`.
//!
//! The ICE servers handed out come from an [`IceServerProvider`]:
//! [`StaticIceServers`], or [`RestCredentialIceServers`] for short-lived
//! TURN REST credentials. Entries without credentials go in every welcome;
//! those with credentials as the [`CredentialPolicy`] says (by default with
//! `joined`, to room members), rate limited per client address.
//!
//! Also sans-IO: [`AddrTable`], the per-address connection limits with a
//! reserve for light users, which a server consults on each accepted
//! connection.
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use p2p_signaling::{ClientMsg, Limits, Rooms, ServerMsg};
//!
//! let now = Instant::now();
//! let mut rooms = Rooms::new(Limits::default());
//! let (alice, _welcome) = rooms.connect(now).unwrap();
//! let (bob, _welcome) = rooms.connect(now).unwrap();
//! rooms.handle_text(alice, now, r#"{"type":"join","room":"lobby"}"#);
//! let out = rooms.handle_text(bob, now, r#"{"type":"join","room":"lobby"}"#);
//! // Bob learns Alice is there; Alice learns Bob arrived.
//! assert!(matches!(&out[0], (c, ServerMsg::Joined { peers, .. }) if *c == bob && peers.len() == 1));
//! assert!(matches!(&out[1], (c, ServerMsg::PeerJoined { .. }) if *c == alice));
//!
//! let bob_id = rooms.peer_id(bob).unwrap().to_owned();
//! let offer = ClientMsg::Offer { to: bob_id, sdp: "v=0\r\n".into(), id: None };
//! let out = rooms.handle(alice, now, offer);
//! assert!(matches!(&out[..], [(c, ServerMsg::Offer { .. })] if *c == bob));
//! ```
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod addr;
mod ice_servers;
mod msg;
mod rooms;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "server")]
mod server;

pub use addr::{AddrKey, AddrLimits, AddrStats, AddrTable, Refusal};
pub use ice_servers::{
    rest_credential, IceServerProvider, RestCredentialIceServers, StaticIceServers,
};
pub use msg::{
    ClientMsg, ErrorCode, IceCandidate, IceServer, ParseError, PeerInfo, RelayUnavailable,
    ServerMsg, CLIENT_TYPES, MAX_CANDIDATE_LEN, PROTOCOL_VERSION, SERVER_TYPES,
};
pub use rooms::{
    Auth, ClusterEvent, ClusterMember, ClusterOp, ConnId, ConnectError, CredentialPolicy,
    JoinRefusal, Limits, ParsedText, ResumeConfig, RoomStats, Rooms, MAX_ICE_CREDENTIAL_LEN,
    MAX_PEER_NAME_LEN, MAX_ROOM_NAME_LEN,
};

#[cfg(feature = "client")]
pub use client::{
    ClientError, MemoryHub, MemoryTransport, SignalingClient, SignalingTransport, TransportError,
    WsTransport,
};
#[cfg(feature = "server")]
pub use server::{
    serve, Acceptor, Admitted, CloseReason, ClusterAttach, ClusterLink, Metrics, MetricsSnapshot,
    Server, ServerConfig, READ_BUFFER,
};
