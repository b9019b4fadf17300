//! The client transaction of RFC 8489 §6.2 as a sans-IO retransmission
//! schedule: retransmissions over UDP (RTO doubling, Rc transmits, a final
//! wait of Rm×RTO) and a single timeout over reliable transports.
//!
//! It is a part of the machines that send requests (the ICE agent, the TURN
//! client), not a `p2p_proto::Machine` of its own: it knows no addresses,
//! hands out the request's bytes for its owner to address, and is made at
//! the instant the request is first sent.

use std::time::{Duration, Instant};

use crate::header::TransactionId;
use crate::message::Message;

/// Timers of a client transaction (RFC 8489 §6.2.1 and §6.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionConfig {
    /// The initial retransmission timeout (RTO). Default 500 ms.
    pub rto: Duration,
    /// Rc: how many times the request is sent in all. Default 7.
    pub max_transmits: u32,
    /// Rm: the last wait is Rm × RTO. Default 16.
    pub last_wait_multiplier: u32,
    /// Over TCP/TLS the request is sent once and the transaction fails after
    /// this long (Ti, default 39.5 s).
    pub reliable_timeout: Duration,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            rto: Duration::from_millis(500),
            max_transmits: 7,
            last_wait_multiplier: 16,
            reliable_timeout: Duration::from_millis(39_500),
        }
    }
}

/// What became of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionOutcome {
    /// A response with the transaction's id arrived.
    Answered,
    /// No response in time.
    TimedOut,
    /// The owner gave up on it ([`ClientTransaction::cancel`]).
    Cancelled,
}

/// One outstanding request.
///
/// Drive contract: after [`ClientTransaction::new`], [`handle_timeout`] or
/// [`handle_response`], call [`poll_transmit`] (send the bytes it gives, if any),
/// then [`poll_timeout`] (call [`handle_timeout`] then), then [`outcome`].
///
/// [`handle_timeout`]: ClientTransaction::handle_timeout
/// [`handle_response`]: ClientTransaction::handle_response
/// [`poll_transmit`]: ClientTransaction::poll_transmit
/// [`poll_timeout`]: ClientTransaction::poll_timeout
/// [`outcome`]: ClientTransaction::outcome
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    tid: TransactionId,
    request: Vec<u8>,
    config: TransactionConfig,
    reliable: bool,
    sent: u32,
    rto: Duration,
    transmit_pending: bool,
    deadline: Instant,
    outcome: Option<TransactionOutcome>,
}

