//! `p2p send FILE` and `p2p receive`: one file from one peer to the other,
//! through whatever NATs are between them, over an encrypted data channel.
//! The receiver may be a browser tab of `p2p serve`'s page, and so may the
//! sender.
//!
//! The wire (docs/file-transfer.md): the sender opens an ordered, reliable
//! channel labelled `file` with protocol `p2p-file/1` and says what it
//! offers; the receiver accepts or refuses; the bytes follow as binary
//! messages; the sender ends with the SHA-256 of what it read, and the
//! receiver answers with the SHA-256 of what it wrote once both agree (or
//! with why not). The sender exits 0 only on that answer: the file is on
//! the receiver's disk, checked end to end.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use p2p_connect::{Bytes, Channel, ChannelOptions, Connection, SendError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connect_cmd::{establish, Interrupted, NetArgs, Report};

type AnyError = Box<dyn std::error::Error>;

/// The channel's label and sub-protocol.
pub(crate) const LABEL: &str = "file";
pub(crate) const PROTOCOL: &str = "p2p-file/1";
/// The largest chunk: RFC 8841's default max-message-size (what a peer
/// that does not say accepts); smaller if the peer says so.
const CHUNK: usize = 64 * 1024;
pub(crate) const SEND_EXAMPLES: &str = "\
Examples:
  # One terminal receives, the other sends, through a local p2p serve:
  p2p receive --signaling ws://127.0.0.1:8080/ws --room files --out ~/Downloads
  p2p send report.pdf --signaling ws://127.0.0.1:8080/ws --room files
  # To a browser tab on the daemon's page (same room), JSON progress for scripts:
  p2p send disk.img --signaling wss://example.org/ws --room files --json";

pub(crate) const RECEIVE_EXAMPLES: &str = "\
Examples:
  # Wait in a room, write the file into the current directory:
  p2p receive --signaling ws://127.0.0.1:8080/ws --room files
  # Replace a file of the same name, relayed only through your TURN server:
  p2p receive --signaling wss://example.org/ws --room files --overwrite --relay-only \\
      --turn turn:example.org --turn-user alice --turn-password secret";

/// How often `--json` reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The file to send.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ReceiveArgs {
    /// The directory to write the file into (it must exist).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Replace a file of the same name (by default the transfer is refused).
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    net: NetArgs,
}

/// The control messages (string messages, JSON); the file's bytes are the
/// binary messages between `offer`/`accept` and `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Control {
    /// Sender: this file, this many bytes.
    Offer { name: String, size: u64 },
    /// Receiver: send it.
    Accept,
    /// Receiver: no, and why.
    Reject { reason: String },
    /// Sender: every byte was sent; their SHA-256 (lowercase hex).
    End { sha256: String },
    /// Receiver: written and checked; the SHA-256 it computed.
    Done { sha256: String },
    /// Either side: the transfer failed, and why.
    Error { reason: String },
}

impl Control {
    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn decode(data: &[u8]) -> Result<Control, String> {
        serde_json::from_slice(data).map_err(|e| format!("a control message that is not one: {e}"))
    }
}

/// The file name a receiver may create: one path component, no directory
/// parts, nothing hidden, no control characters, at most 255 bytes.
pub(crate) fn safe_name(name: &str) -> Result<&str, String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!(
            "the file name must be 1 to 255 bytes, not {}",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err(format!(
            "refusing the file name {name:?}: it starts with a dot"
        ));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(format!(
            "refusing the file name {name:?}: it holds a path separator or a control character"
        ));
    }
    Ok(name)
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sizes as people read them.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A line of `p2p send`/`receive`: with `--json`, `event` with `fields`
/// and the text; otherwise the text.
fn announce(report: &Report, event: &str, text: String, mut fields: serde_json::Value) {
    if report.json() {
        fields["text"] = text.into();
        report.json_line(event, fields);
    } else {
        report.say(event, text);
    }
}

/// A progress bar (rate, ETA) on a terminal; `progress` JSON lines with
/// `--json` (about once a second, and once more when every byte is in);
/// nothing otherwise.
struct Progress<'a> {
    bar: Option<indicatif::ProgressBar>,
    report: &'a Report,
    total: u64,
    started: Instant,
    last_json: Instant,
}

