//! `p2p completions SHELL` and `p2p man`: shell completions and man pages
//! generated from the command's own definition (clap_complete,
//! clap_mangen), so that they never disagree with `--help`.

use std::path::PathBuf;

use clap::Args;

type AnyError = Box<dyn std::error::Error>;

pub(crate) const COMPLETION_EXAMPLES: &str = "\
Examples:
  p2p completions bash > /etc/bash_completion.d/p2p
  p2p completions zsh > \"${fpath[1]}/_p2p\"
  p2p completions fish > ~/.config/fish/completions/p2p.fish";

pub(crate) const MAN_EXAMPLES: &str = "\
Examples:
  p2p man --out /usr/local/share/man/man1 && man p2p-serve
  p2p man | man -l -";

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write p2p.1 and p2p-COMMAND.1 for each command into DIR (default:
    /// print p2p.1 on stdout).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub(crate) fn completions(a: CompletionsArgs) -> Result<(), AnyError> {
    let mut cmd = crate::command();
    clap_complete::generate(a.shell, &mut cmd, "p2p", &mut std::io::stdout());
    Ok(())
}

pub(crate) fn man(a: ManArgs) -> Result<(), AnyError> {
    let cmd = crate::command();
    match a.out {
        None => {
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            println!("man pages written to {}", dir.display());
        }
    }
    Ok(())
}