impl ClientTransaction {
    /// Start a transaction for an encoded request: the first
    /// [`ClientTransaction::poll_transmit`] hands it out for sending at `now`.
    /// `reliable` is true over TCP/TLS.
    pub fn new(
        now: Instant,
        tid: TransactionId,
        request: Vec<u8>,
        reliable: bool,
        config: TransactionConfig,
    ) -> Self {
        let first_wait = if reliable {
            config.reliable_timeout
        } else if config.max_transmits <= 1 {
            config.rto * config.last_wait_multiplier
        } else {
            config.rto
        };
        ClientTransaction {
            tid,
            request,
            config,
            reliable,
            sent: 1,
            rto: config.rto,
            transmit_pending: true,
            deadline: now + first_wait,
            outcome: None,
        }
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// The request to send now, if a (re)transmission is due.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if !self.transmit_pending || self.outcome.is_some() {
            return None;
        }
        self.transmit_pending = false;
        Some(&self.request)
    }

    /// When [`ClientTransaction::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outcome.is_none().then_some(self.deadline)
    }

    /// Advance timers: schedules the next retransmission, or gives up.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_some() || now < self.deadline {
            return;
        }
        if self.reliable || self.sent >= self.config.max_transmits {
            self.outcome = Some(TransactionOutcome::TimedOut);
            return;
        }
        self.sent += 1;
        self.transmit_pending = true;
        self.rto *= 2;
        self.deadline = now
            + if self.sent == self.config.max_transmits {
                self.config.rto * self.config.last_wait_multiplier
            } else {
                self.rto
            };
    }

    /// Offer a received message; true (and the transaction ends) when it is a
    /// response to this transaction.
    pub fn handle_response(&mut self, msg: &Message<'_>) -> bool {
        use crate::header::MessageClass::{Error, Success};
        if self.outcome.is_some()
            || msg.transaction_id() != self.tid
            || !matches!(msg.typ().class, Success | Error)
        {
            return false;
        }
        self.outcome = Some(TransactionOutcome::Answered);
        true
    }

    /// Stop retransmitting: the transaction ends with
    /// [`TransactionOutcome::Cancelled`] and a late response is not accepted.
    pub fn cancel(&mut self) {
        if self.outcome.is_none() {
            self.outcome = Some(TransactionOutcome::Cancelled);
        }
    }

    /// How many times the request was handed out for sending.
    pub fn transmits(&self) -> u32 {
        self.sent
    }

    /// The outcome, once there is one.
    pub fn outcome(&self) -> Option<TransactionOutcome> {
        self.outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive a transaction that is never answered; return the send times (ms)
    /// and the time it gave up.
    fn run_unanswered(reliable: bool) -> (Vec<u64>, u64) {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(
            t0,
            TransactionId::new([1; 12]),
            vec![0, 1, 0, 0],
            reliable,
            TransactionConfig::default(),
        );
        let mut sends = Vec::new();
        assert!(t.poll_transmit().is_some(), "the first send is due at once");
        sends.push(0);
        assert!(t.poll_transmit().is_none(), "and only once");
        for _ in 0..100 {
            let now = t.poll_timeout().expect("a deadline until it ends");
            t.handle_timeout(now);
            if t.poll_transmit().is_some() {
                sends.push((now - t0).as_millis() as u64);
            }
            if t.outcome().is_some() {
                return (sends, (now - t0).as_millis() as u64);
            }
        }
        panic!("transaction did not end in 100 steps");
    }

    #[test]
    fn udp_retransmits_follow_rfc8489_section_6_2_1() {
        // "requests would be sent at times 0 ms, 500 ms, 1500 ms, 3500 ms, 7500 ms,
        // 15500 ms, and 31500 ms. If the client has not received a response after
        // 39500 ms, the client will consider the transaction to have timed out."
        let (sends, gave_up) = run_unanswered(false);
        assert_eq!(sends, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(gave_up, 39500);
    }

    #[test]
    fn reliable_transports_send_once_and_wait_ti() {
        let (sends, gave_up) = run_unanswered(true);
        assert_eq!(sends, [0]);
        assert_eq!(gave_up, 39500);
    }

    #[test]
    fn cancel_stops_retransmits_and_rejects_late_responses() {
        let t0 = Instant::now();
        let tid = TransactionId::new([5; 12]);
        let mut t = ClientTransaction::new(t0, tid, vec![], false, TransactionConfig::default());
        assert!(t.poll_transmit().is_some());
        t.cancel();
        assert_eq!(t.outcome(), Some(TransactionOutcome::Cancelled));
        assert_eq!(t.poll_timeout(), None);
        t.handle_timeout(t0 + Duration::from_secs(1));
        assert!(t.poll_transmit().is_none());
        let mut resp = Vec::new();
        crate::MessageBuilder::new(
            &mut resp,
            crate::MessageType::new(crate::Method::BINDING, crate::MessageClass::Success),
            tid,
        )
        .unwrap();
        assert!(!t.handle_response(&Message::decode(&resp).unwrap()));
        assert_eq!(t.outcome(), Some(TransactionOutcome::Cancelled));
    }

    #[test]
    fn a_response_ends_it_and_others_are_ignored() {
        let t0 = Instant::now();
        let tid = TransactionId::new([9; 12]);
        let mut t = ClientTransaction::new(t0, tid, vec![], false, TransactionConfig::default());
        assert!(t.poll_transmit().is_some());
        let mut other = Vec::new();
        let b = crate::MessageBuilder::new(
            &mut other,
            crate::MessageType::new(crate::Method::BINDING, crate::MessageClass::Success),
            TransactionId::new([8; 12]),
        )
        .unwrap();
        b.finish();
        assert!(!t.handle_response(&Message::decode(&other).unwrap()));
        let mut mine = Vec::new();
        crate::MessageBuilder::new(
            &mut mine,
            crate::MessageType::new(crate::Method::BINDING, crate::MessageClass::Error),
            tid,
        )
        .unwrap();
        assert!(t.handle_response(&Message::decode(&mine).unwrap()));
        assert_eq!(t.outcome(), Some(TransactionOutcome::Answered));
        assert_eq!(t.poll_timeout(), None);
    }
}
