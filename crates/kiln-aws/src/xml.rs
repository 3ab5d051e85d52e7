//! Small helpers over roxmltree for AWS's XML answers (namespaces are
//! ignored: names are matched by their local part).
use roxmltree::Node;
use std::collections::BTreeMap;

pub type N<'a, 'i> = Node<'a, 'i>;

/// The first child element named `name`.
pub fn child<'a, 'i>(n: N<'a, 'i>, name: &str) -> Option<N<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The text of the child element `name` (`None` when absent or empty).
pub fn text(n: N<'_, '_>, name: &str) -> Option<String> {
    child(n, name)
        .and_then(|c| c.text())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn text_or(n: N<'_, '_>, name: &str) -> String {
    text(n, name).unwrap_or_default()
}

pub fn bool_of(n: N<'_, '_>, name: &str) -> Option<bool> {
    text(n, name).map(|s| s == "true")
}

pub fn u64_of(n: N<'_, '_>, name: &str) -> Option<u64> {
    text(n, name).and_then(|s| s.parse().ok())
}

/// The `<item>` elements of the set `name` (EC2's `fooSet/item` lists).
pub fn items<'a, 'i>(n: N<'a, 'i>, name: &str) -> Vec<N<'a, 'i>> {
    match child(n, name) {
        Some(s) => s
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == "item")
            .collect(),
        None => Vec::new(),
    }
}

/// EC2's `tagSet` as a map.
pub fn tags(n: N<'_, '_>) -> BTreeMap<String, String> {
    items(n, "tagSet")
        .into_iter()
        .filter_map(|t| Some((text(t, "key")?, text(t, "value").unwrap_or_default())))
        .collect()
}

/// The document's root element.
pub fn root<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> N<'a, 'i> {
    doc.root_element()
}
