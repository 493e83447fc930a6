//! A kernel version as the catalog and the eras bound it: major and minor, shown `6.1`.

use core::fmt;

/// Kernel version (major, minor); ordered as the kernel numbers its releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    pub major: u8,
    pub minor: u8,
}

impl KernelVersion {
    /// Below every kernel: an entry or era without a first version.
    pub const ANY: KernelVersion = KernelVersion::new(0, 0);
    /// Above every kernel: an entry without a last version.
    pub const NEVER: KernelVersion = KernelVersion::new(u8::MAX, u8::MAX);

    pub const fn new(major: u8, minor: u8) -> Self {
        Self { major, minor }
    }
}

impl From<(u8, u8)> for KernelVersion {
    fn from((major, minor): (u8, u8)) -> Self {
        Self::new(major, minor)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Plans store versions as the text `6.1`.
#[cfg(feature = "user")]
impl serde::Serialize for KernelVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "user")]
impl<'de> serde::Deserialize<'de> for KernelVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = KernelVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a kernel version such as \"6.1\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KernelVersion, E> {
                let (major, minor) = v
                    .split_once('.')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))?;
                Ok(KernelVersion::new(major, minor))
            }
        }
        d.deserialize_str(Text)
    }
}
