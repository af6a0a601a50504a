//! `/etc/doppel/helper.toml`: per-user limits on count and size of volumes.

use serde::Deserialize;

/// The limits the helper enforces for each user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_volumes: u32,
    pub max_total_size: u64,
    pub max_volume_size: u64,
    pub min_volume_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_volumes: 16,
            max_total_size: 512 << 30,
            max_volume_size: 256 << 30,
            min_volume_size: 64 << 20,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    max_volumes: Option<u32>,
    max_total_size: Option<Size>,
    max_volume_size: Option<Size>,
    min_volume_size: Option<Size>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

pub use doppel_helper::wire::parse_size;

impl Size {
    fn bytes(&self, key: &str) -> Result<u64, String> {
        match self {
            Size::Bytes(b) => Ok(*b),
            Size::Text(t) => {
                parse_size(t).ok_or_else(|| format!("{key}: {t:?} is not a size like \"8G\""))
            }
        }
    }
}

/// Reads the limits from `text`; the defaults fill in what is not given.
pub fn parse(text: &str) -> Result<Limits, String> {
    let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
    let d = Limits::default();
    let l = Limits {
        max_volumes: f.max_volumes.unwrap_or(d.max_volumes),
        max_total_size: f
            .max_total_size
            .map(|s| s.bytes("max_total_size"))
            .transpose()?
            .unwrap_or(d.max_total_size),
        max_volume_size: f
            .max_volume_size
            .map(|s| s.bytes("max_volume_size"))
            .transpose()?
            .unwrap_or(d.max_volume_size),
        min_volume_size: f
            .min_volume_size
            .map(|s| s.bytes("min_volume_size"))
            .transpose()?
            .unwrap_or(d.min_volume_size),
    };
    if l.min_volume_size > l.max_volume_size {
        return Err("min_volume_size is larger than max_volume_size".into());
    }
    Ok(l)
}

/// Loads the limits from `path`; a missing file means the defaults.
pub fn load(path: &std::path::Path) -> Result<Limits, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => parse(&t).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Limits::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_defaults() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("8g"), Some(8 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999T"), None);
        let l = parse("max_volumes = 2\nmax_total_size = \"1G\"\n").unwrap();
        assert_eq!(l.max_volumes, 2);
        assert_eq!(l.max_total_size, 1 << 30);
        assert_eq!(l.min_volume_size, Limits::default().min_volume_size);
        assert!(parse("bogus = 1").is_err());
        assert!(parse("min_volume_size = \"2G\"\nmax_volume_size = \"1G\"").is_err());
    }
}
