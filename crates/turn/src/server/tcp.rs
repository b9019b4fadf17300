//! TCP relaying (RFC 6062): Connect, ConnectionAttempt, ConnectionBind and the peer connections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_stun::attr::{ConnectionId, XorPeerAddress};
use p2p_stun::{
    EncodeError, Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId,
};
use rand::RngCore;

use p2p_proto::FiveTuple;

use super::{Auth, CredentialStore, SocketRequest, TurnServer};

/// An RFC 6062 peer connection.
pub(super) struct TcpConn {
    pub(super) slot: usize,
    pub(super) alloc_id: u64,
    pub(super) peer: SocketAddr,
    pub(super) state: TcpState,
}

pub(super) enum TcpState {
    /// The driver is connecting (a Connect request waits for the result).
    Connecting {
        control: FiveTuple,
        tid: TransactionId,
        auth: Box<Auth>,
        fingerprint: bool,
    },
    /// Connected, waiting for a ConnectionBind until the deadline.
    Pending { deadline: Instant },
    /// Spliced to this client data connection.
    Bound { data: FiveTuple },
}

/// How long a peer connection waits for its ConnectionBind (RFC 6062 §5.2, §5.3).
pub(super) const BIND_TIMEOUT: Duration = Duration::from_secs(30);

impl<C: CredentialStore> TurnServer<C> {
    /// The outcome of a [`SocketRequest::ConnectTcp`]: the Connect request is
    /// answered (CONNECTION-ID on success, 447 on failure). Returns whether
    /// the driver keeps the connection (false when it failed or its
    /// allocation is gone meanwhile: close it).
    pub fn tcp_connect_result(&mut self, now: Instant, id: u32, connected: bool) -> bool {
        let Some(c) = self.tcp_conns.get_mut(&id) else {
            return false;
        };
        let next = if connected {
            TcpState::Pending {
                deadline: now + BIND_TIMEOUT,
            }
        } else {
            TcpState::Pending { deadline: now }
        };
        let TcpState::Connecting {
            control,
            tid,
            auth,
            fingerprint,
        } = std::mem::replace(&mut c.state, next)
        else {
            return false;
        };
        let typ = MessageType::new(Method::CONNECT, MessageClass::Request);
        if connected {
            let t = control.transport;
            self.tally(t).peer_connections += 1;
            self.bind_deadlines.push_back((now + BIND_TIMEOUT, id));
            self.reply_to(&control, typ, tid, fingerprint, Some(&auth), None, |b| {
                b.add(&ConnectionId(id))?;
                Ok(())
            });
        } else {
            self.tcp_conns.remove(&id);
            self.reply_to(
                &control,
                typ,
                tid,
                fingerprint,
                Some(&auth),
                Some(447),
                |_| Ok(()),
            );
        }
        connected
    }

    /// A peer connected to the TCP relayed address `relayed` (RFC 6062
    /// §5.3). With a permission for the peer's IP, the client is sent a
    /// ConnectionAttempt indication and the connection gets an id (the
    /// driver holds it, unread, until [`SocketRequest::SpliceTcp`] or
    /// [`SocketRequest::CloseTcp`]); `None`: close it at once.
    pub fn tcp_peer_connected(
        &mut self,
        now: Instant,
        relayed: SocketAddr,
        peer: SocketAddr,
    ) -> Option<u32> {
        let slot = *self.by_relay.get(&relayed)?;
        let a = self.slots.get(slot)?.as_ref()?;
        if !a.tcp {
            return None;
        }
        if !a.permitted(now, peer.ip()) {
            let t = a.five_tuple.transport;
            self.tally(t).dropped_no_permission += 1;
            return None;
        }
        let (alloc_id, control) = (a.id, a.five_tuple);
        if self.tcp_connection_count(slot, alloc_id) >= self.config.max_tcp_connections {
            return None;
        }
        let id = self.new_connection_id();
        let deadline = now + BIND_TIMEOUT;
        self.tcp_conns.insert(
            id,
            TcpConn {
                slot,
                alloc_id,
                peer,
                state: TcpState::Pending { deadline },
            },
        );
        self.bind_deadlines.push_back((deadline, id));
        self.tally(control.transport).peer_connections += 1;
        let mut tid = [0u8; 12];
        self.rng.fill_bytes(&mut tid);
        let mut buf = self.take_buf();
        let built = (|| {
            let mut b = MessageBuilder::new(
                &mut buf,
                MessageType::new(Method::CONNECTION_ATTEMPT, MessageClass::Indication),
                TransactionId::new(tid),
            )?;
            b.add(&XorPeerAddress(peer))?;
            b.add(&ConnectionId(id))?;
            Ok::<(), EncodeError>(())
        })();
        if built.is_ok() {
            self.send_to_client(&control, buf);
        } else {
            self.recycle(buf);
        }
        Some(id)
    }

    /// The peer side of connection `id` closed or failed: it is forgotten
    /// and, when spliced, its client data connection is to be closed too
    /// ([`SocketRequest::CloseTcp`]).
    pub fn tcp_peer_closed(&mut self, id: u32) {
        if let Some(c) = self.tcp_conns.remove(&id) {
            if let TcpState::Bound { data } = c.state {
                self.data_conns.remove(&data);
            }
            self.sockets.push_back(SocketRequest::CloseTcp { id });
        }
    }

