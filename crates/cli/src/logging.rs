//! Where `p2p` logs go: stderr (colours only on a terminal) or a file that
//! SIGHUP opens again (for logrotate), as text lines or JSON objects.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use p2p_server::LogFormat;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// A log file, opened for appending; [`LogFile::reopen`] lets a rotated
/// file go.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    fn new(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_owned(),
            file: Mutex::new(open(path)?),
        })
    }

    /// Open the file again by its path (after logrotate moved it).
    pub(crate) fn reopen(&self) -> io::Result<()> {
        let f = open(&self.path)?;
        match self.file.lock() {
            Ok(mut g) => *g = f,
            Err(p) => *p.into_inner() = f,
        }
        Ok(())
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// One writer per event: the formatted line goes out in one `write_all`.
struct FileWriter(Arc<LogFile>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.file.lock() {
            Ok(mut f) => f.write(buf),
            Err(p) => p.into_inner().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The level `-v` asks for, or `configured`, or `fallback`. Below `-vv`,
/// sctp-proto's own lines are off: it logs a peer's ABORT (how aiortc and
/// some browsers close) at ERROR, and the session reports what it means.
fn level(verbose: u8, configured: Option<&str>, fallback: &'static str) -> String {
    let level = match verbose {
        0 => configured.unwrap_or(fallback),
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    if verbose < 2 {
        format!("{level},sctp_proto=off")
    } else {
        level.to_owned()
    }
}

/// Start logging: `RUST_LOG` wins, then `-v`, then `configured`, then
/// `fallback`. With `file`, lines are appended there (no colours);
/// otherwise they go to stderr, in colour only on a terminal.
pub(crate) fn init(
    verbose: u8,
    configured: Option<&str>,
    fallback: &'static str,
    file: Option<&Path>,
    format: LogFormat,
) -> io::Result<Option<Arc<LogFile>>> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level(verbose, configured, fallback)))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("log level: {e}")))?;
    let (writer, ansi, handle) = match file {
        Some(path) => {
            let f = Arc::new(LogFile::new(path).map_err(|e| {
                io::Error::new(e.kind(), format!("log file {}: {e}", path.display()))
            })?);
            let w = f.clone();
            (
                BoxMakeWriter::new(move || FileWriter(w.clone())),
                false,
                Some(f),
            )
        }
        None => (
            BoxMakeWriter::new(io::stderr),
            io::stderr().is_terminal(),
            None,
        ),
    };
    let layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        _ => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
    Ok(handle)
}
