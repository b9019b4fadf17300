//! Building the offer or answer of a lone WebRTC data channel (RFC 8841,
//! JSEP RFC 8829 §5.2 and §5.3, shaped as Chromium writes them).

use crate::{
    AnswerError, Attribute, Candidate, Connection, Fingerprint, Group, IceAttribute, IceOption,
    Line, MediaDescription, Origin, Pwd, SessionDescription, Setup, Timing, Ufrag,
};

/// What our side puts in a data channel offer or answer.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataChannelParams {
    /// Our `a=ice-ufrag`.
    pub ufrag: Ufrag,
    /// Our `a=ice-pwd`.
    pub pwd: Pwd,
    /// The fingerprint of our DTLS certificate.
    pub fingerprint: Fingerprint,
    /// Our `a=setup`: `actpass` in an offer, `active` or `passive` in an answer.
    pub setup: Setup,
    /// The `sess-id` of `o=` (the caller draws it at random).
    pub session_id: u64,
    /// Our `a=sctp-port` (default 5000).
    pub sctp_port: u16,
    /// Our `a=max-message-size` (default 262144, as Chromium), or none.
    pub max_message_size: Option<u64>,
    /// Whether to write `a=ice-options:trickle` (default true).
    pub trickle: bool,
    /// Whether to write `a=ice-lite` (default false).
    pub ice_lite: bool,
    /// More `ice-option-tag`s to announce after `trickle` (default none),
    /// such as p2p-connect's own `p2phardnat`.
    pub extra_ice_options: Vec<IceOption>,
    /// Candidates to write as `a=candidate` lines (default none: trickled).
    pub candidates: Vec<Candidate>,
    /// Whether to write `a=end-of-candidates` (default false).
    pub end_of_candidates: bool,
}

impl DataChannelParams {
    /// Parameters with the defaults listed on each field.
    pub fn new(
        ufrag: Ufrag,
        pwd: Pwd,
        fingerprint: Fingerprint,
        setup: Setup,
        session_id: u64,
    ) -> DataChannelParams {
        DataChannelParams {
            ufrag,
            pwd,
            fingerprint,
            setup,
            session_id,
            sctp_port: 5000,
            max_message_size: Some(262_144),
            trickle: true,
            ice_lite: false,
            extra_ice_options: Vec::new(),
            candidates: Vec::new(),
            end_of_candidates: false,
        }
    }
}

fn session(params: &DataChannelParams) -> SessionDescription {
    let mut lines = vec![Line::Timing(Timing { start: 0, stop: 0 })];
    if params.ice_lite {
        lines.push(Line::Attribute(Attribute::Ice(IceAttribute::Lite)));
    }
    SessionDescription {
        origin: Origin {
            username: "-".to_owned(),
            session_id: params.session_id,
            session_version: 2,
            net_type: "IN".to_owned(),
            addr_type: "IP4".to_owned(),
            address: "127.0.0.1".to_owned(),
        },
        session_name: "-".to_owned(),
        lines,
        media: Vec::new(),
    }
}

fn any_address() -> Line {
    Line::Connection(Connection {
        net_type: "IN".to_owned(),
        addr_type: "IP4".to_owned(),
        address: "0.0.0.0".to_owned(),
    })
}

fn data_channel_section(
    params: &DataChannelParams,
    protocol: &str,
    mid: &str,
    setup: Setup,
) -> MediaDescription {
    let mut m = MediaDescription {
        media: "application".to_owned(),
        port: 9,
        port_count: None,
        protocol: protocol.to_owned(),
        formats: vec!["webrtc-datachannel".to_owned()],
        lines: vec![any_address()],
    };
    for c in &params.candidates {
        m.push_attribute(IceAttribute::Candidate(c.clone()));
    }
    if params.end_of_candidates {
        m.push_attribute(IceAttribute::EndOfCandidates);
    }
    m.push_attribute(IceAttribute::Ufrag(params.ufrag.clone()));
    m.push_attribute(IceAttribute::Pwd(params.pwd.clone()));
    let mut options = Vec::new();
    if params.trickle {
        options.push(IceOption::Trickle);
    }
    options.extend(params.extra_ice_options.iter().cloned());
    if !options.is_empty() {
        m.push_attribute(IceAttribute::Options(options));
    }
    m.push_attribute(Attribute::Fingerprint(params.fingerprint.clone()));
    m.push_attribute(Attribute::Setup(setup));
    m.push_attribute(Attribute::Mid(mid.to_owned()));
    m.push_attribute(Attribute::SctpPort(params.sctp_port));
    if let Some(n) = params.max_message_size {
        m.push_attribute(Attribute::MaxMessageSize(n));
    }
    m
}

impl SessionDescription {
    /// An offer with one data channel section, mid `0`, bundled, in the
    /// shape Chromium writes (`params.setup` should be `actpass`).
    pub fn offer_data_channel(params: &DataChannelParams) -> SessionDescription {
        let mut sd = session(params);
        sd.lines.push(Line::Attribute(Attribute::Group(Group {
            semantics: "BUNDLE".to_owned(),
            mids: vec!["0".to_owned()],
        })));
        sd.media.push(data_channel_section(
            params,
            "UDP/DTLS/SCTP",
            "0",
            params.setup,
        ));
        sd
    }

    /// The answer to `offer` that accepts its first data channel section
    /// (same mid and protocol, BUNDLE kept if the offer bundled it) and
    /// rejects every other section (port 0, RFC 3264 §6), in the offer's
    /// order.
    ///
    /// `params.setup` must be `active` or `passive`, and agree with the
    /// offer's `a=setup` (RFC 8842 §5.3: `actpass` allows either).
    pub fn answer_data_channel(
        offer: &SessionDescription,
        params: &DataChannelParams,
    ) -> Result<SessionDescription, AnswerError> {
        let Some(index) = offer
            .media
            .iter()
            .position(|m| m.is_data_channel() && m.port != 0)
        else {
            return Err(AnswerError::NoDataChannel);
        };
        let Some(dc) = offer.media.get(index) else {
            return Err(AnswerError::NoDataChannel);
        };
        let mid = dc.mid().ok_or(AnswerError::NoMid)?;
        match (offer.setup_for(dc), params.setup) {
            (_, Setup::ActPass | Setup::HoldConn) => return Err(AnswerError::AnswerSetup),
            (Some(Setup::Active), Setup::Active) | (Some(Setup::Passive), Setup::Passive) => {
                return Err(AnswerError::SetupConflict)
            }
            _ => {}
        }
        let mut sd = session(params);
        if offer.bundle().is_some_and(|b| b.iter().any(|m| m == mid)) {
            sd.lines.push(Line::Attribute(Attribute::Group(Group {
                semantics: "BUNDLE".to_owned(),
                mids: vec![mid.to_owned()],
            })));
        }
        for (n, m) in offer.media.iter().enumerate() {
            if n == index {
                sd.media
                    .push(data_channel_section(params, &m.protocol, mid, params.setup));
                continue;
            }
            let mut rejected = MediaDescription {
                media: m.media.clone(),
                port: 0,
                port_count: None,
                protocol: m.protocol.clone(),
                formats: m.formats.clone(),
                lines: vec![any_address()],
            };
            if let Some(other) = m.mid() {
                rejected.push_attribute(Attribute::Mid(other.to_owned()));
            }
            sd.media.push(rejected);
        }
        Ok(sd)
    }
}
