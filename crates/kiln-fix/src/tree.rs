//! Small helpers for editing a [`Node`] tree in place while keeping the
//! order of keys and the positions of what was read from the file.
use kiln_template::json::{Key, Node, Value};
use kiln_template::Pos;

pub(crate) type Entries = Vec<(Key, Node)>;

pub(crate) fn entries(n: &Node) -> Option<&Entries> {
    match &n.value {
        Value::Object(e) => Some(e),
        _ => None,
    }
}

pub(crate) fn entries_mut(n: &mut Node) -> Option<&mut Entries> {
    match &mut n.value {
        Value::Object(e) => Some(e),
        _ => None,
    }
}

pub(crate) fn index(e: &Entries, key: &str) -> Option<usize> {
    e.iter().position(|(k, _)| k.name == key)
}

pub(crate) fn get<'a>(e: &'a Entries, key: &str) -> Option<&'a Node> {
    e.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
}

pub(crate) fn get_mut<'a>(e: &'a mut Entries, key: &str) -> Option<&'a mut Node> {
    e.iter_mut().find(|(k, _)| k.name == key).map(|(_, v)| v)
}

pub(crate) fn has(e: &Entries, key: &str) -> bool {
    index(e, key).is_some()
}

pub(crate) fn str_of(n: &Node) -> Option<&str> {
    match &n.value {
        Value::String(s) => Some(s),
        _ => None,
    }
}

pub(crate) fn get_str<'a>(e: &'a Entries, key: &str) -> Option<&'a str> {
    get(e, key).and_then(str_of)
}

pub(crate) fn bool_of(n: &Node) -> Option<bool> {
    match n.value {
        Value::Bool(b) => Some(b),
        _ => None,
    }
}

/// Remove `key`, returning where it was, its key and its value.
pub(crate) fn take(e: &mut Entries, key: &str) -> Option<(usize, Key, Node)> {
    let i = index(e, key)?;
    let (k, v) = e.remove(i);
    Some((i, k, v))
}

/// Where a new key goes: the place (and key position) of one removed, or
/// the end of the object.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    pub index: usize,
    pub key_pos: Pos,
}

impl Slot {
    pub fn of(i: usize, k: &Key) -> Slot {
        Slot {
            index: i,
            key_pos: k.pos,
        }
    }
}

/// Set `key` to `value`: in place when the key exists (its position in the
/// object and in the file are kept), otherwise at `slot` (or at the end).
pub(crate) fn put(e: &mut Entries, key: &str, value: Node, slot: Option<Slot>) {
    if let Some(v) = get_mut(e, key) {
        *v = value;
        return;
    }
    let (i, pos) = match slot {
        Some(s) => (s.index.min(e.len()), s.key_pos),
        None => (e.len(), Pos::default()),
    };
    e.insert(
        i,
        (
            Key {
                name: key.to_string(),
                pos,
            },
            value,
        ),
    );
}

/// Rename `old` to `new` keeping the value and the place, unless `new`
/// exists: then `new` gets the value and `old` goes. Returns whether
/// anything changed.
pub(crate) fn rename(e: &mut Entries, old: &str, new: &str) -> bool {
    let Some((i, k, v)) = take(e, old) else {
        return false;
    };
    put(e, new, v, Some(Slot::of(i, &k)));
    true
}

/// A value made by a fixer, placed (for positions) where `like` was.
pub(crate) fn made(value: Value, like: &Node) -> Node {
    Node {
        value,
        pos: like.pos,
        source: like.source.clone(),
    }
}

pub(crate) fn string(s: impl Into<String>, like: &Node) -> Node {
    made(Value::String(s.into()), like)
}

/// A container made by a fixer: no position of its own (so it is never
/// taken for an object of the file).
pub(crate) fn fresh(value: Value, like: &Node) -> Node {
    Node {
        value,
        pos: Pos::default(),
        source: like.source.clone(),
    }
}
