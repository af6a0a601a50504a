//! The volume key of an encrypted profile, wrapped in keyslots stored beside the profile.
//!
//! An encrypted profile's volume (see DESIGN.md, "Storage") is protected by a random 64-byte
//! [`VolumeKey`], an fscrypt v2 master key that is later handed to the helper. The key itself is
//! never stored: each *keyslot* holds it encrypted ("wrapped") under a key derived from a secret
//! the person knows or keeps:
//!
//! - `passphrase.toml`: the passphrase the person chose;
//! - `recovery.toml`: a random [`RecoveryKey`] shown to the person once, at [`create`].
//!
//! Wrapping: Argon2id (version 1.3, RFC 9106) turns the secret and a random 32-byte salt into a
//! 32-byte wrapping key; AES-256-GCM under that key with a random 12-byte nonce encrypts the
//! volume key, with `b"doppel-keyslot-v1\0" + id + "\0" + kind` as associated data so that a slot
//! copied to another profile, or into the other slot's file, does not open. Salt and nonce are
//! new at every wrap; the Argon2 costs are stored in the slot, so slots written on different
//! machines (or with different [`calibrate`] results) all keep working.
//!
//! A slot file is TOML, `version = 1`, binary fields in lower-case hex:
//!
//! ```toml
//! version = 1
//! kind = "passphrase"
//!
//! [kdf]
//! algorithm = "argon2id"
//! m_cost_kib = 65536
//! t_cost = 3
//! p_cost = 4
//! salt = "…64 hex digits…"
//!
//! [wrap]
//! algorithm = "aes-256-gcm"
//! nonce = "…24 hex digits…"
//! ciphertext = "…160 hex digits (64-byte key + 16-byte tag)…"
//! ```
//!
//! Files are written with [`crate::atomic`] (temporary file, fsync, rename, fsync of the
//! directory), mode 0600, one file per slot: changing the passphrase replaces only
//! `passphrase.toml`, by rename, so a crash at any moment leaves the old or the new passphrase
//! working, and the recovery key working throughout.
//!
//! Secrets (volume key, recovery key, wrapping keys, Argon2 memory) live in [`Zeroizing`]
//! buffers, are wiped when dropped, and print as `[redacted]` in `Debug` output. Nothing here
//! logs.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Length of a volume key in bytes (an fscrypt v2 master key).
pub const VOLUME_KEY_LEN: usize = 64;

/// Length of a recovery key in bytes (256 random bits).
pub const RECOVERY_KEY_LEN: usize = 32;

/// Memory floor of [`calibrate`], in KiB (19 MiB, OWASP's minimum for Argon2id with t = 2).
pub const FLOOR_M_COST_KIB: u32 = 19 * 1024;

/// Time-cost floor of [`calibrate`] whenever it had to go below the starting memory (64 MiB).
pub const FLOOR_T_COST: u32 = 2;

/// The slot file format this module reads and writes.
const FORMAT_VERSION: u32 = 1;
const KDF_ALGORITHM: &str = "argon2id";
const WRAP_ALGORITHM: &str = "aes-256-gcm";
const AAD_PREFIX: &[u8] = b"doppel-keyslot-v1\0";
const SALT_LEN: usize = 32;
const WRAP_KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = VOLUME_KEY_LEN + TAG_LEN;
/// A slot file is a few hundred bytes; anything much larger is not one.
const MAX_SLOT_FILE_LEN: u64 = 64 * 1024;

/// Upper limits on costs read from a slot file, so that a damaged file cannot ask for absurd
/// amounts of memory or time.
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
const MAX_T_COST: u32 = 1024;
const MAX_P_COST: u32 = 64;
/// Upper limit of the time cost [`calibrate`] chooses on a fast machine.
const CALIBRATED_MAX_T_COST: u32 = 64;

/// Mode of slot files and of a slot directory that [`create`] makes.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// Crockford's base32 alphabet (no I, L, O, U).
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Base32 symbols in a recovery key: 256 bits + 4 zero bits of padding = 52 × 5 bits.
const RECOVERY_SYMBOLS: usize = (RECOVERY_KEY_LEN * 8).div_ceil(5);
/// Symbols per dash-separated group when a recovery key is shown.
const RECOVERY_GROUP: usize = 4;

/// What went wrong with a profile's keys; each message says what a person can do about it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Neither slot file exists.
    #[error("profile is not encrypted or its key files are missing from {}", dir.display())]
    Missing {
        /// The slot directory.
        dir: PathBuf,
    },
    /// [`create`] found slot files already there.
    #[error(
        "key files already exist in {}: this profile already has a volume key; refusing to \
         replace it (unlock it, or delete the profile first)",
        dir.display()
    )]
    AlreadyExists {
        /// The slot directory.
        dir: PathBuf,
    },
    /// No slot opened with the secret given.
    #[error("the passphrase (or recovery key) is wrong")]
    WrongPassphrase,
    /// A slot file exists but is not a valid slot.
    #[error(
        "key file {} is damaged ({reason}); unlock with the other key (passphrase or recovery \
         key) if it still works, or restore the file from a backup",
        path.display()
    )]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A slot file has a format version this build does not know.
    #[error(
        "key file {} has format version {found}, but this Doppel knows only version \
         {FORMAT_VERSION}: it was written by a newer Doppel; update Doppel",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        found: i64,
    },
    /// A new passphrase was empty.
    #[error("the passphrase is empty: choose a passphrase")]
    EmptyPassphrase,
    /// [`RecoveryKey::parse`] got something that is not a recovery key.
    #[error(
        "this is not a recovery key: a recovery key is {RECOVERY_SYMBOLS} letters and digits, \
         shown in groups like XXXX-XXXX-…; case, spaces and dashes do not matter"
    )]
    NotARecoveryKey,
    /// Argon2 costs outside what this module accepts.
    #[error("invalid key derivation costs: {0}")]
    BadParams(String),
    /// A slot file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A slot file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed, so no key can be made; try again")]
    Random,
    /// Encryption failed for a reason that should not happen.
    #[error("internal error while wrapping the volume key: {0}")]
    Internal(&'static str),
}

