//! The session descriptions of the negotiation: ours (the offer or the
//! answer of one data channel, as a browser writes it) and what the peer's
//! says (ICE credentials, the DTLS fingerprint and role, SCTP parameters).

use p2p_dtls::{DtlsRole, Fingerprint, Setup};
use p2p_sdp::{DataChannelParams, Pwd, SessionDescription, Ufrag};

use crate::session::{RemoteSecurity, Session};

/// Why a description could not be written or used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DescriptionError {
    /// Ours: the ICE credentials are not valid in SDP.
    Local,
    /// Theirs: it cannot set up DTLS (the words say why).
    Remote(String),
}

/// What the peer's description says.
#[derive(Debug, Clone)]
pub(super) struct RemoteDescription {
    pub(super) sd: SessionDescription,
    pub(super) ufrag: String,
    pub(super) pwd: String,
    /// The peer's `a=setup`.
    pub(super) setup: Setup,
    pub(super) fingerprints: Vec<Fingerprint>,
    pub(super) sctp_port: u16,
    pub(super) max_message_size: Option<u32>,
    /// Whether its `a=ice-options` carry [`crate::HARD_NAT_OPTION`].
    pub(super) hard_nat: bool,
}

impl RemoteDescription {
    /// What the secure layers need, given our own `a=setup`.
    pub(super) fn security(
        &self,
        offerer: bool,
        ours: Setup,
    ) -> Result<RemoteSecurity, DescriptionError> {
        let (offer, answer) = if offerer {
            (ours, self.setup)
        } else {
            (self.setup, ours)
        };
        let (offerer_role, answerer_role) = Setup::roles(offer, answer)
            .map_err(|e| DescriptionError::Remote(format!("a=setup: {e}")))?;
        let role: DtlsRole = if offerer { offerer_role } else { answerer_role };
        Ok(RemoteSecurity {
            role,
            fingerprints: self.fingerprints.clone(),
            sctp_port: self.sctp_port,
            max_message_size: self.max_message_size,
        })
    }
}

/// Parse the peer's description: its data channel section, ICE
/// credentials, fingerprint (section or session level), `a=setup` (absent
/// means `active` in an answer, RFC 8842 §5.2, and `actpass` in an offer),
/// SCTP port (5000 when absent) and max-message-size.
pub(super) fn parse_description(
    sdp: &str,
    offer: bool,
) -> Result<RemoteDescription, DescriptionError> {
    let remote = |why: &str| DescriptionError::Remote(why.to_owned());
    let sd: SessionDescription = sdp
        .parse()
        .map_err(|e| DescriptionError::Remote(format!("{e}")))?;
    let dc = sd
        .data_channel()
        .ok_or_else(|| remote("no data channel section (m=application ... DTLS/SCTP)"))?;
    let ufrag = sd
        .ice_ufrag_for(dc)
        .ok_or_else(|| remote("no a=ice-ufrag"))?
        .to_owned();
    let pwd = sd
        .ice_pwd_for(dc)
        .ok_or_else(|| remote("no a=ice-pwd"))?
        .to_owned();
    let fingerprint = sd
        .fingerprint_for(dc)
        .ok_or_else(|| remote("no a=fingerprint"))?;
    let fingerprint = Fingerprint::parse(&fingerprint.to_string())
        .map_err(|e| DescriptionError::Remote(format!("a=fingerprint: {e}")))?;
    let setup = match sd.setup_for(dc) {
        Some(s) => s
            .to_string()
            .parse::<Setup>()
            .map_err(|e| DescriptionError::Remote(format!("a=setup: {e}")))?,
        None if offer => Setup::ActPass,
        None => Setup::Active,
    };
    let sctp_port = dc.sctp_port().unwrap_or(p2p_datachannel::DEFAULT_SCTP_PORT);
    // Beyond 4 GiB is no limit a u32 can say: treat it as none (0).
    let max_message_size = dc.max_message_size().map(|n| u32::try_from(n).unwrap_or(0));
    let hard_nat = sd
        .ice_options_for(dc)
        .is_some_and(|o| o.iter().any(|t| t.to_string() == crate::HARD_NAT_OPTION));
    let sd_owned = sd.clone();
    Ok(RemoteDescription {
        sd: sd_owned,
        ufrag,
        pwd,
        setup,
        fingerprints: vec![fingerprint],
        sctp_port,
        max_message_size,
        hard_nat,
    })
}

/// Our offer (`offer` = None, `a=setup:actpass`) or our answer to `offer`
/// (`a=setup` answering theirs: `active` to `actpass`), with our ICE
/// credentials, the fingerprint of our certificate, our SCTP port and
/// max-message-size. Returns the SDP and the `a=setup` written.
pub(super) fn local_description(
    session: &Session,
    offer: Option<&RemoteDescription>,
    hard_nat: bool,
) -> Result<(String, Setup), DescriptionError> {
    let (u, p) = session.local_credentials();
    let (Ok(ufrag), Ok(pwd)) = (Ufrag::new(u), Pwd::new(p)) else {
        return Err(DescriptionError::Local);
    };
    let session_id = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        u.hash(&mut h);
        h.finish() >> 2
    };
    let fp = session.local_fingerprint();
    let fingerprint = p2p_sdp::Fingerprint::new(fp.hash_function().as_str(), fp.digest().to_vec())
        .map_err(|_| DescriptionError::Local)?;
    let setup = match offer {
        None => Setup::offer(),
        Some(o) => Setup::answer_to(o.setup)
            .map_err(|e| DescriptionError::Remote(format!("a=setup: {e}")))?,
    };
    let sdp_setup = match setup {
        Setup::Active => p2p_sdp::Setup::Active,
        Setup::Passive => p2p_sdp::Setup::Passive,
        _ => p2p_sdp::Setup::ActPass,
    };
    let (sctp_port, max_message_size) = session.sctp_parameters();
    let mut params = DataChannelParams::new(ufrag, pwd, fingerprint, sdp_setup, session_id);
    params.sctp_port = sctp_port;
    params.max_message_size = Some(u64::from(max_message_size));
    if hard_nat {
        params.extra_ice_options =
            vec![p2p_sdp::IceOption::Other(crate::HARD_NAT_OPTION.to_owned())];
    }
    let sdp = match offer {
        None => SessionDescription::offer_data_channel(&params).to_string(),
        Some(o) => SessionDescription::answer_data_channel(&o.sd, &params)
            .map_err(|e| DescriptionError::Remote(format!("{e}")))?
            .to_string(),
    };
    Ok((sdp, setup))
}