impl<'a> Progress<'a> {
    fn new(report: &'a Report, total: u64, verb: &str) -> Progress<'a> {
        let bar = (!report.json() && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            let style = indicatif::ProgressStyle::with_template(&format!(
                "{verb} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            report,
            total,
            started: now,
            last_json: now,
        }
    }

    fn set(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
        if self.last_json.elapsed() >= PROGRESS_EVERY {
            self.json(done);
        }
    }

    fn json(&mut self, done: u64) {
        if self.report.json() {
            self.last_json = Instant::now();
            self.report.json_line(
                "progress",
                serde_json::json!({
                    "bytes": done, "total": self.total,
                    "bytes_per_sec": rate(done, self.started.elapsed()),
                    "text": format!("{} of {}", human(done), human(self.total)),
                }),
            );
        }
    }

    /// Every byte is in: the last `progress` line (`bytes` = `total`),
    /// however short the transfer, and the bar goes.
    fn complete(&mut self) {
        self.json(self.total);
        self.finish();
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn rate(bytes: u64, d: Duration) -> u64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        (bytes as f64 / s) as u64
    } else {
        0
    }
}

/// The next control message on the channel; binary messages are not
/// expected here.
async fn next_control(ch: &Channel, who: &str) -> Result<Control, String> {
    match ch.recv().await {
        Ok(m) if !m.binary => Control::decode(&m.data),
        Ok(m) => Err(format!("the {who} sent {} bytes out of turn", m.data.len())),
        Err(e) => Err(format!("the {who} went away ({e})")),
    }
}

pub(crate) async fn send(a: SendArgs) -> Result<(), AnyError> {
    let path = &a.file;
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()).into());
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: the name is not UTF-8", path.display()))?
        .to_owned();
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let size = meta.len();

    let (conn, report) = establish(&a.net, "send", "").await?;
    // Ctrl-C or SIGTERM: the connection is closed at once, so that the
    // receiver learns (and drops its partial file) within a round trip.
    let r = tokio::select! {
        r = send_on(&conn, &report, &mut file, &name, size) => r,
        () = crate::connect_cmd::interrupted() => Err(Interrupted.into()),
    };
    conn.close().await;
    r
}

async fn send_on(
    conn: &Connection,
    report: &Report,
    file: &mut tokio::fs::File,
    name: &str,
    size: u64,
) -> Result<(), AnyError> {
    let ch = conn
        .open_channel(ChannelOptions::new(LABEL).with_protocol(PROTOCOL))
        .await?;
    ch.send_text(
        Control::Offer {
            name: name.to_owned(),
            size,
        }
        .encode(),
    )
    .await?;
    match next_control(&ch, "receiver").await? {
        Control::Accept => {}
        Control::Reject { reason } => return Err(format!("the receiver refused: {reason}").into()),
        other => return Err(format!("the receiver answered {other:?} to the offer").into()),
    }
    announce(
        report,
        "sending",
        format!("sending {name} ({})", human(size)),
        serde_json::json!({ "name": name, "bytes": size }),
    );
    let started = Instant::now();
    let mut progress = Progress::new(report, size, "sending");
    let mut hasher = Sha256::new();
    let mut sent = 0u64;
    let mut chunk = CHUNK;
    loop {
        let mut buf = Vec::with_capacity(chunk);
        while buf.len() < chunk {
            let n = (&mut *file)
                .take((chunk - buf.len()) as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            if n == 0 {
                break;
            }
        }
        if buf.is_empty() {
            break;
        }
        let data = Bytes::from(buf);
        send_all(&ch, &data, &mut chunk, sent, size).await?;
        hasher.update(&data);
        sent += data.len() as u64;
        if sent > size {
            progress.finish();
            return Err(format!("{name} grew while being sent").into());
        }
        progress.set(sent);
    }
    if sent != size {
        progress.finish();
        return Err(format!("{name} changed while being sent ({sent} of {size} bytes)").into());
    }
    progress.complete();
    let sha256 = hex(&hasher.finalize());
    ch.send_text(
        Control::End {
            sha256: sha256.clone(),
        }
        .encode(),
    )
    .await
    .map_err(|e| went_away(e, sent, size))?;
    announce(
        report,
        "sent",
        "every byte sent; waiting for the receiver's check".into(),
        serde_json::json!({ "name": name, "bytes": size, "sha256": sha256 }),
    );
    match next_control(&ch, "receiver").await? {
        Control::Done { sha256: theirs } if theirs == sha256 => {}
        Control::Done { sha256: theirs } => {
            return Err(format!("the receiver wrote sha256 {theirs}, we sent {sha256}").into())
        }
        Control::Error { reason } => return Err(format!("the receiver failed: {reason}").into()),
        other => return Err(format!("the receiver answered {other:?} to the end").into()),
    }
    let took = started.elapsed();
    report.json_line(
        "done",
        serde_json::json!({
            "name": name, "bytes": size, "sha256": sha256, "ms": took.as_millis() as u64,
            "bytes_per_sec": rate(size, took),
            "text": format!("sent {name}; the receiver checked it"),
        }),
    );
    if !report.json() {
        report.say(
            "done",
            format!(
                "sent {name} ({}) in {:.1} s, {}/s; sha256 {sha256}, checked by the receiver",
                human(size),
                took.as_secs_f64(),
                human(rate(size, took)),
            ),
        );
    }
    ch.close().await;
    Ok(())
}

/// Sends `data` as messages of at most `chunk` bytes; a peer whose
/// max-message-size is below that gets smaller ones from then on.
async fn send_all(
    ch: &Channel,
    data: &Bytes,
    chunk: &mut usize,
    sent: u64,
    size: u64,
) -> Result<(), AnyError> {
    let mut off = 0;
    while off < data.len() {
        let end = (off + *chunk).min(data.len());
        match ch.send(data.slice(off..end)).await {
            Ok(()) => off = end,
            Err(SendError::TooLarge { max, .. }) if max > 0 && (max as usize) < end - off => {
                *chunk = max as usize;
            }
            Err(e) => return Err(went_away(e, sent, size)),
        }
    }
    Ok(())
}

fn went_away(e: SendError, done: u64, size: u64) -> AnyError {
    format!(
        "the receiver went away after {} of {} ({e})",
        human(done),
        human(size)
    )
    .into()
}

pub(crate) async fn receive(a: ReceiveArgs) -> Result<(), AnyError> {
    // A bad --out is said before anyone waits for a peer.
    let dir = &a.out;
    match tokio::fs::metadata(dir).await {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("--out {}: not a directory", dir.display()).into()),
        Err(e) => return Err(format!("--out {}: {e}", dir.display()).into()),
    }
    let probe = dir.join(format!(".p2p-receive-probe-{}", std::process::id()));
    tokio::fs::write(&probe, b"")
        .await
        .map_err(|e| format!("--out {}: cannot write there: {e}", dir.display()))?;
    let _ = tokio::fs::remove_file(&probe).await;

    let (conn, report) = establish(&a.net, "receive", "").await?;
    // Ctrl-C or SIGTERM while bytes arrive is handled inside (the partial
    // file goes); before that, the connection is closed at once.
    let r = tokio::select! {
        biased;
        r = receive_on(&conn, &report, dir, a.overwrite) => r,
        () = crate::connect_cmd::interrupted() => Err(Interrupted.into()),
    };
    conn.close().await;
    r
}

/// Removes a partial file when dropped, unless taken out (renamed into
/// place). A synchronous remove: it must happen even when the future
/// holding it is dropped.
struct PartFile(Option<std::path::PathBuf>);

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

async fn receive_on(
    conn: &Connection,
    report: &Report,
    dir: &Path,
    overwrite: bool,
) -> Result<(), AnyError> {
    let ch = loop {
        let ch = conn
            .accept_channel()
            .await
            .map_err(|e| format!("the sender went away before sending ({e})"))?;
        if ch.label() == LABEL {
            break ch;
        }
        // A chat peer (p2p connect, the page's chat) is not a sender.
        report.say(
            "ignored",
            format!("ignoring the peer's channel {:?}: not a file", ch.label()),
        );
        ch.close().await;
    };
    let (name, size) = match next_control(&ch, "sender").await? {
        Control::Offer { name, size } => (name, size),
        other => return Err(format!("the sender began with {other:?}, not an offer").into()),
    };
    let refuse = |reason: String| async {
        let _ = ch
            .send_text(
                Control::Reject {
                    reason: reason.clone(),
                }
                .encode(),
            )
            .await;
        ch.close().await;
        reason
    };
    let name = match safe_name(&name) {
        Ok(n) => n.to_owned(),
        Err(e) => return Err(refuse(e).await.into()),
    };
    let target = dir.join(&name);
    if !overwrite && tokio::fs::symlink_metadata(&target).await.is_ok() {
        let reason = format!("{} exists (--overwrite replaces it)", target.display());
        return Err(refuse(reason).await.into());
    }
    let part = dir.join(format!(".{name}.p2p-part"));
    let file = match tokio::fs::File::create(&part).await {
        Ok(f) => f,
        Err(e) => return Err(refuse(format!("{}: {e}", part.display())).await.into()),
    };
    // Whatever ends this function (an error, an interrupt, or the caller
    // dropping it when the signal reaches it first), the partial file goes.
    let mut guard = PartFile(Some(part.clone()));
    ch.send_text(Control::Accept.encode()).await?;
    announce(
        report,
        "receiving",
        format!("receiving {name} ({})", human(size)),
        serde_json::json!({ "name": name, "bytes": size }),
    );
    let started = Instant::now();
    let r = tokio::select! {
        r = receive_bytes(&ch, report, file, &name, size) => r,
        () = crate::connect_cmd::interrupted() => {
            let _ = tokio::fs::remove_file(&part).await;
            let _ = ch
                .send_text(
                    Control::Error {
                        reason: "the receiver was interrupted".into(),
                    }
                    .encode(),
                )
                .await;
            return Err(Interrupted.into());
        }
    };
    match r {
        Ok(sha256) => {
            let renamed = tokio::fs::rename(&part, &target).await;
            if renamed.is_ok() {
                guard.0 = None;
            }
            if let Err(e) = renamed {
                let reason = format!("{}: {e}", target.display());
                let _ = ch
                    .send_text(
                        Control::Error {
                            reason: reason.clone(),
                        }
                        .encode(),
                    )
                    .await;
                let _ = tokio::fs::remove_file(&part).await;
                return Err(reason.into());
            }
            ch.send_text(
                Control::Done {
                    sha256: sha256.clone(),
                }
                .encode(),
            )
            .await?;
            let took = started.elapsed();
            report.json_line(
                "done",
                serde_json::json!({
                    "name": name, "bytes": size, "sha256": sha256,
                    "path": target.display().to_string(),
                    "ms": took.as_millis() as u64, "bytes_per_sec": rate(size, took),
                    "text": format!("received {name}; sha256 matches the sender's"),
                }),
            );
            if !report.json() {
                report.say(
                    "done",
                    format!(
                        "received {name} ({}) into {}; sha256 {sha256} matches the sender's",
                        human(size),
                        target.display()
                    ),
                );
            }
            // Wait for the sender to read the answer and close (bounded).
            let _ = tokio::time::timeout(Duration::from_secs(5), ch.recv()).await;
            Ok(())
        }
        Err(reason) => {
            let _ = tokio::fs::remove_file(&part).await;
            let _ = ch
                .send_text(
                    Control::Error {
                        reason: reason.clone(),
                    }
                    .encode(),
                )
                .await;
            Err(reason.into())
        }
    }
}

/// Writes the bytes as they come; the SHA-256 of what was written once the
/// sender's `end` agrees with it.
async fn receive_bytes(
    ch: &Channel,
    report: &Report,
    file: tokio::fs::File,
    name: &str,
    size: u64,
) -> Result<String, String> {
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut progress = Progress::new(report, size, "receiving");
    let theirs = loop {
        let m = match ch.recv().await {
            Ok(m) => m,
            Err(e) => {
                progress.finish();
                return Err(format!(
                    "the sender went away after {} of {} ({e}); nothing was kept",
                    human(got),
                    human(size)
                ));
            }
        };
        if !m.binary {
            match Control::decode(&m.data) {
                Ok(Control::End { sha256 }) => break sha256,
                Ok(Control::Error { reason }) => {
                    progress.finish();
                    return Err(format!("the sender failed: {reason}"));
                }
                Ok(other) => return Err(format!("the sender sent {other:?} mid-file")),
                Err(e) => return Err(e),
            }
        }
        got += m.data.len() as u64;
        if got > size {
            progress.finish();
            return Err(format!(
                "the sender sent more than the {size} bytes it offered"
            ));
        }
        hasher.update(&m.data);
        out.write_all(&m.data)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        progress.set(got);
    };
    if got != size {
        progress.finish();
        return Err(format!(
            "the sender ended after {got} of the {size} bytes it offered"
        ));
    }
    progress.complete();
    out.flush().await.map_err(|e| format!("{name}: {e}"))?;
    out.get_ref()
        .sync_all()
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let ours = hex(&hasher.finalize());
    if ours != theirs {
        return Err(format!(
            "sha256 mismatch: the sender read {theirs}, we wrote {ours}"
        ));
    }
    // JSON only: on a terminal the `done` line right after says it.
    report.json_line(
        "received",
        serde_json::json!({
            "name": name, "bytes": got, "sha256": ours,
            "text": "every byte received and written; sha256 matches the sender's",
        }),
    );
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip_as_tagged_json() {
        let offer = Control::Offer {
            name: "a.bin".into(),
            size: 7,
        };
        assert_eq!(
            offer.encode(),
            r#"{"type":"offer","name":"a.bin","size":7}"#
        );
        assert_eq!(Control::decode(offer.encode().as_bytes()), Ok(offer));
        assert_eq!(Control::Accept.encode(), r#"{"type":"accept"}"#);
        assert!(Control::decode(b"{\"type\":\"launch\"}").is_err());
        assert!(Control::decode(b"\xff").is_err());
    }

    #[test]
    fn a_receiver_refuses_names_that_leave_its_directory_or_hide() {
        assert_eq!(safe_name("report.pdf"), Ok("report.pdf"));
        for bad in [
            "", "../x", "a/b", "a\\b", ".bashrc", ".", "..", "a\nb", "x\0",
        ] {
            assert!(safe_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(safe_name(&"n".repeat(256)).is_err());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(10), "10 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(10 * 1024 * 1024), "10.0 MiB");
    }
}