/// Argon2id costs: memory in KiB, passes, lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes over the memory.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl KdfParams {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes.
    pub const fn rfc9106() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 4,
        }
    }

    /// Tiny costs that make tests fast; they protect nothing, so never use them for real keys.
    pub const fn for_tests() -> Self {
        Self {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Checks the costs and builds the Argon2id context.
    fn argon2(&self) -> Result<Argon2<'static>, String> {
        if self.m_cost_kib > MAX_M_COST_KIB {
            return Err(format!(
                "memory cost {} KiB is above the limit of {MAX_M_COST_KIB} KiB",
                self.m_cost_kib
            ));
        }
        if self.t_cost > MAX_T_COST {
            return Err(format!(
                "time cost {} is above the limit of {MAX_T_COST}",
                self.t_cost
            ));
        }
        if self.p_cost > MAX_P_COST {
            return Err(format!(
                "parallelism {} is above the limit of {MAX_P_COST}",
                self.p_cost
            ));
        }
        let params = Params::new(
            self.m_cost_kib,
            self.t_cost,
            self.p_cost,
            Some(WRAP_KEY_LEN),
        )
        .map_err(|e| {
            format!(
                "m_cost = {} KiB, t_cost = {}, p_cost = {}: {e}",
                self.m_cost_kib, self.t_cost, self.p_cost
            )
        })?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Measures Argon2id here and returns costs taking about `target` per derivation.
///
/// Starts from [`KdfParams::rfc9106`] (64 MiB, t = 3, p = 4), times one derivation, then scales
/// the number of passes (at least 1, at most 64) to fit `target`. If even one pass over 64 MiB
/// takes longer than `target`, it keeps two passes and lowers the memory instead, but never
/// below the floor of [`FLOOR_M_COST_KIB`] (19 MiB) with [`FLOOR_T_COST`] (2) passes, OWASP's
/// minimum for Argon2id: on a very slow machine unlocking then takes longer than `target`.
/// Every result is thus at least as strong as OWASP's minimum (64 MiB × 1 pass is above its
/// 46 MiB × 1 option). The measurement reflects the build it runs in: call it from an optimised
/// build.
pub fn calibrate(target: Duration) -> KdfParams {
    let start = KdfParams::rfc9106();
    let began = Instant::now();
    match derive_wrapping_key(&start, b"doppel calibration", &[0u8; SALT_LEN]) {
        Ok(_) => scale(start, began.elapsed(), target),
        Err(_) => start,
    }
}

/// The pure part of [`calibrate`]: costs for `target`, given that `start` took `measured`.
fn scale(start: KdfParams, measured: Duration, target: Duration) -> KdfParams {
    let start_m = f64::from(start.m_cost_kib.max(1));
    let start_work = start_m * f64::from(start.t_cost.max(1));
    let seconds_per_kib_pass = measured.as_secs_f64().max(1e-9) / start_work;
    // How many KiB-passes fit in the target.
    let budget = target.as_secs_f64() / seconds_per_kib_pass;
    let passes = budget / start_m;
    if passes >= 1.0 {
        let t = passes.round().min(f64::from(CALIBRATED_MAX_T_COST)) as u32;
        return KdfParams {
            m_cost_kib: start.m_cost_kib,
            t_cost: t.max(1),
            p_cost: start.p_cost,
        };
    }
    // One pass over the full memory is already too slow: two passes over less memory, whole
    // MiB, down to the floor.
    let m_mib = (budget / f64::from(FLOOR_T_COST) / 1024.0).floor();
    let m = (m_mib * 1024.0)
        .min(start_m)
        .max(f64::from(FLOOR_M_COST_KIB)) as u32;
    KdfParams {
        m_cost_kib: m.max(FLOOR_M_COST_KIB),
        t_cost: FLOOR_T_COST,
        p_cost: start.p_cost,
    }
}

/// A profile's 64-byte volume key, wiped from memory when dropped.
pub struct VolumeKey(Zeroizing<[u8; VOLUME_KEY_LEN]>);

impl VolumeKey {
    /// The raw key bytes (to hand to the helper; never log them).
    pub fn as_bytes(&self) -> &[u8; VOLUME_KEY_LEN] {
        &self.0
    }

    fn generate(rng: &SystemRandom) -> Result<Self, KeyError> {
        let mut key = Zeroizing::new([0u8; VOLUME_KEY_LEN]);
        rng.fill(&mut key[..]).map_err(|_| KeyError::Random)?;
        Ok(Self(key))
    }
}

impl fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VolumeKey([redacted])")
    }
}

/// A random recovery key, shown once as Crockford base32 groups (`XXXX-XXXX-…`).
///
/// `Display` writes the key itself, for showing it to the person; a `String` made from it is
/// not wiped, so write it straight to where it is shown.
pub struct RecoveryKey(Zeroizing<[u8; RECOVERY_KEY_LEN]>);

