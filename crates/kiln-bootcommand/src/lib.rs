//! Packer 1.6.6's boot command language (`boot_command`), and typing it
//! into a QEMU machine.
//!
//! A boot command is what a person would type at an installer's boot
//! prompt: text, named keys in angle brackets, waits. The strings of
//! `boot_command` are joined, rendered as a template (`{{ .HTTPIP }}`,
//! `{{ .HTTPPort }}`, `{{ .Name }}`, user variables), parsed, and typed.
//!
//! # The language
//!
//! | written | typed |
//! | --- | --- |
//! | any printable ASCII character | that character, with the key a US keyboard has for it (Shift held for upper-case letters and ``~!@#$%^&*()_+{}\|:"<>?``) |
//! | `<enter>` `<return>` | Enter |
//! | `<esc>` `<tab>` `<bs>` (Backspace) `<del>` `<spacebar>` `<insert>` `<home>` `<end>` `<pageUp>` `<pageDown>` | those keys |
//! | `<up>` `<down>` `<left>` `<right>` | the arrow keys |
//! | `<f1>` .. `<f12>` | the function keys |
//! | `<menu>` | the Menu key (see below) |
//! | `<leftAlt>` `<rightAlt>` `<leftCtrl>` `<rightCtrl>` `<leftShift>` `<rightShift>` `<leftSuper>` `<rightSuper>` | the modifier pressed and released |
//! | `<nameOn>` / `<nameOff>` | a named key pressed and held / released: `<leftCtrlOn>c<leftCtrlOff>` is Ctrl+C |
//! | `<xOn>` / `<xOff>` | a character's key held / released (`<aOn>`) |
//! | `<wait>` `<wait5>` `<wait10>` | a pause of 1, 5, 10 s; `<waitN>`: N seconds |
//! | `<waitD>` | a pause of D, a Go duration: `<wait300ms>`, `<wait1.5s>`, `<wait1m30s>` (units `ns` `us` `µs` `ms` `s` `m` `h`) |
//!
//! Case, as Packer: key names and `On`/`Off` in any case (`<ENTER>`,
//! `<leftaltON>`); `wait` and the duration units in lower case only.
//!
//! # How kiln types: QMP, not VNC
//!
//! Packer types over VNC: it connects to QEMU's VNC server and sends X11
//! keysyms, which QEMU turns back into key codes with its keymap. kiln
//! sends key codes directly, with QMP's `input-send-event` (QAPI `qcode`
//! keys, one key-down or key-up event per command), on a QMP socket of the
//! machine ([`qmp::QmpKeySink`]). Why:
//!
//! - it is what a keyboard sends: no keymap in between. Over VNC, QEMU's
//!   `lock-key-sync` presses Caps Lock behind the sender's back whenever a
//!   letter keysym's case disagrees with Shift, so Packer's
//!   `<leftShiftOn>held<leftShiftOff>` types `held` (measured in the qemu
//!   builder's `tests/boot_command.rs`, and with a bare VNC client:
//!   `lock-key-sync=off` gives `HELD`); kiln types `HELD`, as a person
//!   holding Shift would. Characters QEMU's keymap lacks (`é`, a line break
//!   in the text) are dropped by QEMU with a warning on its standard error;
//!   kiln refuses them at validate time instead.
//! - nothing to negotiate: no RFB handshake, no VNC password (QEMU's
//!   `vnc_use_password` needs one set through QMP first anyway), no VNC
//!   port needed at all, so a boot command also works with
//!   `disable_vnc: true` (Packer refuses that combination).
//! - the builder already talks QMP to the machine.
//!
//! VNC stays what it is for users: the qemu builder still starts QEMU's VNC
//! server as its `vnc_*` keys say, and a user may watch the install with a
//! VNC viewer while kiln types (QEMU accepts input from both; kiln's keys
//! do not go through VNC). The qemu builder's guest test connects to the
//! VNC display while kiln types to check that it answers.
//!
//! Timing is Packer's VNC driver's: after every key event (press or
//! release) a pause of `boot_key_interval`, else `PACKER_KEY_INTERVAL`,
//! else 100 ms ([`typist::key_interval`]); `<wait...>` pauses on top.
//! Typing stops at once when the build is cancelled (the caller passes the
//! build's cancellation token).
//!
//! # Differences from Packer 1.6.6
//!
//! - Malformed expressions are errors, reported at validate time with their
//!   `file:line:col` ([`template::decode`]), where Packer types them as
//!   characters: an unknown key (`<entr>`, `<foo>`), an upper-case wait
//!   (`<WAIT>`), a malformed wait (`<wait5S>`, `<wait05>`, `<wait 5s>`), a
//!   key or wait with no closing `>` (`<enter` at the end). A `<` that
//!   cannot be meant as a key (`a < b`, `cat <<EOF`, `<>`, a `<` at the end)
//!   is typed, as in Packer.
//! - Characters a US keyboard cannot type (non-ASCII, tab and line-break
//!   characters in the text) are errors; Packer sends them and QEMU drops
//!   them.
//! - `<menu>`: listed in Packer's documentation but missing from its
//!   grammar, so Packer 1.6.6 types the six characters `<menu>`; kiln
//!   presses the Menu key.
//! - Letters typed while a Shift key is held come out in upper case (see
//!   above).
//! - Template actions are looked into only once rendered: an expression an
//!   action cuts (`<wait{{user `t`}}>`) is checked at run time, before any
//!   key is typed (the whole command is parsed first).
//! - `boot_command` given as one string is split at commas, as Packer's
//!   decoder does (the commas are not typed); kiln warns.
//!
//! # Modules
//!
//! - [`mod@parse`]: the grammar, with byte spans for every command and error.
//! - [`keys`]: named keys and the US layout, as QEMU `qcode`s.
//! - [`typist`]: commands to key events ([`typist::steps`]), the
//!   [`KeySink`] trait, the [`Typist`] with Packer's timing.
//! - [`qmp`]: [`QmpKeySink`], a small QMP client that presses keys.
//! - [`template`]: `boot_command` in a template: [`template::decode`] (for a
//!   builder's configuration decoder), [`BootCommand::render`] (at run
//!   time), [`template::boot_wait`] (Packer's `boot_wait` rule).
//!
//! # In a builder
//!
//! Decode `boot_command` with [`template::decode`] in the configuration
//! decoder (it records every problem with its position); at run time, after
//! QEMU started and `boot_wait` passed, render the command with the
//! run-time [`Values`], connect a [`QmpKeySink`] to a QMP socket kept for
//! typing, and type with the build's cancellation token:
//!
//! ```no_run
//! use kiln_bootcommand::{BootCommand, QmpKeySink, Typist, Values};
//! use std::time::Duration;
//! # async fn run(
//! #     bc: &BootCommand,
//! #     interp: &kiln_template::Context,
//! #     cancel: &tokio_util::sync::CancellationToken,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! let values = Values { http_ip: "10.0.2.2".into(), http_port: 8080, name: "packer-qemu".into() };
//! let steps = bc.render(interp, &values)?;
//! let mut keys = QmpKeySink::connect("work/qmp-keys.sock".as_ref(), Duration::from_secs(10)).await?;
//! Typist { key_interval: Duration::from_millis(100) }
//!     .type_steps(&steps, &mut keys, cancel)
//!     .await?;
//! # Ok(())
//! # }
//! ```
pub mod keys;
pub mod parse;
pub mod qmp;
pub mod template;
pub mod typist;

pub use keys::{Key, Special};
pub use parse::{parse, Command, ErrorKind, KeyAction, ParseError, Spanned};
pub use qmp::{QmpError, QmpKeySink};
pub use template::{BootCommand, Values};
pub use typist::{KeySink, Step, TypeError, Typist};
