//! Small re-implementations of the Go standard-library behaviours Packer's
//! semantics depend on: `strconv` parsing and float formatting, `time`
//! layouts and `ParseDuration`, `strings.Replace`/`Split`, and the
//! `go-strftime` conversion table. Written from the Go documentation of each
//! function; only what Packer templates can reach is covered.
use std::time::Duration;
use time::OffsetDateTime;

/// `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The digits and base of an unsigned integer literal in Go's base-0
/// syntax (`0x1F`, `0o17`, `017`, `0b101`, `1_000`).
fn split_base(s: &str) -> Result<(u32, String), &'static str> {
    let (base, digits, prefixed) = if let Some(r) = s.strip_prefix("0x").or(s.strip_prefix("0X")) {
        (16, r, true)
    } else if let Some(r) = s.strip_prefix("0b").or(s.strip_prefix("0B")) {
        (2, r, true)
    } else if let Some(r) = s.strip_prefix("0o").or(s.strip_prefix("0O")) {
        (8, r, true)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..], true)
    } else {
        (10, s, false)
    };
    if digits.contains('_') {
        // Underscores only with a base prefix, and only between digits.
        let ok = prefixed && !digits.ends_with('_') && !digits.contains("__");
        if !ok {
            return Err("invalid syntax");
        }
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if clean.is_empty() || !clean.chars().all(|c| c.is_digit(base)) {
        return Err("invalid syntax");
    }
    Ok((base, clean))
}

/// `strconv.ParseUint(s, 0, 64)`.
pub fn parse_uint(s: &str) -> Result<u64, String> {
    let fail = |why: &str| format!("strconv.ParseUint: parsing {s:?}: {why}");
    let (base, digits) = split_base(s).map_err(fail)?;
    u64::from_str_radix(&digits, base).map_err(|_| fail("value out of range"))
}

/// `strconv.ParseInt(s, 0, 64)`.
pub fn parse_int(s: &str) -> Result<i64, String> {
    let fail = |why: &str| format!("strconv.ParseInt: parsing {s:?}: {why}");
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (base, digits) = split_base(body).map_err(fail)?;
    let u = u64::from_str_radix(&digits, base).map_err(|_| fail("value out of range"))?;
    if neg {
        if u <= i64::MAX as u64 + 1 {
            Ok((u as i128).wrapping_neg() as i64)
        } else {
            Err(fail("value out of range"))
        }
    } else {
        i64::try_from(u).map_err(|_| fail("value out of range"))
    }
}

/// `time.ParseDuration`, returning whether it was negative and its size.
pub fn parse_duration(s: &str) -> Result<(bool, Duration), String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok((false, Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..n];
            rest = &r[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(format!("time: unknown unit {other:?} in duration {s:?}")),
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut v = whole.checked_mul(scale).ok_or_else(invalid)?;
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(30)];
            let f: u128 = digits.parse().map_err(|_| invalid())?;
            v += f * scale / 10u128.pow(digits.len() as u32);
        }
        total = total.checked_add(v).ok_or_else(invalid)?;
        if total > i64::MAX as u128 {
            return Err(invalid());
        }
    }
    let d = Duration::new(
        (total / 1_000_000_000) as u64,
        (total % 1_000_000_000) as u32,
    );
    Ok((neg && total > 0, d))
}