impl RecoveryKey {
    /// Reads a recovery key as a person typed it: case, spaces and dashes do not matter, and
    /// `O` reads as `0`, `I` and `L` as `1`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        Self::from_input(s.as_bytes()).ok_or(KeyError::NotARecoveryKey)
    }

    /// The raw key bytes.
    fn as_bytes(&self) -> &[u8; RECOVERY_KEY_LEN] {
        &self.0
    }

    fn generate(rng: &SystemRandom) -> Result<Self, KeyError> {
        let mut key = Zeroizing::new([0u8; RECOVERY_KEY_LEN]);
        rng.fill(&mut key[..]).map_err(|_| KeyError::Random)?;
        Ok(Self(key))
    }

    /// Decodes tolerant input; `None` if it is not a recovery key.
    fn from_input(input: &[u8]) -> Option<Self> {
        let mut key = Zeroizing::new([0u8; RECOVERY_KEY_LEN]);
        let mut acc: u32 = 0;
        let mut bits: u32 = 0;
        let mut symbols = 0usize;
        let mut out = 0usize;
        for &c in input {
            if c == b'-' || c.is_ascii_whitespace() {
                continue;
            }
            let v = crockford_value(c)?;
            symbols += 1;
            if symbols > RECOVERY_SYMBOLS {
                return None;
            }
            acc = (acc << 5) | u32::from(v);
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                let byte = (acc >> bits) as u8;
                *key.get_mut(out)? = byte;
                out += 1;
                acc &= (1 << bits) - 1;
            }
        }
        // Exactly all symbols, and the padding bits left over are zero.
        if symbols != RECOVERY_SYMBOLS || out != RECOVERY_KEY_LEN || acc != 0 {
            return None;
        }
        Some(Self(key))
    }
}

impl FromStr for RecoveryKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::parse(s)
    }
}

impl fmt::Display for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        let mut acc: u32 = 0;
        let mut bits: u32 = 0;
        let mut written = 0usize;
        let mut emit = |f: &mut fmt::Formatter<'_>, v: u32| -> fmt::Result {
            if written > 0 && written % RECOVERY_GROUP == 0 {
                f.write_char('-')?;
            }
            written += 1;
            f.write_char(char::from(CROCKFORD[(v & 31) as usize]))
        };
        for &b in self.as_bytes().iter() {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                emit(f, acc >> bits)?;
                acc &= (1 << bits) - 1;
            }
        }
        if bits > 0 {
            emit(f, acc << (5 - bits))?;
        }
        Ok(())
    }
}

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryKey([redacted])")
    }
}

fn crockford_value(c: u8) -> Option<u8> {
    let c = c.to_ascii_uppercase();
    let c = match c {
        b'O' => b'0',
        b'I' | b'L' => b'1',
        other => other,
    };
    CROCKFORD.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Whether the slot directory holds any slot file.
pub fn exists(dir: &Path) -> bool {
    [SlotKind::Passphrase, SlotKind::Recovery]
        .iter()
        .any(|kind| match dir.join(kind.file_name()).symlink_metadata() {
            Ok(_) => true,
            // Anything but "not there" (e.g. no permission) counts as there: never overwrite.
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        })
}

/// Makes a new volume key for profile `id`, writes its passphrase and recovery slots to `dir`
/// (created, mode 0700, if missing), and returns the key and the recovery key to show once.
///
/// Refuses if `dir` already holds a slot. The passphrase slot is written last, so its presence
/// marks a finished `create`; if writing fails, no slot file is left behind.
pub fn create(
    dir: &Path,
    id: &str,
    passphrase: &[u8],
    params: KdfParams,
) -> Result<(VolumeKey, RecoveryKey), KeyError> {
    if passphrase.is_empty() {
        return Err(KeyError::EmptyPassphrase);
    }
    params.argon2().map_err(KeyError::BadParams)?;
    if exists(dir) {
        return Err(KeyError::AlreadyExists {
            dir: dir.to_owned(),
        });
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| KeyError::Write {
            path: dir.to_owned(),
            source,
        })?;

    let rng = SystemRandom::new();
    let volume_key = VolumeKey::generate(&rng)?;
    let recovery_key = RecoveryKey::generate(&rng)?;

    let recovery = wrap(
        &rng,
        &volume_key,
        id,
        SlotKind::Recovery,
        recovery_key.as_bytes(),
        params,
    )?;
    let pass = wrap(
        &rng,
        &volume_key,
        id,
        SlotKind::Passphrase,
        passphrase,
        params,
    )?;

    write_slot(dir, SlotKind::Recovery, &recovery, WriteMode::New)?;
    if let Err(e) = write_slot(dir, SlotKind::Passphrase, &pass, WriteMode::New) {
        let _ = fs::remove_file(dir.join(SlotKind::Recovery.file_name()));
        return Err(e);
    }
    Ok((volume_key, recovery_key))
}

/// Unwraps profile `id`'s volume key with `secret`, the passphrase or the recovery key.
///
/// Tries the passphrase slot, then the recovery slot (reading `secret` tolerantly as a recovery
/// key). A wrong secret costs the full key derivation of every slot present and always gives
/// [`KeyError::WrongPassphrase`], whatever was wrong. If a slot file is damaged and the other
/// slot does not open either, the error names the damaged file.
pub fn unlock(dir: &Path, id: &str, secret: &[u8]) -> Result<VolumeKey, KeyError> {
    let pass = load_slot(dir, SlotKind::Passphrase);
    let recovery = load_slot(dir, SlotKind::Recovery);
    if matches!((&pass, &recovery), (Ok(None), Ok(None))) {
        return Err(KeyError::Missing {
            dir: dir.to_owned(),
        });
    }
    let mut damaged: Option<KeyError> = None;

    match pass {
        Ok(Some(slot)) => match open(&slot, id, secret) {
            Ok(Some(key)) => return Ok(key),
            Ok(None) => {}
            Err(e) => {
                damaged.get_or_insert(e);
            }
        },
        Ok(None) => {}
        Err(e) => {
            damaged.get_or_insert(e);
        }
    }

    match recovery {
        Ok(Some(slot)) => {
            // Run the derivation even when the input is no recovery key, so that the time
            // taken does not tell which slot refused.
            let parsed = RecoveryKey::from_input(secret);
            let dummy = Zeroizing::new([0u8; RECOVERY_KEY_LEN]);
            let input: &[u8] = match &parsed {
                Some(k) => k.as_bytes(),
                None => &dummy[..],
            };
            match open(&slot, id, input) {
                Ok(Some(key)) if parsed.is_some() => return Ok(key),
                Ok(_) => {}
                Err(e) => {
                    damaged.get_or_insert(e);
                }
            }
        }
        Ok(None) => {}
        Err(e) => {
            damaged.get_or_insert(e);
        }
    }

    Err(damaged.unwrap_or(KeyError::WrongPassphrase))
}

/// Sets a new passphrase: unlocks with `old_secret` (the passphrase or the recovery key) and
/// rewraps the same volume key, so the volume's data stays as it is.
///
/// Only `passphrase.toml` is replaced, atomically; the recovery key keeps working. This also
/// restores a missing or damaged passphrase slot when `old_secret` is the recovery key.
pub fn change_passphrase(
    dir: &Path,
    id: &str,
    old_secret: &[u8],
    new_passphrase: &[u8],
    params: KdfParams,
) -> Result<(), KeyError> {
    if new_passphrase.is_empty() {
        return Err(KeyError::EmptyPassphrase);
    }
    params.argon2().map_err(KeyError::BadParams)?;
    let volume_key = unlock(dir, id, old_secret)?;
    let rng = SystemRandom::new();
    let slot = wrap(
        &rng,
        &volume_key,
        id,
        SlotKind::Passphrase,
        new_passphrase,
        params,
    )?;
    write_slot(dir, SlotKind::Passphrase, &slot, WriteMode::Replace)
}

/// Which slot a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Passphrase,
    Recovery,
}