    /// The peer connections of an allocation, for tests and metrics:
    /// `(id, peer, bound)`.
    pub fn tcp_connections(&self, five_tuple: &FiveTuple) -> Vec<(u32, SocketAddr, bool)> {
        let Some(&slot) = self.by_tuple.get(five_tuple) else {
            return Vec::new();
        };
        let mut v: Vec<_> = self
            .tcp_conns
            .iter()
            .filter(|(_, c)| c.slot == slot)
            .map(|(id, c)| (*id, c.peer, matches!(c.state, TcpState::Bound { .. })))
            .collect();
        v.sort();
        v
    }
}

impl<C: CredentialStore> TurnServer<C> {
    /// Connect (RFC 6062 §5.2): ask the driver to connect to the peer; the
    /// answer waits for [`TurnServer::tcp_connect_result`].
    pub(super) fn connect(&mut self, ft: &FiveTuple, msg: &Message<'_>, auth: &Auth) {
        let Some(slot) = self.own_allocation(ft, msg, auth) else {
            return;
        };
        let Some(a) = self.slots[slot].as_ref().filter(|a| a.tcp) else {
            return self.error(ft, msg, Some(auth), 400);
        };
        let alloc_id = a.id;
        let Ok(Some(XorPeerAddress(peer))) = msg.get::<XorPeerAddress>() else {
            return self.error(ft, msg, Some(auth), 400);
        };
        let exists = self
            .tcp_conns
            .values()
            .any(|c| c.slot == slot && c.alloc_id == alloc_id && c.peer == peer);
        if exists {
            return self.error(ft, msg, Some(auth), 446);
        }
        if self.tcp_connection_count(slot, alloc_id) >= self.config.max_tcp_connections {
            return self.error(ft, msg, Some(auth), 508);
        }
        if let Err(code) = self.check_peer(slot, ft, peer.ip(), Some(peer)) {
            return self.error(ft, msg, Some(auth), code);
        }
        let Some(relayed) = self.slots[slot]
            .as_ref()
            .and_then(|a| a.relayed_for(peer.ip()))
        else {
            return self.error(ft, msg, Some(auth), 443);
        };
        let id = self.new_connection_id();
        self.tcp_conns.insert(
            id,
            TcpConn {
                slot,
                alloc_id,
                peer,
                state: TcpState::Connecting {
                    control: *ft,
                    tid: msg.transaction_id(),
                    auth: Box::new(auth.clone()),
                    fingerprint: msg.has_fingerprint(),
                },
            },
        );
        self.sockets
            .push_back(SocketRequest::ConnectTcp { id, relayed, peer });
    }

    /// ConnectionBind (RFC 6062 §5.4), on a new client data connection.
    pub(super) fn connection_bind(&mut self, ft: &FiveTuple, msg: &Message<'_>, auth: &Auth) {
        let busy = self.data_conns.contains_key(ft) || self.by_tuple.contains_key(ft);
        if !ft.transport.is_reliable() || busy {
            return self.error(ft, msg, Some(auth), 400);
        }
        let Ok(Some(ConnectionId(id))) = msg.get::<ConnectionId>() else {
            return self.error(ft, msg, Some(auth), 400);
        };
        let pending = match self.tcp_conns.get(&id) {
            Some(c) if matches!(c.state, TcpState::Pending { .. }) => Some(c.slot),
            _ => None,
        };
        let Some(slot) = pending else {
            return self.error(ft, msg, Some(auth), 400);
        };
        let same_user = self.slots[slot]
            .as_ref()
            .is_some_and(|a| a.user == auth.user);
        if !same_user {
            return self.error(ft, msg, Some(auth), 441);
        }
        if let Some(c) = self.tcp_conns.get_mut(&id) {
            c.state = TcpState::Bound { data: *ft };
        }
        self.data_conns.insert(*ft, id);
        let t = self.slots[slot]
            .as_ref()
            .map_or(ft.transport, |a| a.five_tuple.transport);
        self.tally(t).peer_connections_bound += 1;
        self.reply(ft, msg, Some(auth), None, |_| Ok(()));
        let Some(allocation) = self.slots[slot].as_ref().map(|a| a.five_tuple) else {
            return;
        };
        self.sockets.push_back(SocketRequest::SpliceTcp {
            id,
            client: *ft,
            allocation,
        });
    }

    /// Close the peer connections whose 30 s for a ConnectionBind ran out.
    pub(super) fn run_bind_deadlines(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.bind_deadlines.front() {
            if t > now {
                break;
            }
            self.bind_deadlines.pop_front();
            let due = self.tcp_conns.get(&id).is_some_and(
                |c| matches!(c.state, TcpState::Pending { deadline } if deadline <= now),
            );
            if due {
                self.tcp_conns.remove(&id);
                self.sockets.push_back(SocketRequest::CloseTcp { id });
            }
        }
    }
}