/// Go's `%v` for a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`):
/// shortest digits, exponent form when the exponent is < -4 or >= 6
/// (checked against Packer: `{{ 1e6 }}` prints `1e+06`, `{{ 1e3 }}` `1000`).
pub fn format_float_v(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits.
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// `strings.Replace(s, old, new, n)` (n < 0: all).
pub fn replace(s: &str, old: &str, new: &str, n: i64) -> String {
    if old == new || n == 0 {
        return s.to_string();
    }
    if old.is_empty() {
        // Insert `new` before each rune and at the end, up to n times.
        let mut out = String::new();
        let mut left = if n < 0 { i64::MAX } else { n };
        for c in s.chars() {
            if left > 0 {
                out.push_str(new);
                left -= 1;
            }
            out.push(c);
        }
        if left > 0 {
            out.push_str(new);
        }
        return out;
    }
    if n < 0 {
        s.replace(old, new)
    } else {
        s.replacen(old, new, usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// `strings.Split(s, sep)`.
pub fn split<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    if sep.is_empty() {
        s.char_indices()
            .map(|(i, c)| &s[i..i + c.len_utf8()])
            .collect()
    } else {
        s.split(sep).collect()
    }
}

const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const LONG_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `time.Time.Format(layout)` for a UTC time, covering Go's layout tokens:
/// `2006 06 01 1 Jan January 02 2 _2 15 03 3 04 4 05 5 PM pm Mon Monday MST`,
/// the numeric zones (`-0700 -07:00 -07 -070000 -07:00:00` and their `Z`
/// forms, which print `Z` for UTC), `002` (day of year) and fractional
/// seconds (`.000`, `.999`, also with `,`).
pub fn format_layout(layout: &str, t: OffsetDateTime) -> String {
    let mut out = String::new();
    let b = layout.as_bytes();
    let mut i = 0;
    let hour12 = |h: u8| match h % 12 {
        0 => 12,
        x => x,
    };
    let nanos = t.nanosecond();
    while i < b.len() {
        let rest = &layout[i..];
        let starts = |p: &str| rest.starts_with(p);
        // Each arm: (text to emit, bytes consumed); None = literal byte.
        let tok: Option<(String, usize)> = match b[i] {
            b'J' if starts("January") => Some((LONG_MONTHS[t.month() as usize - 1].into(), 7)),
            b'J' if starts("Jan") => Some((LONG_MONTHS[t.month() as usize - 1][..3].into(), 3)),
            b'M' if starts("Monday") => Some((
                LONG_DAYS[t.weekday().number_days_from_monday() as usize].into(),
                6,
            )),
            b'M' if starts("Mon") => Some((
                LONG_DAYS[t.weekday().number_days_from_monday() as usize][..3].into(),
                3,
            )),
            b'M' if starts("MST") => Some(("UTC".into(), 3)),
            b'0' if starts("002") => Some((format!("{:03}", t.ordinal()), 3)),
            b'0' if b.len() > i + 1 && (b'1'..=b'6').contains(&b[i + 1]) => Some((
                match b[i + 1] {
                    b'1' => format!("{:02}", t.month() as u8),
                    b'2' => format!("{:02}", t.day()),
                    b'3' => format!("{:02}", hour12(t.hour())),
                    b'4' => format!("{:02}", t.minute()),
                    b'5' => format!("{:02}", t.second()),
                    _ => format!("{:02}", t.year().rem_euclid(100)),
                },
                2,
            )),
            b'1' if starts("15") => Some((format!("{:02}", t.hour()), 2)),
            b'1' => Some(((t.month() as u8).to_string(), 1)),
            b'2' if starts("2006") => Some((format!("{:04}", t.year()), 4)),
            b'2' => Some((t.day().to_string(), 1)),
            b'_' if starts("_2006") => Some((format!("_{:04}", t.year()), 5)),
            b'_' if starts("__2") => Some((format!("{:>3}", t.ordinal()), 3)),
            b'_' if starts("_2") => Some((format!("{:>2}", t.day()), 2)),
            b'3' => Some((hour12(t.hour()).to_string(), 1)),
            b'4' => Some((t.minute().to_string(), 1)),
            b'5' => Some((t.second().to_string(), 1)),
            b'P' if starts("PM") => Some((if t.hour() >= 12 { "PM" } else { "AM" }.into(), 2)),
            b'p' if starts("pm") => Some((if t.hour() >= 12 { "pm" } else { "am" }.into(), 2)),
            b'-' | b'Z' => {
                let z = b[i] == b'Z';
                let body = &rest[1..];
                let n = ["070000", "07:00:00", "0700", "07:00", "07"]
                    .iter()
                    .find(|p| body.starts_with(**p))
                    .map(|p| p.len());
                n.map(|n| {
                    let text = if z {
                        "Z".to_string()
                    } else {
                        match n {
                            6 => "+000000".into(),
                            8 => "+00:00:00".into(),
                            4 => "+0000".into(),
                            5 => "+00:00".into(),
                            _ => "+00".into(),
                        }
                    };
                    (text, n + 1)
                })
            }
            b'.' | b',' if b.len() > i + 1 && (b[i + 1] == b'0' || b[i + 1] == b'9') => {
                let d = b[i + 1];
                let n = b[i + 1..].iter().take_while(|&&c| c == d).count();
                // Only a fraction when not followed by another digit.
                if b.get(i + 1 + n).is_some_and(u8::is_ascii_digit) {
                    None
                } else {
                    let digits = format!("{nanos:09}");
                    let mut frac = digits[..n.min(9)].to_string();
                    if d == b'9' {
                        while frac.ends_with('0') {
                            frac.pop();
                        }
                    }
                    let text = if frac.is_empty() {
                        String::new()
                    } else {
                        format!("{}{frac}", b[i] as char)
                    };
                    Some((text, n + 1))
                }
            }
            _ => None,
        };
        match tok {
            Some((text, n)) => {
                out.push_str(&text);
                i += n;
            }
            None => {
                let c = rest.chars().next().unwrap_or(' ');
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// `github.com/jehiah/go-strftime` `Format`: each known `%x` maps to a Go
/// layout; unknown directives are kept as written.
pub fn strftime(format: &str, t: OffsetDateTime) -> String {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let layout = match d {
            '%' => {
                out.push('%');
                continue;
            }
            'B' => "January",
            'b' => "Jan",
            'm' => "01",
            'A' => "Monday",
            'a' => "Mon",
            'd' => "02",
            'H' => "15",
            'I' => "03",
            'M' => "04",
            'S' => "05",
            'Y' => "2006",
            'y' => "06",
            'p' => "PM",
            'Z' => "MST",
            'z' => "-0700",
            'L' => ".000",
            other => {
                out.push('%');
                out.push(other);
                continue;
            }
        };
        out.push_str(&format_layout(layout, t));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints() {
        assert_eq!(parse_int("22"), Ok(22));
        assert_eq!(parse_int("-0x10"), Ok(-16));
        assert_eq!(parse_int("017"), Ok(15));
        assert_eq!(parse_int("0b101"), Ok(5));
        assert_eq!(parse_int("0o17"), Ok(15));
        assert_eq!(parse_int("1_000").ok(), None);
        assert_eq!(parse_int("0x_1_0"), Ok(16));
        assert!(parse_int("").is_err());
        assert!(parse_int("+").is_err());
        assert!(parse_int("1+2").is_err());
        assert!(parse_int("9223372036854775808").is_err());
        assert_eq!(parse_int("-9223372036854775808"), Ok(i64::MIN));
        assert!(parse_uint("-1").is_err());
        assert!(parse_uint("+1").is_err());
    }

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(s).map(|(n, d)| (n, d.as_nanos()));
        assert_eq!(d("1m30s"), Ok((false, 90_000_000_000)));
        assert_eq!(d("1.5h"), Ok((false, 5_400_000_000_000)));
        assert_eq!(d("500ms"), Ok((false, 500_000_000)));
        assert_eq!(d("-2s"), Ok((true, 2_000_000_000)));
        assert_eq!(d("0"), Ok((false, 0)));
        assert_eq!(d(".5s"), Ok((false, 500_000_000)));
        assert!(d("10").unwrap_err().contains("missing unit"));
        assert!(d("1d").unwrap_err().contains("unknown unit"));
        assert!(d("").is_err());
        assert!(d("s").is_err());
        assert!(d(".s").is_err());
        // Go has no negative zero: `-0` is zero, not negative (so a
        // boot_wait of "-0s" is Packer's zero, the 10 s default).
        assert_eq!(d("-0"), Ok((false, 0)));
        assert_eq!(d("-0s"), Ok((false, 0)));
        assert_eq!(d("+1.5s"), Ok((false, 1_500_000_000)));
        assert_eq!(d("1.s"), Ok((false, 1_000_000_000)));
        assert_eq!(d("1h2m3s4ms5us6ns"), Ok((false, 3_723_004_005_006)));
        assert_eq!(d("2\u{3bc}s"), Ok((false, 2_000)));
        assert_eq!(d("2\u{b5}s"), Ok((false, 2_000)));
        assert!(d("1m-3s").is_err());
        // The total must fit Go's int64 nanoseconds.
        assert!(d("9223372037s").is_err());
        assert!(d("9223372036s").is_ok());
    }

    #[test]
    fn floats() {
        assert_eq!(format_float_v(1.5), "1.5");
        assert_eq!(format_float_v(1000.0), "1000");
        assert_eq!(format_float_v(1e21), "1e+21");
        assert_eq!(format_float_v(1e6), "1e+06");
        assert_eq!(format_float_v(1234567.0), "1.234567e+06");
        assert_eq!(format_float_v(123456.0), "123456");
        assert_eq!(format_float_v(1e-5), "1e-05");
        assert_eq!(format_float_v(0.0001), "0.0001");
    }

    #[test]
    fn strings() {
        assert_eq!(replace("abcb", "b", "x", 1), "axcb");
        assert_eq!(replace("abcb", "b", "x", -1), "axcx");
        assert_eq!(replace("ab", "", "-", -1), "-a-b-");
        assert_eq!(replace("ab", "", "-", 2), "-a-b");
        assert_eq!(split("a,b", ","), vec!["a", "b"]);
        assert_eq!(split("", ","), vec![""]);
        assert_eq!(split("ab", ""), vec!["a", "b"]);
    }

    #[test]
    fn layouts() {
        // 2009-11-10 23:04:05 UTC, a Tuesday.
        let t = OffsetDateTime::from_unix_timestamp(1_257_894_245).unwrap();
        assert_eq!(
            format_layout("2006-01-02T15:04:05Z07:00", t),
            "2009-11-10T23:04:05Z"
        );
        assert_eq!(
            format_layout(
                "Mon Monday Jan January 1 2 _2 06 3 03 4 5 PM pm MST -0700 -07:00 002 .000 .999",
                t
            ),
            "Tue Tuesday Nov November 11 10 10 09 11 11 4 5 PM pm UTC +0000 +00:00 314 .000 "
        );
        assert_eq!(
            strftime("%Y%m%d %H:%M:%S %% %q %", t),
            "20091110 23:04:05 % %q %"
        );
    }
}