impl SlotKind {
    fn name(self) -> &'static str {
        match self {
            SlotKind::Passphrase => "passphrase",
            SlotKind::Recovery => "recovery",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            SlotKind::Passphrase => "passphrase.toml",
            SlotKind::Recovery => "recovery.toml",
        }
    }
}

/// The associated data binding a slot to its profile and kind.
fn aad(id: &str, kind: SlotKind) -> Vec<u8> {
    let mut v = Vec::with_capacity(AAD_PREFIX.len() + id.len() + 1 + kind.name().len());
    v.extend_from_slice(AAD_PREFIX);
    v.extend_from_slice(id.as_bytes());
    v.push(0);
    v.extend_from_slice(kind.name().as_bytes());
    v
}

/// A slot read from its file and checked.
struct Slot {
    path: PathBuf,
    kind: SlotKind,
    params: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    wrapped: [u8; WRAPPED_LEN],
}

/// The TOML form of a slot file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotFile {
    version: u32,
    kind: String,
    kdf: KdfSection,
    wrap: WrapSection,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfSection {
    algorithm: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrapSection {
    algorithm: String,
    nonce: String,
    ciphertext: String,
}

/// Argon2id of `secret` and `salt` under `params`, with the Argon2 memory wiped afterwards.
fn derive_wrapping_key(
    params: &KdfParams,
    secret: &[u8],
    salt: &[u8],
) -> Result<Zeroizing<[u8; WRAP_KEY_LEN]>, String> {
    let argon2 = params.argon2()?;
    let blocks = argon2.params().block_count();
    let mut memory = Zeroizing::new(vec![Block::default(); blocks]);
    let mut out = Zeroizing::new([0u8; WRAP_KEY_LEN]);
    argon2
        .hash_password_into_with_memory(secret, salt, &mut out[..], &mut memory[..])
        .map_err(|e| format!("key derivation failed: {e}"))?;
    Ok(out)
}

/// Wraps `volume_key` under `secret` for slot `kind` of profile `id`.
fn wrap(
    rng: &SystemRandom,
    volume_key: &VolumeKey,
    id: &str,
    kind: SlotKind,
    secret: &[u8],
    params: KdfParams,
) -> Result<SlotFile, KeyError> {
    let mut salt = [0u8; SALT_LEN];
    rng.fill(&mut salt).map_err(|_| KeyError::Random)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| KeyError::Random)?;

    let wrapping_key = derive_wrapping_key(&params, secret, &salt).map_err(KeyError::BadParams)?;
    let key = UnboundKey::new(&AES_256_GCM, &wrapping_key[..])
        .map_err(|_| KeyError::Internal("AES-256-GCM refused the wrapping key"))?;
    let key = LessSafeKey::new(key);
    // Room for the tag up front, so the buffer holding the plain key is never reallocated
    // (which would leave an unwiped copy behind).
    let mut buf = Zeroizing::new(Vec::with_capacity(WRAPPED_LEN));
    buf.extend_from_slice(volume_key.as_bytes());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(id, kind)),
        &mut *buf,
    )
    .map_err(|_| KeyError::Internal("AES-256-GCM encryption failed"))?;

    Ok(SlotFile {
        version: FORMAT_VERSION,
        kind: kind.name().to_owned(),
        kdf: KdfSection {
            algorithm: KDF_ALGORITHM.to_owned(),
            m_cost_kib: params.m_cost_kib,
            t_cost: params.t_cost,
            p_cost: params.p_cost,
            salt: to_hex(&salt),
        },
        wrap: WrapSection {
            algorithm: WRAP_ALGORITHM.to_owned(),
            nonce: to_hex(&nonce),
            ciphertext: to_hex(&buf),
        },
    })
}

