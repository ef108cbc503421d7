//! Why a payload folder cannot be embedded, and how paths are shown in
//! messages.

use std::io;
use std::path::{Path, PathBuf};

/// Why a payload folder cannot be embedded. Each message is one line that
/// names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The payload folder cannot be read.
    #[error(
        "cannot read the payload folder {}: {source} (create it and put the executables \
         there, or set STIGMER_PAYLOAD_DIR to the folder that holds them)",
        shown(dir)
    )]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The payload folder holds no executable file.
    #[error(
        "the payload folder {} holds no executable files: put the payloads there (chmod +x), \
         or unset STIGMER_PAYLOAD_DIR to embed the demo payloads",
        shown(dir)
    )]
    Empty {
        /// The folder.
        dir: PathBuf,
    },
    /// A file cannot be read.
    #[error(
        "cannot read {}: {source} (check that it exists and that the build can read it)",
        shown(path)
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A generated file cannot be written.
    #[error(
        "cannot write {}: {source} (check the permissions and free space of the build's output \
         folder, or run cargo clean)",
        shown(path)
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An entry of the payload folder cannot be followed.
    #[error(
        "cannot read {} in the payload folder: {source} (a broken or looping symlink? point it \
         at the payload, or remove it)",
        shown(path)
    )]
    Entry {
        /// The entry.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A payload file's name is not UTF-8.
    #[error("payload file {} has a name that is not UTF-8: rename it", shown(path))]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// A payload's name cannot be used.
    #[error("{}: {source}", shown(path))]
    Name {
        /// The file.
        path: PathBuf,
        /// What is wrong with its name.
        #[source]
        source: NameError,
    },
    /// A payload (or manifest) path is not a regular file.
    #[error(
        "payload file {} is not a regular file (a folder, a FIFO, a device): point it at the \
         executable",
        shown(path)
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A path holds a line break, which cargo cannot be told to watch.
    #[error(
        "{} holds a line break, which cargo cannot watch (its instructions are lines): \
         rename it",
        shown(path)
    )]
    LineBreak {
        /// The path.
        path: PathBuf,
    },
    /// A payload file is empty.
    #[error("payload file {} is empty: rebuild it or remove it", shown(path))]
    EmptyPayload {
        /// The file.
        path: PathBuf,
    },
    /// Two payloads have the same name.
    #[error("two payloads are named {name:?} ({} and {}): rename one", shown(first), shown(second))]
    Duplicate {
        /// The name.
        name: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
    /// Compression was asked for without the `compress` feature.
    #[error("payloads are compressed only by stigmer-build's compress feature: enable it")]
    NoCompress,
}

/// A name that cannot name a payload (or a service).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payload name {name:?} {problem}")]
pub struct NameError {
    pub(crate) name: String,
    pub(crate) problem: NameProblem,
}

impl NameError {
    /// The name that was refused.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What is wrong with a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameProblem {
    Length,
    Leading,
    Char(char),
    Reserved,
}

impl std::fmt::Display for NameProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fix = "rename it to letters, digits, '.', '_' and '-' (at most 64, not starting with '.' or '-')";
        match self {
            NameProblem::Length => write!(f, "must be 1 to 64 characters: {fix}"),
            NameProblem::Leading => write!(f, "starts with '.' or '-': {fix}"),
            NameProblem::Char(c) => write!(f, "contains {c:?}: {fix}"),
            NameProblem::Reserved => f.write_str("is reserved by stigmer: rename the file"),
        }
    }
}

/// A path for a message: control characters (a newline, a terminal
/// escape) escaped, so that a message stays one line, and a cargo warning
/// cannot start a line that cargo would take for an instruction.
pub(crate) fn shown(path: &Path) -> String {
    path.display()
        .to_string()
        .chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}
