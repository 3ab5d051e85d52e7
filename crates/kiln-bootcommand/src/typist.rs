//! From commands to key events, and typing them with Packer's timing.
use crate::keys::{us_key, Key};
use crate::parse::{Command, KeyAction, Spanned};
use async_trait::async_trait;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Packer's default pause after every key event (press or release) when
/// it types over VNC (`PackerKeyDefault`): 100 ms.
pub const DEFAULT_KEY_INTERVAL: Duration = Duration::from_millis(100);

/// The environment variable Packer reads for the default key interval (a
/// Go duration); `boot_key_interval` overrides it.
pub const KEY_INTERVAL_ENV: &str = "PACKER_KEY_INTERVAL";

/// The pause after each key event, chosen as Packer's VNC driver does:
/// `boot_key_interval` when positive, else `PACKER_KEY_INTERVAL` when it
/// is a valid Go duration, else 100 ms.
pub fn key_interval(boot_key_interval: Option<Duration>, env: Option<&str>) -> Duration {
    if let Some(d) = boot_key_interval.filter(|d| !d.is_zero()) {
        return d;
    }
    env.and_then(parse_env_duration)
        .unwrap_or(DEFAULT_KEY_INTERVAL)
}

/// A Go duration as `time.ParseDuration` reads it (sign, several
/// components, `0`); a negative one counts as zero (Packer then sleeps
/// for nothing).
fn parse_env_duration(s: &str) -> Option<Duration> {
    let (neg, body) = match s.strip_prefix(['-', '+']) {
        Some(b) => (s.starts_with('-'), b),
        None => (false, s),
    };
    if body == "0" {
        return Some(Duration::ZERO);
    }
    let d = crate::parse::go_parse_duration(body)?;
    Some(if neg { Duration::ZERO } else { d })
}

/// One thing the typist does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A key goes down (`true`) or up.
    Key { key: Key, down: bool },
    /// A pause (`<wait...>`).
    Wait(Duration),
}

/// The key events and waits of parsed commands, in Packer's order: a
/// shifted character is Shift down, key down, key up, Shift up; its `On`
/// form is Shift down, key down; its `Off` form Shift up, key up.
/// Characters were checked by the parser (it rejects untypable ones); one
/// that slipped through is skipped.
pub fn steps(commands: &[Spanned]) -> Vec<Step> {
    let mut out = Vec::new();
    let key = |key: Key, down: bool| Step::Key { key, down };
    for c in commands {
        match &c.command {
            Command::Wait(d) => out.push(Step::Wait(*d)),
            Command::Special { key: k, action } => {
                let k = k.key();
                match action {
                    KeyAction::Press => out.extend([key(k, true), key(k, false)]),
                    KeyAction::On => out.push(key(k, true)),
                    KeyAction::Off => out.push(key(k, false)),
                }
            }
            Command::Char { ch, action } => {
                let Some((k, shift)) = us_key(*ch) else {
                    continue;
                };
                let s = Key::SHIFT;
                match (action, shift) {
                    (KeyAction::Press, false) => out.extend([key(k, true), key(k, false)]),
                    (KeyAction::Press, true) => {
                        out.extend([key(s, true), key(k, true), key(k, false), key(s, false)])
                    }
                    (KeyAction::On, false) => out.push(key(k, true)),
                    (KeyAction::On, true) => out.extend([key(s, true), key(k, true)]),
                    (KeyAction::Off, false) => out.push(key(k, false)),
                    (KeyAction::Off, true) => out.extend([key(s, false), key(k, false)]),
                }
            }
        }
    }
    out
}

/// How long typing `steps` takes: one interval after each key event, and
/// the waits.
pub fn duration(steps: &[Step], interval: Duration) -> Duration {
    steps
        .iter()
        .map(|s| match s {
            Step::Key { .. } => interval,
            Step::Wait(d) => *d,
        })
        .sum()
}

/// The steps as text, for reading: characters as typed (Shift applied),
/// other keys as `[qcode]` when pressed, waits as `[wait 1.5s]`. Key
/// releases and Shift itself are not shown. (A typed password shows too:
/// keep this out of logs.)
pub fn describe(steps: &[Step]) -> String {
    let mut out = String::new();
    let mut shift = false;
    for s in steps {
        match *s {
            Step::Wait(d) => out.push_str(&format!("[wait {d:?}]")),
            Step::Key { key, down } if key == Key::SHIFT => shift = down,
            Step::Key { down: false, .. } => {}
            Step::Key { key, down: true } => {
                let ch = (0x20u8..0x7f)
                    .map(char::from)
                    .find(|&c| us_key(c) == Some((key, shift)));
                match ch {
                    Some(c) => out.push(c),
                    None => out.push_str(&format!("[{key}]")),
                }
            }
        }
    }
    out
}

