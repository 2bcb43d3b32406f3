//! Durations in config files and flags: `30s`, `500ms`, `2m`, `1h` or a bare number of
//! seconds, so every role's TOML reads the same way.

use std::time::Duration;

/// Serde adapter: `#[serde(with = "pollen_core::duration::humane")]`.
pub mod humane {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a duration as milliseconds (`"1500ms"`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    /// Reads a duration written as in [`super::parse_duration`] (`"30s"`, `"500ms"`, `"2m"`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 30s, 500ms, 2m)"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_and_nonsense_is_refused() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("3h"), Ok(Duration::from_secs(3 * 3600)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Config {
        #[serde(with = "super::humane")]
        wait: Duration,
    }

    #[test]
    fn durations_in_configs_read_as_written_and_write_back_the_same() {
        let c: Config = serde_json::from_str(r#"{"wait": "2m"}"#).expect("parses");
        assert_eq!(c.wait, Duration::from_secs(120));
        let text = serde_json::to_string(&c).expect("writes");
        assert_eq!(text, r#"{"wait":"120000ms"}"#);
        assert_eq!(serde_json::from_str::<Config>(&text).expect("again"), c);
        assert!(serde_json::from_str::<Config>(r#"{"wait": "soon"}"#).is_err());
    }
}
