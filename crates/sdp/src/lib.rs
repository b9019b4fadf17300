//! ICE candidate lines and the minimal SDP of a WebRTC data channel.
//!
//! `p2p-sdp` reads and writes the `candidate` attribute of RFC 8839 §5.1 in
//! every form browsers hand it around (`a=candidate:…` in SDP,
//! `candidate:…` in `RTCIceCandidate.candidate`), the other ICE attributes
//! (`ice-ufrag`, `ice-pwd`, `ice-options`, `ice-lite`, `ice-mismatch`,
//! `ice-pacing`, `end-of-candidates`), and a [`SessionDescription`] (RFC 8866)
//! good enough to read a browser's data channel offer and write the answer
//! (`mid`, `group:BUNDLE`, `setup`, `fingerprint`, `sctp-port`,
//! `max-message-size`). Parsing uses nom, one function per ABNF production;
//! writing is `Display`, its exact inverse: parse then write gives back the
//! text for canonical input, and unknown lines and attributes are kept in
//! order. Parsers never panic; errors are [`ParseError`] and, for whole
//! descriptions, [`SessionError`] with the line number.
//!
//! It is not an ICE agent, a DTLS or SCTP stack, nor a full JSEP
//! implementation: it knows nothing of audio, video, codecs or RTP, keeping
//! those lines as text. No I/O, no clock, no randomness: the caller draws
//! session ids, ufrags and passwords.
//!
//! ```
//! use p2p_sdp::{Candidate, DataChannelParams, Fingerprint, Pwd, SessionDescription, Setup, Ufrag};
//!
//! let offer: SessionDescription = "v=0\r\n\
//!     o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
//!     a=group:BUNDLE 0\r\n\
//!     m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
//!     a=ice-ufrag:Xy3v\r\na=ice-pwd:o2pS0X0f2o0Jd0T3F9m9k7Yq\r\na=ice-options:trickle\r\n\
//!     a=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n"
//!     .parse()?;
//! let dc = offer.data_channel().expect("a data channel");
//! assert_eq!(offer.ice_ufrag_for(dc), Some("Xy3v"));
//!
//! let params = DataChannelParams::new(
//!     Ufrag::new("abcd")?,
//!     Pwd::new("0123456789abcdefghijkl")?,
//!     Fingerprint::new("sha-256", vec![0xAB; 32])?,
//!     Setup::Active,
//!     42,
//! );
//! let answer = SessionDescription::answer_data_channel(&offer, &params)?;
//! assert_eq!(answer.data_channel().and_then(|m| m.setup()), Some(Setup::Active));
//!
//! // A trickled candidate, as JavaScript hands it over.
//! let c: Candidate = "candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host".parse()?;
//! assert_eq!(c.to_sdp_line(), "a=candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod answer;
mod attribute;
mod candidate;
mod error;
mod ice;
mod parse;
mod session;

pub use answer::DataChannelParams;
pub use attribute::{Attribute, Fingerprint, Group, Setup};
pub use candidate::{Address, Candidate, CandidateType, Extension, TcpType, Transport};
pub use error::{AnswerError, ParseError, SessionError};
pub use ice::{IceAttribute, IceOption, Pwd, Ufrag};
pub use session::{Connection, Line, MediaDescription, Origin, SessionDescription, Timing};
