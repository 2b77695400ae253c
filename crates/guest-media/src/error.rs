//! The errors of guest media: variants are named after the operation that failed, carry the
//! URL, path or field involved and keep the cause as `#[source]`. [`Error::is_usage`] says which
//! are bad input (a tool exits 2 for those); the next step to suggest is the tool's to word.

use std::path::PathBuf;

use hostio::CommandError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value given for the media (`--iso`, `--keyboard`) that cannot be used.
    #[error("invalid {option} {value:?}: {reason}")]
    InvalidOption {
        option: String,
        value: String,
        reason: String,
    },
    #[error("unknown Ubuntu release {release:?}: vmctl does not support it")]
    UnknownRelease {
        release: String,
        /// The releases in the release data, `VERSION (CODENAME)`, comma-separated.
        supported: String,
    },
    /// A seed value with a character YAML 1.1 does not allow in a stream, or a control or
    /// bidi character: cloud-init would fail to read the file, or the guest would show it raw.
    #[error(
        "cloud-init {file}: {field} holds U+{codepoint:04X}, a control, bidi or non-printable character"
    )]
    SeedCharacter {
        file: &'static str,
        field: &'static str,
        codepoint: u32,
    },
    #[error("render cloud-init {file}")]
    RenderSeed {
        file: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot reach {url}")]
    FetchUnreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("download {url}")]
    Download {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error(
        "checksum mismatch for {url}: expected sha256 {expected}, got {actual}; the download was deleted"
    )]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{file} is not listed in {sums_url}")]
    NotInChecksums { file: String, sums_url: String },
    #[error("verify the signature of {sums_url} with keyring {keyring}")]
    BadSignature {
        sums_url: String,
        keyring: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error(
        "{sig_url} is missing (HTTP 404): the checksums cannot be authenticated with the keyring {keyring}"
    )]
    SignatureMissing { sig_url: String, keyring: PathBuf },
    /// An ISO given by path or URL whose sha256 is not the one its release lists.
    #[error("ISO checksum mismatch for {origin}: expected sha256 {expected}, got {actual}")]
    IsoChecksum {
        origin: String,
        expected: String,
        actual: String,
    },
    #[error("{sums_url} lists no ubuntu-{version}*-desktop-amd64.iso")]
    NoIsoListed { sums_url: String, version: String },
    #[error("extract {file} from {iso}")]
    ExtractFromIso {
        iso: PathBuf,
        file: String,
        #[source]
        source: CommandError,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("inspect image {path}")]
    ImageInfo {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("create disk {path}")]
    CreateOverlay {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("write seed ISO {path}")]
    WriteSeed {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
    /// The caller's cancellation check said stop (Ctrl-C): `during` says what was stopped,
    /// `next` what the user can do now.
    #[error("interrupted during {during}")]
    Interrupted { during: String, next: String },
}

impl Error {
    /// Bad input rather than a failure: the value, release, URL or file given cannot be used,
    /// and nothing was changed.
    pub fn is_usage(&self) -> bool {
        match self {
            Self::InvalidOption { .. }
            | Self::UnknownRelease { .. }
            | Self::SeedCharacter { .. }
            | Self::FetchUnreachable { .. }
            | Self::IsoChecksum { .. } => true,
            Self::HttpStatus { status, .. } => (400..500).contains(status),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
