//! Keys: the named keys of the language, and the keys of a US PC keyboard
//! that type each printable ASCII character, as QEMU names them (QAPI
//! `QKeyCode`, the `qcode` of `input-send-event` and `send-key`).

/// A physical key, named by its QEMU `qcode` (`"a"`, `"shift"`, `"ret"`,
/// `"bracket_left"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub &'static str);

impl Key {
    pub const SHIFT: Key = Key("shift");
    /// The qcode QEMU knows this key by.
    pub fn qcode(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A named key of the boot command language (`<enter>`, `<leftAltOn>`,
/// ...), without its `On`/`Off` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Special {
    Bs,
    Del,
    Enter,
    Return,
    Esc,
    Tab,
    /// `<f1>` .. `<f12>`.
    F(u8),
    Up,
    Down,
    Left,
    Right,
    Spacebar,
    Insert,
    Home,
    End,
    PageUp,
    PageDown,
    /// `<menu>`: documented by Packer 1.6.6 but missing from its grammar
    /// (it types the six characters `<menu>`); kiln presses the Menu key.
    Menu,
    LeftAlt,
    RightAlt,
    LeftCtrl,
    RightCtrl,
    LeftShift,
    RightShift,
    LeftSuper,
    RightSuper,
}

/// Every named key as the language spells it (matched case-insensitively).
pub const SPECIALS: &[(&str, Special)] = &[
    ("bs", Special::Bs),
    ("del", Special::Del),
    ("enter", Special::Enter),
    ("return", Special::Return),
    ("esc", Special::Esc),
    ("tab", Special::Tab),
    ("f1", Special::F(1)),
    ("f2", Special::F(2)),
    ("f3", Special::F(3)),
    ("f4", Special::F(4)),
    ("f5", Special::F(5)),
    ("f6", Special::F(6)),
    ("f7", Special::F(7)),
    ("f8", Special::F(8)),
    ("f9", Special::F(9)),
    ("f10", Special::F(10)),
    ("f11", Special::F(11)),
    ("f12", Special::F(12)),
    ("up", Special::Up),
    ("down", Special::Down),
    ("left", Special::Left),
    ("right", Special::Right),
    ("spacebar", Special::Spacebar),
    ("insert", Special::Insert),
    ("home", Special::Home),
    ("end", Special::End),
    ("pageUp", Special::PageUp),
    ("pageDown", Special::PageDown),
    ("menu", Special::Menu),
    ("leftAlt", Special::LeftAlt),
    ("rightAlt", Special::RightAlt),
    ("leftCtrl", Special::LeftCtrl),
    ("rightCtrl", Special::RightCtrl),
    ("leftShift", Special::LeftShift),
    ("rightShift", Special::RightShift),
    ("leftSuper", Special::LeftSuper),
    ("rightSuper", Special::RightSuper),
];

impl Special {
    /// The name as documented (`pageUp`, `leftAlt`, `f10`).
    pub fn name(self) -> &'static str {
        SPECIALS
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// The longest key name that `text` starts with, case-insensitively,
    /// and its length in bytes (key names are ASCII).
    pub fn prefix_of(text: &str) -> Option<(Special, usize)> {
        SPECIALS
            .iter()
            .filter(|(n, _)| {
                text.len() >= n.len()
                    && text.is_char_boundary(n.len())
                    && text[..n.len()].eq_ignore_ascii_case(n)
            })
            .max_by_key(|(n, _)| n.len())
            .map(|(n, s)| (*s, n.len()))
    }

    /// The key it presses. Modifiers are the left or right one as named;
    /// `<leftSuper>`/`<rightSuper>` are the "Windows" keys (`meta_l`,
    /// `meta_r`), as Packer's VNC keysyms Super_L/Super_R reach QEMU.
    pub fn key(self) -> Key {
        Key(match self {
            Special::Bs => "backspace",
            Special::Del => "delete",
            Special::Enter | Special::Return => "ret",
            Special::Esc => "esc",
            Special::Tab => "tab",
            Special::F(n) => match n {
                1 => "f1",
                2 => "f2",
                3 => "f3",
                4 => "f4",
                5 => "f5",
                6 => "f6",
                7 => "f7",
                8 => "f8",
                9 => "f9",
                10 => "f10",
                11 => "f11",
                _ => "f12",
            },
            Special::Up => "up",
            Special::Down => "down",
            Special::Left => "left",
            Special::Right => "right",
            Special::Spacebar => "spc",
            Special::Insert => "insert",
            Special::Home => "home",
            Special::End => "end",
            Special::PageUp => "pgup",
            Special::PageDown => "pgdn",
            Special::Menu => "menu",
            Special::LeftAlt => "alt",
            Special::RightAlt => "alt_r",
            Special::LeftCtrl => "ctrl",
            Special::RightCtrl => "ctrl_r",
            Special::LeftShift => "shift",
            Special::RightShift => "shift_r",
            Special::LeftSuper => "meta_l",
            Special::RightSuper => "meta_r",
        })
    }
}

/// The key that types `c` on a US keyboard, and whether Shift must be
/// held; `None` for characters a US keyboard has no key for (non-ASCII,
/// control characters). The shifted set is Packer's: upper-case letters
/// and ``~!@#$%^&*()_+{}|:"<>?``.
pub fn us_key(c: char) -> Option<(Key, bool)> {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    const LETTERS: [&str; 26] = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
        "s", "t", "u", "v", "w", "x", "y", "z",
    ];
    let k = |q: &'static str, shift: bool| Some((Key(q), shift));
    match c {
        'a'..='z' => k(LETTERS[(c as u8 - b'a') as usize], false),
        'A'..='Z' => k(LETTERS[(c as u8 - b'A') as usize], true),
        '0'..='9' => k(DIGITS[(c as u8 - b'0') as usize], false),
        ' ' => k("spc", false),
        '!' => k("1", true),
        '@' => k("2", true),
        '#' => k("3", true),
        '$' => k("4", true),
        '%' => k("5", true),
        '^' => k("6", true),
        '&' => k("7", true),
        '*' => k("8", true),
        '(' => k("9", true),
        ')' => k("0", true),
        '`' => k("grave_accent", false),
        '~' => k("grave_accent", true),
        '-' => k("minus", false),
        '_' => k("minus", true),
        '=' => k("equal", false),
        '+' => k("equal", true),
        '[' => k("bracket_left", false),
        '{' => k("bracket_left", true),
        ']' => k("bracket_right", false),
        '}' => k("bracket_right", true),
        '\\' => k("backslash", false),
        '|' => k("backslash", true),
        ';' => k("semicolon", false),
        ':' => k("semicolon", true),
        '\'' => k("apostrophe", false),
        '"' => k("apostrophe", true),
        ',' => k("comma", false),
        '<' => k("comma", true),
        '.' => k("dot", false),
        '>' => k("dot", true),
        '/' => k("slash", false),
        '?' => k("slash", true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_printable_ascii_character_has_a_key_and_packers_shift_rule() {
        // Packer's driver.go: shift for unicode.IsUpper or one of these.
        let shifted = "~!@#$%^&*()_+{}|:\"<>?";
        let mut seen = std::collections::HashSet::new();
        for b in 0x20u8..0x7f {
            let c = b as char;
            let (key, shift) = us_key(c).unwrap_or_else(|| panic!("no key for {c:?}"));
            assert_eq!(
                shift,
                c.is_ascii_uppercase() || shifted.contains(c),
                "shift for {c:?}"
            );
            // One character per (key, shift): no two characters collide.
            assert!(seen.insert((key, shift)), "{c:?} collides");
        }
        assert_eq!(seen.len(), 95);
        for c in ['\n', '\t', '\r', '\u{7f}', 'é', '界'] {
            assert_eq!(us_key(c), None, "{c:?}");
        }
    }

    #[test]
    fn names_match_longest_first_case_insensitively() {
        assert_eq!(Special::prefix_of("f10>"), Some((Special::F(10), 3)));
        assert_eq!(Special::prefix_of("f1>"), Some((Special::F(1), 2)));
        assert_eq!(
            Special::prefix_of("LEFTALTON>"),
            Some((Special::LeftAlt, 7))
        );
        assert_eq!(Special::prefix_of("leftOn>"), Some((Special::Left, 4)));
        assert_eq!(Special::prefix_of("pageup>"), Some((Special::PageUp, 6)));
        assert_eq!(Special::prefix_of("endoff"), Some((Special::End, 3)));
        assert_eq!(Special::prefix_of("foo"), None);
        assert_eq!(Special::prefix_of("é"), None);
        assert_eq!(Special::PageDown.name(), "pageDown");
        assert_eq!(Special::F(12).key(), Key("f12"));
        assert_eq!(Special::Return.key(), Special::Enter.key());
    }
}