/// Opens `slot` for profile `id` with `secret`: `Ok(None)` if it does not open.
fn open(slot: &Slot, id: &str, secret: &[u8]) -> Result<Option<VolumeKey>, KeyError> {
    let wrapping_key = derive_wrapping_key(&slot.params, secret, &slot.salt).map_err(|reason| {
        KeyError::Corrupt {
            path: slot.path.clone(),
            reason,
        }
    })?;
    let key = UnboundKey::new(&AES_256_GCM, &wrapping_key[..])
        .map_err(|_| KeyError::Internal("AES-256-GCM refused the wrapping key"))?;
    let key = LessSafeKey::new(key);
    let mut buf = Zeroizing::new(slot.wrapped);
    let Ok(plain) = key.open_in_place(
        Nonce::assume_unique_for_key(slot.nonce),
        Aad::from(aad(id, slot.kind)),
        &mut buf[..],
    ) else {
        return Ok(None);
    };
    let mut volume_key = Zeroizing::new([0u8; VOLUME_KEY_LEN]);
    if plain.len() != VOLUME_KEY_LEN {
        return Ok(None);
    }
    volume_key.copy_from_slice(plain);
    Ok(Some(VolumeKey(volume_key)))
}

/// Reads and checks slot `kind` in `dir`: `Ok(None)` if its file does not exist.
fn load_slot(dir: &Path, kind: SlotKind) -> Result<Option<Slot>, KeyError> {
    let path = dir.join(kind.file_name());
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(KeyError::Read { path, source }),
    };
    let mut bytes = Vec::new();
    if let Err(source) = file.take(MAX_SLOT_FILE_LEN + 1).read_to_end(&mut bytes) {
        return Err(KeyError::Read { path, source });
    }
    let corrupt = |reason: String| KeyError::Corrupt {
        path: path.clone(),
        reason,
    };
    if bytes.len() as u64 > MAX_SLOT_FILE_LEN {
        return Err(corrupt(format!(
            "larger than {MAX_SLOT_FILE_LEN} bytes, so not a key file"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| corrupt("not UTF-8 text".to_owned()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| corrupt(format!("not valid TOML: {}", e.message())))?;
    match table.get("version").map(|v| v.as_integer()) {
        None => return Err(corrupt("no `version` field".to_owned())),
        Some(None) => return Err(corrupt("`version` is not a number".to_owned())),
        Some(Some(v)) if v != i64::from(FORMAT_VERSION) => {
            return Err(KeyError::UnsupportedVersion { path, found: v })
        }
        Some(Some(_)) => {}
    }
    let file: SlotFile = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| corrupt(e.message().to_owned()))?;

    if file.kind != kind.name() {
        return Err(corrupt(format!(
            "it says it is a `{}` slot, not a `{}` slot",
            file.kind,
            kind.name()
        )));
    }
    if file.kdf.algorithm != KDF_ALGORITHM {
        return Err(corrupt(format!(
            "unknown key derivation `{}` (expected `{KDF_ALGORITHM}`)",
            file.kdf.algorithm
        )));
    }
    if file.wrap.algorithm != WRAP_ALGORITHM {
        return Err(corrupt(format!(
            "unknown cipher `{}` (expected `{WRAP_ALGORITHM}`)",
            file.wrap.algorithm
        )));
    }
    let params = KdfParams {
        m_cost_kib: file.kdf.m_cost_kib,
        t_cost: file.kdf.t_cost,
        p_cost: file.kdf.p_cost,
    };
    params.argon2().map_err(&corrupt)?;
    let salt = from_hex_exact::<SALT_LEN>(&file.kdf.salt)
        .ok_or_else(|| corrupt(format!("`salt` is not {SALT_LEN} bytes of hex")))?;
    let nonce = from_hex_exact::<NONCE_LEN>(&file.wrap.nonce)
        .ok_or_else(|| corrupt(format!("`nonce` is not {NONCE_LEN} bytes of hex")))?;
    let wrapped = from_hex_exact::<WRAPPED_LEN>(&file.wrap.ciphertext)
        .ok_or_else(|| corrupt(format!("`ciphertext` is not {WRAPPED_LEN} bytes of hex")))?;
    Ok(Some(Slot {
        path,
        kind,
        params,
        salt,
        nonce,
        wrapped,
    }))
}

/// Whether a slot write may replace an existing file.
enum WriteMode {
    New,
    Replace,
}

/// Writes slot `kind` to `dir` atomically, mode 0600.
fn write_slot(
    dir: &Path,
    kind: SlotKind,
    slot: &SlotFile,
    mode: WriteMode,
) -> Result<(), KeyError> {
    let path = dir.join(kind.file_name());
    let text = toml::to_string(slot).map_err(|_| KeyError::Internal("cannot format a key file"))?;
    let written = match mode {
        WriteMode::New => crate::atomic::write_new(&path, text.as_bytes(), FILE_MODE),
        WriteMode::Replace => crate::atomic::write(&path, text.as_bytes(), FILE_MODE),
    };
    written.map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            KeyError::AlreadyExists {
                dir: dir.to_owned(),
            }
        } else {
            KeyError::Write { path, source }
        }
    })
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Decodes exactly `N` bytes of hex (either case).
fn from_hex_exact<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ID: &str = "work";
    const PASS: &[u8] = b"correct horse battery staple";

    fn setup() -> (tempfile::TempDir, PathBuf, VolumeKey, RecoveryKey) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let (vk, rk) = create(&dir, ID, PASS, KdfParams::for_tests()).unwrap();
        (tmp, dir, vk, rk)
    }

    fn assert_wrong(r: Result<VolumeKey, KeyError>) {
        match r {
            Err(KeyError::WrongPassphrase) => {}
            other => panic!("expected WrongPassphrase, got {other:?}"),
        }
    }

    /// Replaces one hex digit of `[section] field` in the slot file at `path`.
    fn tamper(path: &Path, section: &str, field: &str) {
        let mut table: toml::Table = toml::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        let value = table
            .get_mut(section)
            .unwrap()
            .as_table_mut()
            .unwrap()
            .get_mut(field)
            .unwrap();
        let mut s = value.as_str().unwrap().to_owned();
        let first = if s.starts_with('0') { "1" } else { "0" };
        s.replace_range(0..1, first);
        *value = toml::Value::String(s);
        fs::write(path, toml::to_string(&table).unwrap()).unwrap();
    }

    #[test]
    fn round_trip_with_passphrase_and_recovery_key() {
        let (_tmp, dir, vk, rk) = setup();
        assert!(exists(&dir));
        let a = unlock(&dir, ID, PASS).unwrap();
        assert_eq!(a.as_bytes(), vk.as_bytes());
        let b = unlock(&dir, ID, rk.to_string().as_bytes()).unwrap();
        assert_eq!(b.as_bytes(), vk.as_bytes());
        assert_ne!(vk.as_bytes(), &[0u8; VOLUME_KEY_LEN]);
    }

    #[test]
    fn wrong_passphrase_is_refused() {
        let (_tmp, dir, _vk, _rk) = setup();
        assert_wrong(unlock(&dir, ID, b"correct horse battery stapler"));
        assert_wrong(unlock(&dir, ID, b""));
        let e = unlock(&dir, ID, b"nope").unwrap_err();
        assert_eq!(e.to_string(), "the passphrase (or recovery key) is wrong");
    }

    #[test]
    fn a_recovery_key_that_is_wrong_is_refused() {
        let (_tmp, dir, _vk, _rk) = setup();
        let other = RecoveryKey::generate(&SystemRandom::new()).unwrap();
        assert_wrong(unlock(&dir, ID, other.to_string().as_bytes()));
    }

    #[test]
    fn recovery_key_survives_a_passphrase_change() {
        let (_tmp, dir, vk, rk) = setup();
        let rk_text = rk.to_string();
        let recovery_before = fs::read(dir.join("recovery.toml")).unwrap();

        // Old passphrase → new one.
        change_passphrase(&dir, ID, PASS, b"second", KdfParams::for_tests()).unwrap();
        assert_wrong(unlock(&dir, ID, PASS));
        assert_eq!(
            unlock(&dir, ID, b"second").unwrap().as_bytes(),
            vk.as_bytes()
        );

        // Recovery key → third passphrase.
        change_passphrase(
            &dir,
            ID,
            rk_text.as_bytes(),
            b"third",
            KdfParams::for_tests(),
        )
        .unwrap();
        assert_wrong(unlock(&dir, ID, b"second"));
        assert_eq!(
            unlock(&dir, ID, b"third").unwrap().as_bytes(),
            vk.as_bytes()
        );
        assert_eq!(
            unlock(&dir, ID, rk_text.as_bytes()).unwrap().as_bytes(),
            vk.as_bytes()
        );
        // The recovery slot was never rewritten.
        assert_eq!(
            fs::read(dir.join("recovery.toml")).unwrap(),
            recovery_before
        );
    }

    #[test]
    fn change_passphrase_with_a_wrong_secret_changes_nothing() {
        let (_tmp, dir, _vk, _rk) = setup();
        let before = fs::read(dir.join("passphrase.toml")).unwrap();
        let e = change_passphrase(&dir, ID, b"wrong", b"new", KdfParams::for_tests());
        assert!(matches!(e, Err(KeyError::WrongPassphrase)), "{e:?}");
        assert_eq!(fs::read(dir.join("passphrase.toml")).unwrap(), before);
        let e = change_passphrase(&dir, ID, PASS, b"", KdfParams::for_tests());
        assert!(matches!(e, Err(KeyError::EmptyPassphrase)), "{e:?}");
    }

    #[test]
    fn slots_copied_to_another_profile_do_not_open() {
        let (tmp, dir, _vk, rk) = setup();
        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        for name in ["passphrase.toml", "recovery.toml"] {
            fs::copy(dir.join(name), other.join(name)).unwrap();
        }
        assert_wrong(unlock(&other, "personal", PASS));
        assert_wrong(unlock(&other, "personal", rk.to_string().as_bytes()));
        assert!(unlock(&other, ID, PASS).is_ok());
    }

    #[test]
    fn a_slot_is_bound_to_its_kind() {
        let rng = SystemRandom::new();
        let vk = VolumeKey::generate(&rng).unwrap();
        let file = wrap(
            &rng,
            &vk,
            ID,
            SlotKind::Recovery,
            b"secret",
            KdfParams::for_tests(),
        )
        .unwrap();
        let slot = |kind| Slot {
            path: PathBuf::from("x"),
            kind,
            params: KdfParams::for_tests(),
            salt: from_hex_exact(&file.kdf.salt).unwrap(),
            nonce: from_hex_exact(&file.wrap.nonce).unwrap(),
            wrapped: from_hex_exact(&file.wrap.ciphertext).unwrap(),
        };
        assert!(open(&slot(SlotKind::Recovery), ID, b"secret")
            .unwrap()
            .is_some());
        assert!(open(&slot(SlotKind::Passphrase), ID, b"secret")
            .unwrap()
            .is_none());
    }

    #[test]
    fn tampered_slots_are_a_wrong_passphrase_not_a_panic() {
        for (section, field) in [("wrap", "ciphertext"), ("wrap", "nonce"), ("kdf", "salt")] {
            let (_tmp, dir, vk, rk) = setup();
            tamper(&dir.join("passphrase.toml"), section, field);
            assert_wrong(unlock(&dir, ID, PASS));
            // The untouched recovery slot still opens.
            let k = unlock(&dir, ID, rk.to_string().as_bytes()).unwrap();
            assert_eq!(k.as_bytes(), vk.as_bytes());
        }
    }

    #[test]
    fn a_damaged_file_is_named_and_the_other_slot_still_works() {
        let (_tmp, dir, vk, rk) = setup();
        let path = dir.join("passphrase.toml");
        fs::write(&path, "version = 1\nkind = \"passphrase\"\n[kdf\n").unwrap();
        let k = unlock(&dir, ID, rk.to_string().as_bytes()).unwrap();
        assert_eq!(k.as_bytes(), vk.as_bytes());
        match unlock(&dir, ID, PASS) {
            Err(e @ KeyError::Corrupt { .. }) => {
                assert!(e.to_string().contains("passphrase.toml"), "{e}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // The recovery key restores the passphrase slot.
        change_passphrase(
            &dir,
            ID,
            rk.to_string().as_bytes(),
            PASS,
            KdfParams::for_tests(),
        )
        .unwrap();
        assert_eq!(unlock(&dir, ID, PASS).unwrap().as_bytes(), vk.as_bytes());
    }

    #[test]
    fn a_newer_format_is_reported_as_such() {
        let (_tmp, dir, _vk, _rk) = setup();
        fs::write(dir.join("passphrase.toml"), "version = 2\nnew = true\n").unwrap();
        fs::write(dir.join("recovery.toml"), "version = 2\nnew = true\n").unwrap();
        let e = unlock(&dir, ID, PASS).unwrap_err();
        assert!(
            matches!(e, KeyError::UnsupportedVersion { found: 2, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn leftover_temporary_files_do_not_break_unlock() {
        let (_tmp, dir, vk, _rk) = setup();
        fs::write(dir.join(".passphrase.toml.tmp-12345-0"), "garbage").unwrap();
        fs::write(dir.join(".new-12345-1"), "half a fi").unwrap();
        assert_eq!(unlock(&dir, ID, PASS).unwrap().as_bytes(), vk.as_bytes());
        change_passphrase(&dir, ID, PASS, b"next", KdfParams::for_tests()).unwrap();
        assert_eq!(unlock(&dir, ID, b"next").unwrap().as_bytes(), vk.as_bytes());
    }

    #[test]
    fn files_are_private() {
        let (_tmp, dir, _vk, _rk) = setup();
        change_passphrase(&dir, ID, PASS, b"next", KdfParams::for_tests()).unwrap();
        for name in ["passphrase.toml", "recovery.toml"] {
            let mode = fs::metadata(dir.join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
            let text = fs::read_to_string(dir.join(name)).unwrap();
            assert!(text.starts_with("version = 1\n"), "{text}");
        }
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn create_refuses_existing_slots_and_empty_passphrases() {
        let (_tmp, dir, vk, _rk) = setup();
        let e = create(&dir, ID, b"other", KdfParams::for_tests()).unwrap_err();
        assert!(matches!(e, KeyError::AlreadyExists { .. }), "{e:?}");
        assert_eq!(unlock(&dir, ID, PASS).unwrap().as_bytes(), vk.as_bytes());

        let tmp = tempfile::tempdir().unwrap();
        let e = create(tmp.path(), ID, b"", KdfParams::for_tests()).unwrap_err();
        assert!(matches!(e, KeyError::EmptyPassphrase), "{e:?}");
        assert!(!exists(tmp.path()));
        let bad = KdfParams {
            m_cost_kib: 1,
            t_cost: 0,
            p_cost: 1,
        };
        let e = create(tmp.path(), ID, PASS, bad).unwrap_err();
        assert!(matches!(e, KeyError::BadParams(_)), "{e:?}");
        assert!(!exists(tmp.path()));
    }

    #[test]
    fn missing_slots_say_so() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!exists(tmp.path()));
        let e = unlock(tmp.path(), ID, PASS).unwrap_err();
        assert!(matches!(e, KeyError::Missing { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "profile is not encrypted or its key files are missing from {}",
                tmp.path().display()
            )
        );
    }

    #[test]
    fn debug_output_is_redacted() {
        let (_tmp, _dir, vk, rk) = setup();
        let d = format!("{vk:?} {rk:?}");
        assert_eq!(d, "VolumeKey([redacted]) RecoveryKey([redacted])");
        assert!(!d.contains(&to_hex(vk.as_bytes())));
        assert!(!d.contains(&rk.to_string()));
        assert!(!d.contains(&to_hex(rk.as_bytes())));
    }

    #[test]
    fn recovery_keys_print_in_groups_and_parse_tolerantly() {
        let (_tmp, dir, vk, rk) = setup();
        let text = rk.to_string();
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(groups.len(), RECOVERY_SYMBOLS / RECOVERY_GROUP);
        assert!(groups.iter().all(|g| g.len() == RECOVERY_GROUP));
        assert!(text.bytes().all(|c| c == b'-' || CROCKFORD.contains(&c)));

        let sloppy = format!(
            "  {}\n",
            text.to_lowercase()
                .replace('-', " ")
                .replace('0', "o")
                .replace('1', "l")
        );
        let parsed = RecoveryKey::parse(&sloppy).unwrap();
        assert_eq!(parsed.as_bytes(), rk.as_bytes());
        let bare: String = text.chars().filter(|&c| c != '-').collect();
        assert_eq!(
            bare.parse::<RecoveryKey>().unwrap().as_bytes(),
            rk.as_bytes()
        );
        // Typed sloppily, it still unlocks.
        assert_eq!(
            unlock(&dir, ID, sloppy.as_bytes()).unwrap().as_bytes(),
            vk.as_bytes()
        );

        assert!(RecoveryKey::parse(&bare[1..]).is_err());
        assert!(RecoveryKey::parse(&format!("{bare}0")).is_err());
        assert!(RecoveryKey::parse(&bare.replacen(|_| true, "U", 1)).is_err());
        assert!(RecoveryKey::parse("").is_err());
        // Non-zero padding bits: the last symbol carries one bit, so only 0 and G are valid.
        let mut last_bad = bare.clone();
        last_bad.pop();
        last_bad.push('1');
        assert!(RecoveryKey::parse(&last_bad).is_err());
    }

    #[test]
    fn recovery_key_encoding_is_fixed() {
        let k = RecoveryKey(Zeroizing::new([0xff; RECOVERY_KEY_LEN]));
        let s = k.to_string();
        assert_eq!(
            s.len(),
            RECOVERY_SYMBOLS + RECOVERY_SYMBOLS / RECOVERY_GROUP - 1
        );
        assert!(s.starts_with("ZZZZ-ZZZZ-"));
        assert!(s.ends_with("ZZZG"));
        let z = RecoveryKey(Zeroizing::new([0; RECOVERY_KEY_LEN]));
        assert_eq!(
            z.to_string(),
            ["0000"; RECOVERY_SYMBOLS / RECOVERY_GROUP].join("-")
        );
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x12];
        assert_eq!(to_hex(&bytes), "007f80ff12");
        assert_eq!(from_hex_exact::<5>("007F80ff12"), Some(bytes));
        assert_eq!(from_hex_exact::<5>("007f80ff1"), None);
        assert_eq!(from_hex_exact::<5>("007f80ff1g"), None);
    }

    fn at_least_floor(p: KdfParams) {
        assert!(p.argon2().is_ok(), "{p:?}");
        assert!(p.m_cost_kib >= FLOOR_M_COST_KIB, "{p:?}");
        assert!(p.t_cost >= 1, "{p:?}");
        if p.m_cost_kib < KdfParams::rfc9106().m_cost_kib {
            assert!(p.t_cost >= FLOOR_T_COST, "{p:?}");
        }
        assert_eq!(p.p_cost, 4);
    }

    #[test]
    fn calibration_scales_passes_then_memory_and_keeps_the_floor() {
        let start = KdfParams::rfc9106();
        let ms = Duration::from_millis;
        let target = ms(500);

        // 100 ms per pass: 5 passes over 64 MiB.
        let p = scale(start, ms(300), target);
        assert_eq!((p.m_cost_kib, p.t_cost), (64 * 1024, 5));
        // A very fast machine is capped.
        let p = scale(start, Duration::ZERO, target);
        assert_eq!((p.m_cost_kib, p.t_cost), (64 * 1024, CALIBRATED_MAX_T_COST));
        // Exactly one pass fits.
        let p = scale(start, ms(1500), target);
        assert_eq!((p.m_cost_kib, p.t_cost), (64 * 1024, 1));
        // 0.8 passes fit: two passes over 25 MiB.
        let p = scale(start, ms(1875), target);
        assert_eq!((p.m_cost_kib, p.t_cost), (25 * 1024, 2));
        // A very slow machine, or a tiny target, stops at the floor.
        let p = scale(start, Duration::from_secs(60), target);
        assert_eq!((p.m_cost_kib, p.t_cost), (FLOOR_M_COST_KIB, FLOOR_T_COST));
        let p = scale(start, ms(300), Duration::ZERO);
        assert_eq!((p.m_cost_kib, p.t_cost), (FLOOR_M_COST_KIB, FLOOR_T_COST));

        for measured_ms in [0, 1, 10, 100, 500, 1000, 1499, 1500, 2000, 5000, 100_000] {
            for target_ms in [0, 1, 50, 500, 2000] {
                at_least_floor(scale(start, ms(measured_ms), ms(target_ms)));
            }
        }
    }
}