/// Where key events go: QEMU's QMP socket ([`crate::qmp::QmpKeySink`]), or
/// anything else that can press keys.
#[async_trait]
pub trait KeySink: Send {
    /// Press (`down`) or release a key.
    async fn key(
        &mut self,
        key: Key,
        down: bool,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Why typing stopped.
#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    #[error("typing the boot command was cancelled")]
    Cancelled,
    #[error("typing the boot command: {} {key}: {source}", if *.down { "pressing" } else { "releasing" })]
    Sink {
        key: Key,
        down: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Types steps into a [`KeySink`]: after each key event it pauses
/// `key_interval` (as Packer's VNC driver does after each of its key
/// events), and it honours the waits. Stops at once when `cancel` fires.
#[derive(Debug, Clone, Copy)]
pub struct Typist {
    pub key_interval: Duration,
}

impl Default for Typist {
    fn default() -> Self {
        Typist {
            key_interval: DEFAULT_KEY_INTERVAL,
        }
    }
}

impl Typist {
    pub async fn type_steps(
        &self,
        steps: &[Step],
        sink: &mut dyn KeySink,
        cancel: &CancellationToken,
    ) -> Result<(), TypeError> {
        for s in steps {
            if cancel.is_cancelled() {
                return Err(TypeError::Cancelled);
            }
            let pause = match *s {
                Step::Key { key, down } => {
                    tokio::select! {
                        r = sink.key(key, down) => r.map_err(|source| TypeError::Sink { key, down, source })?,
                        _ = cancel.cancelled() => return Err(TypeError::Cancelled),
                    }
                    self.key_interval
                }
                Step::Wait(d) => d,
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => return Err(TypeError::Cancelled),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;
    use std::sync::{Arc, Mutex};

    fn events(s: &str) -> Vec<String> {
        steps(&parse(s).unwrap())
            .iter()
            .map(|s| match s {
                Step::Key { key, down } => format!("{}{key}", if *down { "+" } else { "-" }),
                Step::Wait(d) => format!("wait{}ms", d.as_millis()),
            })
            .collect()
    }

    #[test]
    fn packers_event_order() {
        assert_eq!(events("a"), ["+a", "-a"]);
        assert_eq!(events("A"), ["+shift", "+a", "-a", "-shift"]);
        assert_eq!(events("<AOn><AOff>"), ["+shift", "+a", "-shift", "-a"]);
        assert_eq!(events("<aOn>"), ["+a"]);
        assert_eq!(
            events("<leftCtrlOn>c<leftCtrlOff>"),
            ["+ctrl", "+c", "-c", "-ctrl"]
        );
        assert_eq!(
            events("<rightAlt><wait300ms>:"),
            [
                "+alt_r",
                "-alt_r",
                "wait300ms",
                "+shift",
                "+semicolon",
                "-semicolon",
                "-shift"
            ]
        );
        assert_eq!(events("<enter><return>"), ["+ret", "-ret", "+ret", "-ret"]);
    }

    #[test]
    fn interval_as_packers_vnc_driver() {
        let ms = Duration::from_millis;
        assert_eq!(key_interval(None, None), ms(100));
        assert_eq!(key_interval(Some(ms(0)), Some("10ms")), ms(10));
        assert_eq!(key_interval(Some(ms(5)), Some("10ms")), ms(5));
        assert_eq!(key_interval(None, Some("1.5s")), ms(1500));
        assert_eq!(key_interval(None, Some("0")), ms(0));
        assert_eq!(key_interval(None, Some("-1s")), ms(0));
        assert_eq!(key_interval(None, Some("fast")), ms(100));
        assert_eq!(key_interval(None, Some("10")), ms(100));
        assert_eq!(key_interval(None, Some("")), ms(100));
    }

    #[derive(Default, Clone)]
    struct Recorder(Arc<Mutex<Vec<(tokio::time::Instant, String)>>>);

    #[async_trait]
    impl KeySink for Recorder {
        async fn key(
            &mut self,
            key: Key,
            down: bool,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            if key.qcode() == "x" {
                return Err("QEMU said no".into());
            }
            self.0.lock().unwrap().push((
                tokio::time::Instant::now(),
                format!("{}{key}", if down { "+" } else { "-" }),
            ));
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_after_every_event_and_honours_waits() {
        let steps = steps(&parse("ab<wait2s>c").unwrap());
        let t0 = tokio::time::Instant::now();
        let mut r = Recorder::default();
        let typist = Typist {
            key_interval: Duration::from_millis(100),
        };
        typist
            .type_steps(&steps, &mut r, &CancellationToken::new())
            .await
            .unwrap();
        let got: Vec<(u128, String)> =
            r.0.lock()
                .unwrap()
                .iter()
                .map(|(t, k)| ((*t - t0).as_millis(), k.clone()))
                .collect();
        let want: Vec<(u128, String)> = [
            (0, "+a"),
            (100, "-a"),
            (200, "+b"),
            (300, "-b"),
            (2400, "+c"),
            (2500, "-c"),
        ]
        .iter()
        .map(|(t, k)| (*t, k.to_string()))
        .collect();
        assert_eq!(got, want);
        assert_eq!(
            duration(&steps, Duration::from_millis(100)),
            Duration::from_millis(2600)
        );
        assert_eq!(t0.elapsed(), Duration::from_millis(2600));
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_a_wait_at_once() {
        let steps = steps(&parse("a<wait10m>b").unwrap());
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            c2.cancel();
        });
        let t0 = tokio::time::Instant::now();
        let mut r = Recorder::default();
        let e = Typist::default()
            .type_steps(&steps, &mut r, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(e, TypeError::Cancelled));
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        // `b` never went down.
        assert_eq!(r.0.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_error_names_the_key() {
        let steps = steps(&parse("ax").unwrap());
        let e = Typist::default()
            .type_steps(&steps, &mut Recorder::default(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "typing the boot command: pressing x: QEMU said no"
        );
    }
}
